"""Readable configs: every key described, --print_config, and reruns from a past run's config.json / YAML."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from spar_jax import config as C
from spar_jax import config_io

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
CONFIGS = [p for p in CONFIGS if "def get_config(" in p.read_text()]  # configs/paper.py is shared settings


def _main(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "spar_jax.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _load_py(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_every_key_and_section_has_a_description():
    docs = C.descriptions()
    flat = C._flatten(C.default_config())
    assert set(flat) <= set(docs)
    assert [k for k, d in docs.items() if not d.strip()] == []
    assert docs["search.branch"] == "children per expanded node"
    assert docs["ifeval.limit"] == "the first N prompts only (0 = all)"  # from the settings dataclass's docstring
    assert docs["followbench.judge.k"] == "votes per item (majority decides)"  # a nested dataclass section


def test_field_docs_prefer_field_metadata():
    import dataclasses

    @dataclasses.dataclass
    class Settings:
        """``a``: from the docstring. ``b``: also from the docstring."""

        a: int = 0
        b: int = dataclasses.field(default=1, metadata={"help": "from the metadata"})

    assert C.field_docs(Settings) == {"a": "from the docstring", "b": "from the metadata"}


def test_print_config_lists_every_key_with_value_and_description():
    result = _main("--config=configs/demo.py", "--print_config", "--config.search.branch=5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    docs = C.descriptions()
    flat = C._flatten(_load_py(ROOT / "configs" / "demo.py"))
    assert len(flat) == len(C._flatten(C.default_config()))
    for key, value in flat.items():
        if key == "search.branch":
            value = 5
        hits = [ln for ln in lines if ln.strip().startswith(f"{key} ")]
        assert len(hits) == 1, key
        assert f"= {config_io._fmt(value)}  # {docs[key]}" in hits[0], hits[0]  # lists print as tuples
    assert "[search] Stage 2: tree-search refinement of failing responses" in lines
    assert lines.index("[actor] the actor (policy) model") < lines.index(
        "[search] Stage 2: tree-search refinement of failing responses"
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_written_config_json_reads_back_to_the_same_settings(tmp_path, path):
    raw = C.parse(_load_py(path)).raw
    target = tmp_path / "config.json"
    target.write_text(json.dumps(raw))
    assert C.parse(config_io.load(str(target))).raw == raw
    ytarget = tmp_path / "config.yaml"
    ytarget.write_text(yaml.safe_dump(json.loads(json.dumps(raw))))
    assert C.parse(config_io.load(str(ytarget))).raw == raw


def test_rerun_from_config_json_on_the_command_line(tmp_path):
    raw = C.parse(_load_py(ROOT / "configs" / "demo.py")).raw
    (tmp_path / "config.json").write_text(json.dumps(raw, indent=2))
    from_py = _main("--config=configs/demo.py", "--print_config")
    from_json = _main(f"--config={tmp_path}/config.json", "--print_config")
    assert from_json.returncode == 0, from_json.stderr
    assert from_json.stdout == from_py.stdout
    overridden = _main(f"--config={tmp_path}/config.json", "--print_config", "--config.mining.k_votes=7")
    assert "mining.k_votes              = 7" in overridden.stdout or "mining.k_votes = 7" in overridden.stdout.replace(
        "  ", " "
    )


@pytest.mark.parametrize("content,message", [
    ('{"search": {"brnch": 3}}', "config.json: unknown config key 'search.brnch'"),
    ('{"search": 3}', "config.json: config key 'search' must be a section"),
    ('{"search": {"branch": "three"}}', "config.json: config key 'search.branch'"),
    ('{"search": ', "config.json: line 1: not valid JSON"),
])  # fmt: skip
def test_a_bad_config_json_fails_in_one_line_naming_the_key(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_io.load(str(tmp_path / "config.json"))
    result = _main(f"--config={tmp_path}/config.json", "--print_config")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
