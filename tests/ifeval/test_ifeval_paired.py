"""Bootstrap intervals for IFEval's metrics against hand-computed cases."""

import numpy as np
import pytest

from spar_jax.ifeval.paired import bootstrap, components, metrics_from_sums, paired_bootstrap
from spar_jax.ifeval.scoring import PromptResult


def result(strict, loose=None):
    return PromptResult(
        0,
        "p",
        "r",
        tuple(f"id{i}" for i in range(len(strict))),
        tuple(strict),
        tuple(strict if loose is None else loose),
    )


def test_components_and_metrics_follow_ifeval_ratios():
    comps = components([result([True, False, True]), result([True]), result([False, False], [True, True])])
    m = metrics_from_sums(comps.sum(0), 3)
    # prompt strict 1/3, prompt loose 2/3, instruction strict 3/6, instruction loose 5/6
    np.testing.assert_allclose(m, [1 / 3, 2 / 3, 3 / 6, 5 / 6, (1 / 3 + 2 / 3 + 3 / 6 + 5 / 6) / 4])


def test_paired_bootstrap_two_prompts_by_hand():
    # base fails both one-instruction prompts; the other model passes the first. A resample of 2 prompts holds
    # prompt 1 twice (p = 1/4, difference 1), once (1/2, difference 1/2) or never (1/4, difference 0), in every
    # metric and their average: the point estimate is 1/2 and the 95% interval [0, 1].
    base = components([result([False]), result([False])])
    other = components([result([True]), result([False])])
    out = paired_bootstrap(base, other, n_resamples=20_000, seed=1)
    for name in ("prompt_level_strict", "instruction_level_loose", "average"):
        assert out[name] == {"delta": 0.5, "low": 0.0, "high": 1.0}
    # the middle value carries half of the mass: the 30th-70th percentile band sits on it
    narrow = paired_bootstrap(base, other, n_resamples=20_000, seed=1, level=0.4)["average"]
    assert narrow["low"] == narrow["high"] == 0.5


def test_equal_models_and_a_constant_shift_have_degenerate_intervals():
    rng = np.random.default_rng(0)
    results = [result(list(rng.random(3) < 0.5)) for _ in range(40)]
    comps = components(results)
    same = paired_bootstrap(comps, comps, n_resamples=500)
    assert all(v == {"delta": 0.0, "low": 0.0, "high": 0.0} for v in same.values())
    one = bootstrap(comps, n_resamples=2000)
    assert one["average"]["low"] < one["average"]["delta"] < one["average"]["high"]
    with pytest.raises(ValueError, match="40 and 39 prompts"):
        paired_bootstrap(comps, comps[:39])
