"""Pure next-token selection: greedy, temperature, top-k and top-p (nucleus), as functions of (logits, keys).

Shapes: B rows, V vocabulary, C candidates (a static bound, e.g. 64). Sampling parameters are traced arrays (a
scalar or one value per row), so changing them never recompiles.

Semantics (the order of transformers' warpers): logits / temperature -> keep the ``top_k`` largest (``top_k`` = 0 or
>= V: all) -> keep the smallest set of the most probable remaining tokens whose probability, renormalized over the
top-k set, sums to at least ``top_p`` (``top_p`` >= 1: all) -> sample from the kept tokens in proportion to their
probability. ``temperature`` = 0 is greedy (argmax; the lowest index wins a tie).

How it stays exact without sorting the vocabulary per token: ``lax.top_k`` gives the C largest logits, sorted. When
the kept set provably lies inside them (top-k <= C, or the nucleus closes within the C candidates) the row samples
there. Rows with no filter sample by inverse CDF over [candidates, then the rest in vocabulary order], touching the
rest only when the row's uniform falls beyond the candidates' mass. Rows whose kept set reaches past the candidates
get exact thresholds from a 32-step bisection over the float bit patterns of the full row (ties at a threshold are
all kept there). The full-vocabulary branches run under ``lax.cond`` only when some row needs them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def greedy(logits: jax.Array) -> jax.Array:
    """argmax over the last axis, lowest index on ties: logits [B, V] -> int32 [B].

    The row max, then the least index holding it: two plain reductions. XLA:CPU lowers ``argmax`` to a variadic
    (value, index) reduce, and ``lax.top_k(x, 1)`` to a sort-based custom call, both slower
    (docs/performance.md#greedy-by-two-reductions).
    A row without a maximum (NaN) gives its last index.
    """
    vocab = logits.shape[-1]
    top = logits.max(axis=-1, keepdims=True)
    index = jnp.min(jnp.where(logits == top, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)
    return jnp.minimum(index, vocab - 1)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[token] under the unmodified model distribution: [B, V], int [B] -> float32 [B]."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, tokens[:, None].astype(jnp.int32), axis=1)[:, 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sortable_bits(x: jax.Array) -> jax.Array:
    """uint32 keys ordered like the float32 values of x (for finite values and -inf): x [...] -> uint32 [...]."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def largest_threshold(keys: jax.Array, weights: jax.Array, target: jax.Array) -> jax.Array:
    """The largest t with sum(weights[keys >= t]) >= target, per row, by bisection on the key.

    Args:
      keys: uint32 [B, V] (from ``sortable_bits``); weights: float32 [B, V] >= 0; target: float32 [B], at most the
        row's total weight.
    Returns:
      uint32 [B]; the kept set is ``keys >= t``.
    """
    lo = keys.min(axis=-1)  # the full row always satisfies the target
    hi = keys.max(axis=-1).astype(jnp.uint32) + jnp.uint32(1)  # nothing is >= max + 1

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        mass = jnp.where(keys >= mid[:, None], weights, 0.0).sum(axis=-1)
        ok = mass >= target
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 32, body, (lo, hi))
    return lo


def inverse_cdf(weights: jax.Array, target: jax.Array) -> jax.Array:
    """Index of the first entry whose inclusive cumulative weight exceeds ``target``: [B, N], [B] -> int32 [B].

    With target = u * total (u in [0, 1)) this samples in proportion to the weights and never picks a zero weight.
    """
    cumulative = jnp.cumsum(weights, axis=-1)
    index = (cumulative <= target[:, None]).sum(axis=-1)
    return jnp.minimum(index, weights.shape[-1] - 1).astype(jnp.int32)


def _full_vocab_threshold(scaled, top_k, top_p, has_k, has_p):
    """Exact kept-set threshold on whole rows (keys >= result), for rows whose set passes the candidates."""
    keys = sortable_bits(scaled)
    vocab = scaled.shape[-1]
    ones = jnp.ones_like(scaled)
    k_target = jnp.where(has_k, top_k, vocab).astype(jnp.float32)
    t_k = largest_threshold(keys, ones, k_target)
    in_k = keys >= t_k[:, None]
    masked = jnp.where(in_k, scaled, NEG_INF)
    probs = jnp.exp(masked - jax.nn.logsumexp(masked, axis=-1, keepdims=True))
    t_p = largest_threshold(keys, probs, jnp.where(has_p, top_p, 0.0))
    return jnp.maximum(t_k, jnp.where(has_p, t_p, jnp.uint32(0)))


def sample(
    logits: jax.Array,
    uniforms: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    *,
    candidates: int = 64,
) -> jax.Array:
    """Draw one token per row.

    Args:
      logits: float32 [B, V] next-token logits.
      uniforms: float32 [B] in [0, 1), one per row (the only randomness used, so a row's draw depends on its own
        uniform only).
      temperature: float [] or [B]; 0 means greedy.
      top_k: int [] or [B]; 0 means no top-k filter.
      top_p: float [] or [B] in (0, 1]; 1 means no nucleus filter.
      candidates: static bound C on the fast path's candidate count.
    Returns:
      int32 [B] token ids.
    """
    b, vocab = logits.shape
    logits = logits.astype(jnp.float32)
    temperature = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (b,))
    top_k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), (b,))
    top_p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (b,))
    c = min(candidates, vocab)
    greedy_tokens = greedy(logits)
    is_greedy = temperature <= 0

    def stochastic(_):
        scaled = logits / jnp.where(is_greedy, 1.0, temperature)[:, None]
        vals, idx = jax.lax.top_k(scaled, c)
        has_k = (top_k > 0) & (top_k < vocab)
        k_inside = has_k & (top_k <= c)
        has_p = top_p < 1.0
        slot = jnp.arange(c)[None, :]
        k_mask = jnp.where(has_k[:, None], slot < top_k[:, None], True)
        lse_full = jax.nn.logsumexp(scaled, axis=-1)
        lse_k = jax.nn.logsumexp(jnp.where(k_mask, vals, NEG_INF), axis=-1)
        lse_ref = jnp.where(k_inside, lse_k, lse_full)
        probs_c = jnp.where(k_mask, jnp.exp(vals - lse_ref[:, None]), 0.0)
        inclusive = jnp.cumsum(probs_c, axis=-1)
        keep_c = k_mask & jnp.where(has_p[:, None], inclusive - probs_c < top_p[:, None], True)
        p_closes = inclusive[:, -1] >= top_p
        # Which rows are settled by the candidates alone.
        inside = jnp.where(has_p, k_inside | (~has_k & p_closes), k_inside)
        unfiltered = ~has_k & ~has_p
        candidate_mass = inclusive[:, -1]  # for unfiltered rows: the candidates' share of the full distribution
        in_candidates = inside | (unfiltered & (uniforms < candidate_mass))

        weights_c = jnp.where(keep_c, probs_c, 0.0)
        total_c = jnp.where(unfiltered, 1.0, weights_c.sum(axis=-1))
        pick_c = jnp.take_along_axis(idx, inverse_cdf(weights_c, uniforms * total_c)[:, None], axis=1)[:, 0]

        needs_threshold = ~is_greedy & ~inside & ~unfiltered
        needs_tail = ~is_greedy & unfiltered & ~in_candidates

        def full_vocab(_):
            threshold = jax.lax.cond(
                needs_threshold.any(),
                lambda _: _full_vocab_threshold(scaled, top_k, top_p, has_k, has_p),
                lambda _: jnp.zeros((b,), jnp.uint32),
                None,
            )
            is_candidate = jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], idx].set(True)
            keep = jnp.where(needs_tail[:, None], ~is_candidate, sortable_bits(scaled) >= threshold[:, None])
            weights = jnp.where(keep, jnp.exp(scaled - lse_full[:, None]), 0.0)
            # Tail rows reuse the part of their uniform beyond the candidates' mass, rescaled to [0, 1).
            tail_u = (uniforms - candidate_mass) / jnp.maximum(1.0 - candidate_mass, 1e-30)
            u = jnp.clip(jnp.where(needs_tail, tail_u, uniforms), 0.0, 1.0 - 2**-24)
            return inverse_cdf(weights, u * weights.sum(axis=-1))

        pick_full = jax.lax.cond(
            (needs_threshold | needs_tail).any(), full_vocab, lambda _: jnp.zeros((b,), jnp.int32), None
        )
        chosen = jnp.where(needs_threshold | needs_tail, pick_full, pick_c)
        return jnp.where(is_greedy, greedy_tokens, chosen).astype(jnp.int32)

    return jax.lax.cond(is_greedy.all(), lambda _: greedy_tokens, stochastic, None)
