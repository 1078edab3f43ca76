"""Pure layer math: RMSNorm, rotary embeddings, grouped-query attention, gated MLP.

Shapes: B batch, T query length, S key length, E embed, H query heads, K kv heads, G = H // K, D head dim, M mlp.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from spar_jax.models.config import RopeConfig

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def materialized(fn, *args):
    """``fn(*args)``, computed once into memory rather than fused into (and recomputed by) each of its consumers.

    XLA fuses cheap elementwise producers into their consumers; when there are several consumers, or the consumer
    reads the producer transposed, that recomputes it or reads its inputs in a cache-hostile order.
    ``jax.lax.optimization_barrier`` does not prevent it on XLA:CPU (barriers are removed before fusion), but a
    conditional is never fused into its users. Both branches are ``fn``, so the predicate's value does not matter.
    """
    first = jax.tree.leaves(args)[0]
    return jax.lax.cond(first.ravel()[0] >= 0, fn, fn, *args)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm as HF computes it: normalize in float32, cast back, then scale. x [..., E], weight [E]."""
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(dtype) * x32.astype(dtype)


def rope_cos_sin(positions: jax.Array, rope: RopeConfig) -> tuple[jax.Array, jax.Array]:
    """cos, sin float32 [B, T, rotary_dim // 2] for integer positions [B, T]."""
    inv_freq = jnp.asarray(rope.inv_freq())
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, rope: RopeConfig) -> jax.Array:
    """Rotate the first ``rope.rotary_dim`` channels of x [B, T, N, D]; cos/sin [B, T, rotary_dim // 2].

    Rotate-half layout (LLaMA family): channel i pairs with i + r/2. Interleaved layout (GLM): channel 2i pairs
    with 2i + 1. The remaining D - rotary_dim channels pass through unchanged.
    """
    r = rope.rotary_dim
    rot, rest = x[..., :r], x[..., r:]
    c = cos[:, :, None, :].astype(jnp.float32)
    s = sin[:, :, None, :].astype(jnp.float32)
    rot32 = rot.astype(jnp.float32)
    if rope.interleaved:
        x1, x2 = rot32[..., 0::2], rot32[..., 1::2]
        out = jnp.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(rot.shape)
    else:
        x1, x2 = rot32[..., : r // 2], rot32[..., r // 2 :]
        out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    out = out.astype(x.dtype)
    return out if rest.shape[-1] == 0 else jnp.concatenate([out, rest], axis=-1)


@jax.custom_vjp
def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(where(mask, scores, MASK_VALUE)) over the last axis. scores float32 [..., Q, S]; mask bool,
    broadcastable to scores. Fully masked rows give a uniform distribution.

    The backward pass keeps only the probabilities (and the mask as given): autodiff of the same formula saved the
    masked scores, their exponentials, the quotient and a broadcast mask, four score-sized arrays per attention.
    """
    return jax.nn.softmax(jnp.where(mask, scores, MASK_VALUE), axis=-1)


def _masked_softmax_fwd(scores, mask):
    probs = masked_softmax(scores, mask)
    return probs, (probs, mask)


def _masked_softmax_bwd(residuals, g):
    probs, mask = residuals
    d_scores = probs * (g - jnp.sum(g * probs, axis=-1, keepdims=True))
    return jnp.where(mask, d_scores, 0.0), None


masked_softmax.defvjp(_masked_softmax_fwd, _masked_softmax_bwd)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, k_transposed: bool = False) -> jax.Array:
    """Grouped-query softmax attention.

    Args:
      q: [B, T, H, D] queries; k, v: [B, K, S, D] keys/values (head-major), or k [B, K, D, S] with ``k_transposed``
        (the KV cache's layout); mask: bool [B, T, S], True = may attend.
    Returns:
      [B, T, H, D] in q's dtype. Scores and softmax are float32. Fully-masked rows (padding queries) give a uniform
      average instead of NaN.
    """
    d = q.shape[-1]
    g = q.shape[2] // k.shape[1]
    qg = _grouped_queries(q, k.shape[1])
    spec = "bkqd,bkds->bkqs" if k_transposed else "bkqd,bksd->bkqs"
    scores = jnp.einsum(spec, qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    probs = masked_softmax(scores, jnp.repeat(mask, g, axis=1)[:, None]).astype(v.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v, preferred_element_type=jnp.float32)
    return _ungrouped(out, q)


def _grouped_queries(q: jax.Array, kv_heads: int) -> jax.Array:
    """q [B, T, H, D] -> [B, K, T * G, D]: query rows ordered (token, group), so that the heads sharing a KV head
    form one matrix per (b, k); both attention products are then plain batched matmuls and the output reshapes back
    to [B, T, H * D] with one transpose. (XLA:CPU picks much worse layouts, including per-call copies of the output
    projection, for [B, K, G, T, D].)"""
    b, t, h, d = q.shape
    return q.reshape(b, t, kv_heads, h // kv_heads, d).transpose(0, 2, 1, 3, 4).reshape(b, kv_heads, -1, d)


def _ungrouped(out: jax.Array, q: jax.Array) -> jax.Array:
    """The inverse of ``_grouped_queries``: [B, K, T * G, D] -> q's shape [B, T, H, D] and dtype."""
    b, t, h, d = q.shape
    kh = out.shape[1]
    return out.reshape(b, kh, t, h // kh, d).transpose(0, 2, 1, 3, 4).reshape(b, t, h, d).astype(q.dtype)


# ``decode_attention`` accumulates this many head channels (scores) or cache slots (values) per loop iteration, and
# loops only from this many decode rows on: below, its gain does not pay for the few seconds of compile its loops add
# to each program (docs/performance.md#decode-attention-loops).
DECODE_CHUNK = 16
DECODE_LOOP_MIN_ROWS = 16


def _chunked_sum(weights: jax.Array, values: jax.Array, chunk: int) -> jax.Array:
    """sum_i weights[b, k, q, i] * values[b, k, i, x] -> float32 [B, K, Q, X], as a ``fori_loop`` over chunks of
    ``chunk`` indices, each a run of multiply-adds (no dot, no reduce). weights [B, K, Q, I]; values [B, K, I, X].

    The terms are added in order i = 0, 1, ..., as a sequential dot adds them.
    """
    b, k, q, n = weights.shape

    def body(c, acc):
        w = jax.lax.dynamic_slice_in_dim(weights, c * chunk, chunk, axis=3).astype(jnp.float32)
        v = jax.lax.dynamic_slice_in_dim(values, c * chunk, chunk, axis=2).astype(jnp.float32)
        for i in range(chunk):
            acc = acc + w[..., i : i + 1] * v[:, :, None, i, :]
        return acc

    return jax.lax.fori_loop(0, n // chunk, body, jnp.zeros((b, k, q, values.shape[3]), jnp.float32))


def decode_attention(q: jax.Array, kt: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """``attention(q, kt, v, mask, k_transposed=True)`` for a decode step on XLA:CPU: the score and value products
    as loops of multiply-adds over ``DECODE_CHUNK`` channels / slots instead of batched dots.

    A decode step's products are B * K tiny matrices ([G, D] x [D, S], [G, S] x [S, D]); XLA:CPU's dot runs them at
    5-8 GB/s of cache read and on one core, where these loops are element-wise fusions split across the cores
    (docs/performance.md#decode-attention-loops). The sums run in the dot's order (the benchmark's tokens and
    log-probs are bit-identical to the dots').

    Args:
      q: [B, T, H, D]; kt: [B, K, D, S] (the key cache's layout); v: [B, K, S, D]; mask: bool [B, T, S].
    Returns:
      [B, T, H, D] in q's dtype. ``attention`` (the dots) with fewer than ``DECODE_LOOP_MIN_ROWS`` rows, or when D or
      S is not a multiple of ``DECODE_CHUNK``.
    """
    b, d, s = q.shape[0], q.shape[-1], kt.shape[-1]
    if b < DECODE_LOOP_MIN_ROWS or d % DECODE_CHUNK or s % DECODE_CHUNK:
        return attention(q, kt, v, mask, k_transposed=True)
    g = q.shape[2] // kt.shape[1]
    scores = _chunked_sum(_grouped_queries(q, kt.shape[1]), kt, DECODE_CHUNK) * (d**-0.5)
    probs = masked_softmax(scores, jnp.repeat(mask, g, axis=1)[:, None])
    return _ungrouped(_chunked_sum(probs, v, DECODE_CHUNK), q)


def causal_block(t: int) -> int:
    """``causal_attention``'s default query block for T tokens: T / 4, within [32, 256]. Smaller blocks skip more of
    the masked triangle, larger ones run fewer, bigger products (docs/performance.md#causal-attention-blocks)."""
    return min(max(t // 4, 32), 256)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, block: int | None = None):
    """``attention`` where query t and key t are the same position (self-attention without a cache, or a prefill
    into an empty cache of exactly T slots) and ``mask`` is causal (it may mask more: padding, windows). Shapes as
    in ``attention``, with S == T.

    Queries go in blocks of ``block`` tokens (default ``causal_block(T)``), each attending only to the keys up to its
    last query: the blocks above the diagonal, fully masked, are never computed. With n blocks that is (n + 1) / 2n
    of the score and value products, forward and backward (and of the saved probabilities;
    docs/performance.md#causal-attention-blocks). The result equals ``attention(q, k, v, mask)`` on every query that
    sees at least one key; a query that sees none (a padding token) averages the keys of its block instead of all
    keys, an equally arbitrary value that no real token reads.
    """
    t = q.shape[1]
    if k.shape[2] != t:
        raise ValueError(f"causal_attention needs as many keys as queries, got {k.shape[2]} keys for {t} queries")
    block = causal_block(t) if block is None else block
    if t <= block:
        return attention(q, k, v, mask)
    outs = []
    for lo in range(0, t, block):
        hi = min(lo + block, t)
        outs.append(attention(q[:, lo:hi], k[:, :, :hi], v[:, :, :hi], mask[:, lo:hi, :hi]))
    return jnp.concatenate(outs, axis=1)


# Up to this many rows (and at least 2), ``linear_t`` multiplies and sums instead of calling a dot.
FEW_ROWS = 32


def linear_t(x: jax.Array, w_t: jax.Array, dtype=None) -> jax.Array:
    """x [..., K] times an out-major weight w_t [N, K] (i.e. x @ w_t.T) -> [..., N] in ``dtype`` (default x's),
    accumulated in float32.

    With 2..FEW_ROWS rows (a decode step) the product is a broadcast multiply summed over K, which XLA:CPU runs as
    one fused pass over the weights, faster than its GEMM for so few rows (docs/performance.md#cpu-decode-layout).
    One row stays a dot (a GEMV, already at memory speed; the multiply-and-sum is much slower there), and so do more
    rows (compute-bound). Feed each input to one call only: XLA materializes a broadcast that two of these share,
    [N, rows, K] in memory (hence the fused q|k|v and gate|up).
    """
    dtype = x.dtype if dtype is None else dtype
    rows, k = math.prod(x.shape[:-1]), x.shape[-1]
    if 2 <= rows <= FEW_ROWS:
        y = jnp.sum(w_t[:, None, :] * x.reshape(rows, k)[None], axis=-1, dtype=jnp.float32)  # [N, rows]
        return y.T.reshape(*x.shape[:-1], w_t.shape[0]).astype(dtype)
    return jnp.einsum("...k,nk->...n", x, w_t, preferred_element_type=jnp.float32).astype(dtype)


def gated_mlp_fused(x: jax.Array, gate_up_t: jax.Array, down_t: jax.Array) -> jax.Array:
    """``gated_mlp`` with out-major weights: gate_up_t [2M, E] (gate rows, then up rows), down_t [E, M]."""
    g, u = jnp.split(linear_t(x, gate_up_t), 2, axis=-1)
    return linear_t(jax.nn.silu(g) * u, down_t)


@jax.custom_vjp
def gated_mlp(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
    """SwiGLU MLP: down(silu(x @ gate) * (x @ up)). x [B, T, E], gate/up [E, M], down [M, E].

    The backward pass is written out (same math as autodiff) so that the elementwise SiLU gradients are computed in
    their natural [B, T, M] layout (``materialized``): left to autodiff, XLA:CPU fuses them into a transposing copy
    for the weight gradients' matmuls that reads its inputs column by column (docs/performance.md#swiglu-backward).
    """
    return _gated_mlp_fwd(x, gate, up, down)[0]


def _gated_mlp_fwd(x, gate, up, down):
    g = jnp.einsum("bte,em->btm", x, gate)
    u = jnp.einsum("bte,em->btm", x, up)
    return jnp.einsum("btm,me->bte", jax.nn.silu(g) * u, down), (x, g, u, gate, up, down)


def _silu_mul_grads(g, u, dh):
    """From the gate and up activations g, u and the gradient dh of silu(g) * u: the product (for ``down``'s
    gradient) and the gradients du, dg. silu'(g) = sig * (1 + g * (1 - sig))."""
    sig = jax.nn.sigmoid(g)
    act = g * sig  # silu(g)
    return act * u, dh * act, dh * u * (sig * (1 + g * (1 - sig)))


def _gated_mlp_bwd(residuals, dy):
    x, g, u, gate, up, down = residuals
    gate_t, up_t, down_t = materialized(lambda *w: tuple(a.T for a in w), gate, up, down)
    dh = jnp.einsum("bte,em->btm", dy, down_t)
    h, du, dg = materialized(_silu_mul_grads, g, u, dh)  # in [B, T, M] (see the docstring)
    d_down = materialized(jnp.transpose, jnp.einsum("bte,btm->em", dy, h))
    d_gate = jnp.einsum("bte,btm->em", x, dg)
    d_up = jnp.einsum("bte,btm->em", x, du)
    dx = jnp.einsum("btm,me->bte", dg, gate_t) + jnp.einsum("btm,me->bte", du, up_t)
    return dx, d_gate, d_up, d_down


gated_mlp.defvjp(_gated_mlp_fwd, _gated_mlp_bwd)
