"""Config schema: every shipped config parses; unknown keys and bad values fail naming the key."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from spar_jax import config as C

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
CONFIGS = [p for p in CONFIGS if "def get_config(" in p.read_text()]  # configs/paper.py is shared settings


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_parse(path):
    cfg = C.parse(_load(path))
    assert cfg.stages and all(s in C.STAGES for s in cfg.stages)


def test_defaults_are_the_paper_values():
    cfg = C.parse(C.default_config())
    assert (cfg.mining.n_samples, cfg.mining.k_votes) == (5, 5)
    assert (cfg.mining.actor_sampling.temperature, cfg.mining.actor_sampling.top_p) == (0.9, 0.9)
    assert (cfg.mining.judge_sampling.temperature, cfg.mining.judge_sampling.top_p) == (0.7, 1.0)
    s = cfg.search
    assert (s.strategy, s.branch, s.keep, s.max_depth, s.threshold, s.k_votes, s.max_rejudges) == (
        "bfs",
        3,
        2,
        3,
        0.5,
        5,
        3,
    )
    assert (cfg.dpo["learning_rate"], cfg.dpo["beta"], cfg.dpo["sft_weight"], cfg.dpo["batch_size"]) == (
        2e-7,
        0.1,
        0.1,
        32,
    )
    assert (cfg.dpo["schedule"], cfg.dpo["warmup_ratio"], cfg.dpo["max_length"]) == ("linear", 0.1, 2048)
    assert (cfg.sft["learning_rate"], cfg.sft["schedule"], cfg.sft["max_length"]) == (2e-6, "constant", 4096)
    m = cfg.mixture
    assert (m.cap_refine, m.cap_tree_judge_yes, m.cap_tree_judge_no, m.cap_actor_judge_no, m.cap_actor_judge_yes) == (
        4000,
        1500,
        1000,
        500,
        2500,
    )


def test_the_default_config_builds_the_dataclass_defaults():
    """The schema takes the loop's and the trainer's defaults from their dataclasses: one value per setting."""
    from spar_jax import spar
    from spar_jax.training.trainer import TrainConfig

    cfg = C.parse(C.default_config())
    assert cfg.mining == spar.MiningConfig()
    assert cfg.search == spar.SearchConfig()
    assert cfg.mixture == spar.MixtureConfig()
    assert TrainConfig(kind="dpo", **cfg.dpo) == TrainConfig()


def test_one_ifeval_source_for_every_stage_recorded_under_the_stages_names():
    """eval.ifeval_source feeds the ifeval and calibration settings; their fingerprints keep the key name their
    records have always used, so a finished stage of an older workdir still matches."""
    from spar_jax import fingerprint

    c = C.default_config()
    c.eval.ifeval_source = "prompts.jsonl"
    cfg = C.parse(c)
    assert cfg.evals["ifeval"].prompts_source == cfg.evals["calibration"].prompts_source == "prompts.jsonl"
    assert "prompts_source" not in c.ifeval and "prompts_source" not in c.calibration
    for stage in ("ifeval", "calibration"):
        assert fingerprint.config_values(cfg.raw, stage)[f"{stage}.prompts_source"] == "prompts.jsonl"


def test_scan_layers_flows_into_the_model_spec():
    c = C.default_config()
    assert C.parse(c).actor.scan_layers and C.parse(c).refiner.scan_layers
    c.actor.scan_layers = False
    assert not C.parse(c).actor.scan_layers and C.parse(c).refiner.scan_layers


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("search.brnch", 3, "unknown config key 'search.brnch'"),
        ("nonsense", 1, "unknown config key 'nonsense'"),
        ("search.branch", 0, "config section 'search': SearchConfig.branch must be a positive int"),
        ("dpo.schedule", "cosine", "config section 'dpo': TrainConfig.schedule='cosine'"),
        ("stages", ("spar", "dance"), "config key 'stages' names unknown stage 'dance'"),
        ("mesh.shape", (1, 1), "config key 'mesh.shape' must have 3 entries"),
        ("actor.dtype", "int8", "config key 'actor.dtype' must be float32, bfloat16 or float16"),
        ("mining.actor_top_p", 1.5, "config section 'mining': SamplingParams.top_p must be in"),
        (
            "prompts.constraint_types",
            "punctuation:no_comma,language:klingon",
            "config key 'prompts.constraint_types' has types the generator cannot make: "
            ".'language:klingon'.; choose from",
        ),
        ("prompts.max_constraints", 5, "config key 'prompts.max_constraints' must be between 1 and 4"),
        (
            "calibration.prompts_source",
            "x.jsonl",
            "config key 'calibration.prompts_source' was replaced by 'eval.ifeval_source'",
        ),
        ("stages", ("ifeval",), "config key 'eval.ifeval_source' must name the IFEval prompts for the ifeval stage"),
    ],
)
def test_bad_keys_and_values_name_the_key(key, value, message):
    c = C.default_config()
    section, _, leaf = key.rpartition(".")
    target = c
    for part in filter(None, section.split(".")):
        target = target[part]
    with target.unlocked() if hasattr(target, "unlocked") else _null():
        target[leaf] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        C.parse(c)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.search.brnch=2", '\'brnch\' Did you mean "branch" instead of "brnch"?'),
        # A section the config does not have (ml_collections raises a bare KeyError for it).
        ("--config.sampling.layer_loop=scan", "unknown config key 'sampling' in --config.sampling.layer_loop"),
        (
            "--config.ifeval.prompts_source=x.jsonl",
            "config key 'ifeval.prompts_source' was replaced by 'eval.ifeval_source' "
            "(in --config.ifeval.prompts_source)",
        ),
    ],
)
def test_command_line_unknown_key_fails_before_any_work(override, message, tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spar_jax.main",
            f"--config={root / 'configs' / 'demo.py'}",
            f"--config.workdir={tmp_path}",
            override,
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: bad command line: {message}"
    assert not any(tmp_path.iterdir())  # nothing was started


def test_unreachable_public_source_is_one_clear_error(tmp_path):
    """IFEval from the Hub with the Hub offline: exit 2 and a message saying how to pass a local file."""
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spar_jax.main",
            f"--config={root / 'configs' / 'eval_ifeval.py'}",
            f"--config.workdir={tmp_path}",
            "--config.eval.ifeval_source=google/IFEval",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr[proc.stderr.index("error: ") :]  # after the stage's progress line
    assert message.startswith("error: could not load IFEval prompts from the Hugging Face dataset 'google/IFEval'")
    assert "pass a local JSONL file" in proc.stderr
