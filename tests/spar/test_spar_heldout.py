"""Out-of-distribution held-out prompts (prompts.heldout_types): reserved types and task stems never reach training
prompts, the held-out set is split and labelled, and the run report scores the two splits separately."""

import os

import pytest

from spar_jax import config as config_lib
from spar_jax import files
from spar_jax.spar import report, sources
from spar_jax.spar.constraint_prompts import HELDOUT_TASKS, MAKERS, TASKS, generate_constraint_prompts
from spar_jax.spar.evaluation import score

RESERVED = ("detectable_format:title", "startend:quotation")


def _cfg(**prompts):
    c = config_lib.default_config()
    c.prompts.update(prompts)
    return config_lib.parse(c)


def _task(prompt):
    return next(t for t in TASKS if prompt.startswith(t + ". "))


def test_reserved_types_and_stems_never_reach_training_prompts():
    cfg = _cfg(heldout_types=",".join(RESERVED), num_heldout=41)
    assert sources.training_types(cfg) == tuple(t for t in sorted(MAKERS) if t not in RESERVED)
    train = sources.generated(cfg, 300, seed=1)
    boot = sources.generate_excluding(cfg, 50, seed=2, exclude=[p["prompt"] for p in train])
    for p in train + boot:
        assert not set(p["instruction_id_list"]) & set(RESERVED)
        assert _task(p["prompt"]) not in HELDOUT_TASKS
    held = sources.heldout_prompts(cfg, exclude=[p["prompt"] for p in train])
    inside = [h for h in held if h["split"] == sources.IN_DISTRIBUTION]
    outside = [h for h in held if h["split"] == sources.OUT_OF_DISTRIBUTION]
    assert (len(inside), len(outside), len(held)) == (21, 20, 41)
    assert all(not set(h["instruction_id_list"]) & set(RESERVED) for h in inside)
    assert all(h["instruction_id_list"][0] in RESERVED and _task(h["prompt"]) in HELDOUT_TASKS for h in outside)
    assert {h["instruction_id_list"][0] for h in outside} == set(RESERVED)  # the main type is drawn from both
    assert len({h["key"] for h in held}) == 41 and min(h["key"] for h in held) >= sources.HELDOUT_KEY_OFFSET
    assert not {h["prompt"] for h in held} & {p["prompt"] for p in train}


def test_without_reserved_types_nothing_changes():
    cfg = _cfg(num_heldout=5)
    assert sources.generated(cfg, 20, seed=3) == generate_constraint_prompts(20, seed=3)
    held = sources.heldout_prompts(cfg)
    assert len(held) == 5 and all("split" not in h for h in held)
    assert sources.training_tasks(cfg) == TASKS


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"prompts.heldout_types' has types the generator cannot make: \['nope'\]"):
        _cfg(heldout_types="nope")
    with pytest.raises(ValueError, match=r"prompts.heldout_types' reserves every type of prompts.constraint_types"):
        _cfg(constraint_types="punctuation:no_comma", heldout_types="punctuation:no_comma")


def _record(key, instruction_id, split):
    return {
        "key": key,
        "prompt": f"prompt {key}",
        "instruction_id_list": [instruction_id],
        "kwargs": [{}],
        "split": split,
    }


def test_report_scores_the_splits_separately(tmp_path):
    wd = str(tmp_path)
    held = [
        _record(1, "punctuation:no_comma", "in_distribution"),
        _record(2, "punctuation:no_comma", "in_distribution"),
        _record(3, "change_case:english_lowercase", "out_of_distribution"),
        _record(4, "change_case:english_lowercase", "out_of_distribution"),
        _record(5, "change_case:english_lowercase", "out_of_distribution"),
    ]
    responses = ["no commas at all", "one, two", "Capital", "Also Capital", "all lowercase"]
    files.write_jsonl(os.path.join(wd, "prompts", "heldout.jsonl"), held)
    eval_dir = os.path.join(wd, "iter_1", "eval")
    metrics = score(held, responses, os.path.join(eval_dir, "heldout"), "held-out")
    files.write_json(os.path.join(eval_dir, "DONE.json"), {"heldout": metrics, "ifeval": None, "seconds": 1.0})
    row = report.iteration_row(wd, 1)
    assert row["heldout_prompt_level_strict"] == pytest.approx(2 / 5)
    assert row["heldout_in_distribution_prompt_level_strict"] == pytest.approx(1 / 2)
    assert row["heldout_out_of_distribution_prompt_level_strict"] == pytest.approx(1 / 3)
    assert row["heldout_out_of_distribution_average"] == pytest.approx(1 / 3)
    text = report.render([row])
    assert "| heldout_out_of_distribution_prompt_level_strict | 0.333 |" in text
    assert "reserved by prompts.heldout_types" in text
    os.remove(os.path.join(wd, "prompts", "heldout.jsonl"))
    plain = report.iteration_row(wd, 1)
    assert not any("distribution" in k for k in plain)
    assert "in distribution only" in report.render([plain])
