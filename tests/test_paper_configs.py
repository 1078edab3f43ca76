"""The reproduction configs: both variants parse; the release variant carries Stage 0, the authors' wording, training
settings and generation caps; the offline variant keeps the generator and the rule-made bootstrap."""

import importlib.util
import pathlib

import pytest

from configs import paper
from spar_jax import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["llama3_8b", "llama3_70b", "glm4_9b", "mistral_7b"]


def _config(name, *args):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return config_lib.parse(module.get_config(*args))


@pytest.mark.parametrize("name", NAMES)
def test_release_variant(name):
    cfg = _config(name)
    assert cfg.spar.initial_sft_actor == "data/SPaR/sft/actor.jsonl"
    assert cfg.spar.initial_sft_refiner == "data/SPaR/sft/refiner.jsonl"
    assert cfg.spar.templates_file == "data/SPaR/templates.json" and cfg.spar.bootstrap_prompts == 0
    assert cfg.evals["llmbar"].judge.templates_file == cfg.spar.templates_file
    pool = {"mistral_7b": "data/SPaR/mistral_7b/actor"}.get(name, "data/SPaR/llama3_8b/actor")
    assert cfg.prompts.source == pool and cfg.prompts.num_train == 10000
    for section in (cfg.sft, cfg.sft0):  # src/configs/sft.yaml
        assert (section["learning_rate"], section["epochs"], section["batch_size"], section["schedule"]) == (
            2e-6,
            5,
            64,
            "constant",
        )
    assert (cfg.dpo["learning_rate"], cfg.dpo["batch_size"], cfg.dpo["sft_weight"]) == (2e-7, 32, 0.1)
    assert cfg.mining.actor_sampling.max_new_tokens == 2048 and cfg.search.refine_sampling.max_new_tokens == 3072
    assert cfg.eval.max_new_tokens == 2048


@pytest.mark.parametrize("name", NAMES)
def test_offline_variant(name):
    cfg = _config(name, "offline")
    assert cfg.prompts.source == "generated" and cfg.spar.bootstrap_prompts > 0
    assert cfg.spar.initial_sft_actor == cfg.spar.initial_sft_refiner == cfg.spar.templates_file == ""
    assert cfg.workdir.endswith("_offline") and cfg.sft["epochs"] == 5
    with pytest.raises(ValueError, match="unknown variant 'paper'"):
        _config(name, "paper")


def test_release_paths_and_settings():
    assert paper.release_path("prompt_pool", "glm4_9b") == "data/SPaR/llama3_8b/actor"
    assert paper.PAPER_SETTINGS["sft"] is paper.AUTHORS_SETTINGS["sft"]
