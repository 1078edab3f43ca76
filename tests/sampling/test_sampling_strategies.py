"""The sampling strategies against the exact distributions (numpy reference with a full sort)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax.sampling import strategies


def reference_probs(logits, temperature, top_k, top_p):
    """Exact kept distribution: logits / T -> top-k -> nucleus over the top-k renormalized -> renormalize."""
    x = np.asarray(logits, np.float64) / temperature
    order = np.argsort(-x, kind="stable")
    keep = np.zeros(x.shape, bool)
    k = top_k if 0 < top_k < x.size else x.size
    top = order[:k]
    p = np.exp(x[top] - x[top].max())
    p /= p.sum()
    if top_p < 1:
        exclusive = np.cumsum(p) - p
        top = top[exclusive < top_p]
    keep[top] = True
    probs = np.where(keep, np.exp(x - x.max()), 0.0)
    return probs / probs.sum()


def logits_row(vocab=300, seed=0, scale=2.0):
    return np.random.default_rng(seed).standard_normal(vocab).astype(np.float32) * scale


# (temperature, top_k, top_p) chosen so that, with candidates=8, every path runs: candidates only, the unfiltered
# tail, a top-k past the candidates, a nucleus past the candidates, and both filters together.
CASES = [
    (1.0, 0, 1.0),  # unfiltered: candidates + tail
    (0.7, 5, 1.0),  # top-k inside the candidates
    (0.5, 0, 0.6),  # nucleus closes inside the candidates
    (1.0, 40, 1.0),  # top-k beyond the candidates: threshold bisection
    (1.5, 0, 0.9),  # nucleus beyond the candidates: threshold bisection
    (1.2, 50, 0.8),  # both, beyond the candidates
    (0.8, 6, 0.5),  # both, inside
]


@pytest.mark.parametrize("temperature,top_k,top_p", CASES)
def test_stratified_uniforms_reproduce_exact_distribution(temperature, top_k, top_p):
    # Inverse-CDF sampling maps each token to an interval of length p; a stratified grid of M uniforms therefore
    # lands on token t round(p_t * M) +- 1 times, whatever order the sampler lays the intervals out in.
    logits = logits_row()
    m = 6000
    u = (np.arange(m) + 0.5) / m
    rows = jnp.broadcast_to(jnp.asarray(logits), (m, logits.size))
    tokens = np.asarray(strategies.sample(rows, jnp.asarray(u, jnp.float32), temperature, top_k, top_p, candidates=8))
    expected = reference_probs(logits, temperature, top_k, top_p) * m
    counts = np.bincount(tokens, minlength=logits.size)
    assert np.all(counts[expected == 0] == 0), "a token outside the kept set was sampled"
    assert np.abs(counts - expected).max() <= 2.0


@pytest.mark.parametrize("temperature,top_k,top_p", [CASES[0], CASES[4], CASES[5]])
def test_random_draws_match_exact_distribution(temperature, top_k, top_p):
    logits = logits_row(seed=3)
    m = 20000
    u = jax.random.uniform(jax.random.key(7), (m,))
    rows = jnp.broadcast_to(jnp.asarray(logits), (m, logits.size))
    tokens = np.asarray(strategies.sample(rows, u, temperature, top_k, top_p, candidates=8))
    p = reference_probs(logits, temperature, top_k, top_p)
    freq = np.bincount(tokens, minlength=logits.size) / m
    tolerance = 5 * np.sqrt(p * (1 - p) / m) + 2 / m
    assert np.all(np.abs(freq - p) <= tolerance)
    kept = p > 0
    chi2 = (m * (freq[kept] - p[kept]) ** 2 / p[kept]).sum()
    df = kept.sum() - 1
    assert chi2 < df + 6 * np.sqrt(2 * df)  # about 4 standard deviations of a chi-square(df)


def test_greedy_rows_and_mixed_batch():
    logits = np.stack([logits_row(seed=s) for s in range(4)])
    logits[0, [5, 9]] = logits[0].max() + 1  # a tie: the lower index wins
    u = jnp.full((4,), 0.3)
    temps = jnp.asarray([0.0, 1.0, 0.0, 0.7])
    tokens = np.asarray(strategies.sample(jnp.asarray(logits), u, temps, 0, 1.0, candidates=8))
    assert tokens[0] == 5
    assert tokens[2] == int(np.argmax(logits[2]))
    assert np.array_equal(np.asarray(strategies.greedy(jnp.asarray(logits))), [5, *np.argmax(logits[1:], 1)])


def test_tiny_top_p_is_greedy_and_top_k_one_is_greedy():
    logits = np.stack([logits_row(seed=s) for s in range(8)])
    u = jax.random.uniform(jax.random.key(0), (8,))
    best = np.argmax(logits, 1)
    for k, p in ((1, 1.0), (0, 1e-6), (200, 1e-6)):
        tokens = np.asarray(strategies.sample(jnp.asarray(logits), u, 1.0, k, p, candidates=8))
        assert np.array_equal(tokens, best), (k, p)


def test_token_logprobs_are_raw_model_logprobs():
    logits = jnp.asarray(np.stack([logits_row(seed=s) for s in range(3)]))
    tokens = jnp.asarray([1, 2, 3])
    expected = jax.nn.log_softmax(logits, -1)[jnp.arange(3), tokens]
    np.testing.assert_allclose(strategies.token_logprobs(logits, tokens), expected, atol=1e-5)


def test_largest_threshold_bisection_is_exact():
    x = logits_row(vocab=500, seed=5)
    keys = strategies.sortable_bits(jnp.asarray(x))[None]
    for k in (1, 7, 123, 500):
        t = strategies.largest_threshold(keys, jnp.ones_like(keys, jnp.float32), jnp.asarray([float(k)]))
        assert int((keys >= t[:, None]).sum()) == k
    neg = jnp.asarray([-3.0, -0.0, 0.0, 1e-30, -1e-30, 2.0, -jnp.inf])
    order = np.argsort(np.asarray(strategies.sortable_bits(neg)), kind="stable")
    assert list(np.asarray(neg)[order]) == sorted(np.asarray(neg).tolist())


def test_bucket_arithmetic_and_batch_plan():
    from spar_jax.sampling import buckets

    assert buckets.power_buckets(16, 100) == (16, 32, 64, 100)
    assert buckets.power_buckets(1, 12, multiple=4) == (4, 8, 12)
    assert buckets.bucket_for(17, (16, 32)) == 32
    with pytest.raises(ValueError, match="prompt length 40 exceeds the largest bucket 32"):
        buckets.bucket_for(40, (16, 32), "prompt length")
    lengths = [3, 20, 5, 17, 30, 1, 2]
    plan = buckets.plan_batches(lengths, length_buckets=(16, 32), max_rows=3, row_multiple=2)
    assert sorted(i for b in plan for i in b.indices) == list(range(len(lengths)))  # every request exactly once
    for b in plan:
        assert b.rows % 2 == 0 and len(b.indices) <= b.rows <= 4
        assert all(lengths[i] <= b.length for i in b.indices)
    assert [b.length for b in plan] == sorted((b.length for b in plan), reverse=True)
    assert buckets.trim_at_stop("abc[[end]]x\n", ["\n", "[[end]]"]) == 3
    assert buckets.trim_at_stop("abc", ["z"]) is None
