"""Package hygiene: pyproject metadata (dependencies, extras, script, single-source version) and the spar-jax CLI."""

import os
import pathlib
import re
import subprocess
import sys
import tomllib

import spar_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pyproject_declares_extras_script_and_reads_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta = project["project"]
    assert meta["dynamic"] == ["version"] and "version" not in meta
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "spar_jax.__version__"}
    assert meta["scripts"] == {"spar-jax": "spar_jax.cli:main"}
    assert {"test", "torch", "tfds", "wandb"} <= set(meta["optional-dependencies"])
    names = {d.split(">")[0].split("=")[0].split("[")[0] for d in meta["dependencies"]}
    assert {"jax", "flax", "transformers", "huggingface_hub", "pyarrow", "pyyaml", "absl-py"} <= names
    assert (ROOT / "spar_jax" / "py.typed").exists() and project["tool"]["setuptools"]["package-data"]["spar_jax"] == [
        "py.typed"
    ]
    assert f"## {spar_jax.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "spar_jax.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_run_is_the_main_entry_point():
    via_cli = _cli("run", "--config=configs/demo.py", "--print_config", "--config.seed=3")
    assert via_cli.returncode == 0, via_cli.stderr
    assert re.search(r"^  seed += 3  # seed every stage derives its own seed from$", via_cli.stdout, re.M)


def test_cli_rejects_an_unknown_command():
    result = _cli("dance")
    assert result.returncode == 2 and result.stderr.startswith("usage: spar-jax run|plan|eval [ARGS]")
