"""Output-length profiles for the planner (spar_jax/planning/lengths.py): defaults, and measured from a run's shards
with the run's tokenizer (the demo's SmolLM2 tokenizer)."""

import json
import os

import numpy as np
import pytest

from spar_jax import config as config_lib
from spar_jax.planning import lengths as L


def test_default_draws_are_exponential_cut_at_the_cap_and_deterministic():
    a = L.DEFAULTS.draw("judgement", 1024, 20000, seed=1)
    assert a.min() >= 1 and a.max() == 1024
    assert np.array_equal(a, L.DEFAULTS.draw("judgement", 1024, 20000, seed=1))
    # mean of ceil(Exp(250)) cut at 1024: 250 * (1 - e^-4.096) + ~0.5 for the ceiling
    assert a.mean() == pytest.approx(250 * (1 - np.exp(-1024 / 250)) + 0.5, rel=0.03)
    measured = L.LengthProfile("x", {"answer": (0.25, 1.0)})
    b = measured.draw("answer", 400, 1000)
    assert set(b.tolist()) == {100, 400}
    assert "answers measured (2, mean 62% of the cap)" in measured.describe()
    assert "judgements exponential, mean 250 tokens (default)" in measured.describe()


def _run_dir(tmp_path, judge_kind):
    os.makedirs(tmp_path, exist_ok=True)
    c = config_lib.default_config()
    c.judge.kind = judge_kind
    c.mining.actor_max_new_tokens, c.mining.judge_max_new_tokens = 40, 20
    c.search.refine_max_new_tokens, c.search.judge_max_new_tokens = 50, 25
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    vote = {"texts": ["Checks: fine. Final Judgement: Yes"], "votes": ["yes"], "label": "yes", "value": 1.0}
    mine = tmp_path / "iter_1" / "mine"
    os.makedirs(mine)
    samples = [
        {"response": "Hello there, friend.", "finish_reason": "stop", "judgement": vote},
        {"response": "cut " * 40, "finish_reason": "length", "judgement": vote},
    ]
    (mine / "shard_00000.jsonl").write_text(json.dumps({"prompt_id": "0", "samples": samples}) + "\n")
    search = tmp_path / "iter_1" / "search"
    os.makedirs(search)
    nodes = [
        {"response": "root", "output": None, "judgement": vote},
        {"response": "better", "output": "thinking\n[[start]]\nbetter\n[[end]]", "judgement": vote},
    ]
    (search / "shard_00000.jsonl").write_text(json.dumps({"nodes": nodes}) + "\n")
    return str(tmp_path)


def test_measured_from_a_run(tmp_path):
    from spar_jax.models import load_tokenizer

    tok = load_tokenizer("demo")
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    profile = L.from_run(_run_dir(tmp_path, "model"), tokenizer=tok)
    # A stopped answer: its tokens + the end-of-sequence token over the cap; a cut one: the cap.
    assert profile.fractions["answer"] == pytest.approx(((count("Hello there, friend.") + 1) / 40, 1.0))
    vote = count("Checks: fine. Final Judgement: Yes") + 1
    # Two mining votes (cap 20), one vote of the refined node (cap 25); the root is not a refinement.
    assert profile.fractions["judgement"] == pytest.approx((vote / 20, vote / 20, vote / 25))
    assert profile.fractions["refinement"] == pytest.approx(((count("thinking\n[[start]]\nbetter\n[[end]]") + 1) / 50,))
    rules = L.from_run(_run_dir(tmp_path / "r", "rules"), tokenizer=tok)
    assert "judgement" not in rules.fractions  # the rule judge's texts are not sampled


def test_bad_run_directories_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"--lengths_from=.*: no config.json"):
        L.from_run(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config_lib.default_config().to_dict()))
    with pytest.raises(ValueError, match="no mining or search shards"):
        L.from_run(str(tmp_path), tokenizer=object())
