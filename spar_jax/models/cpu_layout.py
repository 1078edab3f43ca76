"""The XLA:CPU decode layout: fused out-major projections, decode-step attention as loops of multiply-adds, and
prefill in chunks of prompt rows.

Shapes: B batch, T tokens, S cache slots, E embed, H query heads, K kv heads, G = H // K, D head dim, M mlp,
V vocabulary.

Decode on a CPU is bound by reading the weights and the cache, and XLA:CPU runs the small products of a decode step
through code paths that read memory slowly (docs/performance.md#cpu-decode-layout). This layout stores each
layer's projections fused and out-major (``fuse_layer``), so that each input feeds one product in the form
``linear_t`` streams fastest, and attends a one-token step with ``decode_attention``. The sampler chooses it on CPU
(``spar_jax.sampling.loop.DecodeLoop``); everything here computes what the plain layout
(``spar_jax.models.layout``) computes, up to float rounding.

Usage::

    weights, head_t = decode_params(model)      # per-layer fused arrays, the output projection out-major
    hidden, cache = model.hidden_states(ids, mask, cache=cache, layer_params=weights, layout=CPU)
    logits = model.logits(hidden, head_t, layout=CPU)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from spar_jax.models import layers as L
from spar_jax.models.config import ModelConfig
from spar_jax.models.layout import DecodeLayout
from spar_jax.models.transformer import LAYER_AXES, KVCache, split_layers

# ----------------------------------------------------------------------------------------------- products


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
    """``layers.gated_mlp`` with out-major weights: gate_up_t [2M, E] (gate rows, then up rows), down_t [E, M]."""
    g, u = jnp.split(linear_t(x, gate_up_t), 2, axis=-1)
    return linear_t(jax.nn.silu(g) * u, down_t)


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
    """``layers.attention(q, kt, v, mask, k_transposed=True)`` for a decode step on XLA:CPU: the score and value
    products as loops of multiply-adds over ``DECODE_CHUNK`` channels / slots instead of batched dots.

    A decode step's products are B * K tiny matrices ([G, D] x [D, S], [G, S] x [S, D]); XLA:CPU's dot runs them at
    5-8 GB/s of cache read and on one core, where these loops are element-wise fusions split across the cores
    (docs/performance.md#decode-attention-loops). The sums run in the dot's order (the benchmark's tokens and
    log-probs are bit-identical to the dots').

    Args:
      q: [B, T, H, D]; kt: [B, K, D, S] (the key cache's layout); v: [B, K, S, D]; mask: bool [B, T, S].
    Returns:
      [B, T, H, D] in q's dtype. ``layers.attention`` (the dots) with fewer than ``DECODE_LOOP_MIN_ROWS`` rows, or
      when D or S is not a multiple of ``DECODE_CHUNK``.
    """
    b, d, s = q.shape[0], q.shape[-1], kt.shape[-1]
    if b < DECODE_LOOP_MIN_ROWS or d % DECODE_CHUNK or s % DECODE_CHUNK:
        return L.attention(q, kt, v, mask, k_transposed=True)
    g = q.shape[2] // kt.shape[1]
    scores = _chunked_sum(L.grouped_queries(q, kt.shape[1]), kt, DECODE_CHUNK) * (d**-0.5)
    probs = L.masked_softmax(scores, jnp.repeat(mask, g, axis=1)[:, None])
    return L.ungrouped(_chunked_sum(probs, v, DECODE_CHUNK), q)


# ----------------------------------------------------------------------------------------------- parameters


# The fused, out-major layout of one layer's projections: name -> logical axes. The fused output dimensions
# concatenate differently sharded pieces, so they are not sharded.
FUSED_AXES: dict[str, tuple[str | None, ...]] = {
    "qkv_t": (None, "embed"),
    "o_t": ("embed", None),
    "gate_up_t": (None, "embed"),
    "down_t": ("embed", "mlp"),
}
_UNFUSED = ("q", "k", "v", "o", "gate", "up", "down")


def fuse_layer(p: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One layer's parameters with the projections fused and stored out-major ([out, in], for ``linear_t``):
    qkv_t [(H + 2K) * D, E], o_t [E, H * D], gate_up_t [2M, E], down_t [E, M]; norms and biases unchanged.

    One product per input instead of several (a shared input makes XLA materialize its broadcast), in the form
    ``linear_t`` streams fastest when only a few rows are decoded.
    """
    e = p["q"].shape[0]
    fused = {name: a for name, a in p.items() if name not in _UNFUSED}
    fused["qkv_t"] = jnp.concatenate([p[n].reshape(e, -1) for n in ("q", "k", "v")], axis=1).T
    fused["o_t"] = p["o"].reshape(-1, e).T
    fused["gate_up_t"] = jnp.concatenate([p["gate"], p["up"]], axis=1).T
    fused["down_t"] = p["down"].T
    return fused


def decode_params(model) -> tuple[tuple[dict[str, jax.Array], ...], jax.Array]:
    """This layout's arrays for ``model``: every layer's parameters fused (``fuse_layer``), and the output projection
    out-major [V, E] (the embedding itself when tied; a transposed copy otherwise). Placed by the model's sharding."""
    shard = model.shard

    def fused_shardings(p):
        if shard is None:
            return None
        return {n: shard.sharding(FUSED_AXES.get(n, LAYER_AXES.get(n)), a.shape) for n, a in p.items()}

    def fuse_all(stacked):
        return tuple(fuse_layer(p) for p in split_layers(stacked))

    stacked = model.layers.arrays()
    shapes = jax.eval_shape(fuse_all, stacked)
    # The stack is an argument, not a closure: a global array spanning other processes cannot be closed over.
    layers = jax.jit(fuse_all, out_shardings=tuple(fused_shardings(p) for p in shapes))(stacked)
    if model.lm_head is None:
        return layers, model.embed[...]
    head = model.lm_head[...]
    out = None if shard is None else shard.sharding(("vocab", "embed"), head.shape[::-1])
    return layers, jax.jit(jnp.transpose, out_shardings=out)(head)


@dataclasses.dataclass(frozen=True)
class CpuLayout(DecodeLayout):
    """The products of the fused layout (``fuse_layer``; the head out-major, see ``decode_params``)."""

    def qkv(self, h: jax.Array, p: dict[str, jax.Array], cfg: ModelConfig):
        nq, nk, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q, k, v = jnp.split(linear_t(h, p["qkv_t"]), [nq * d, (nq + nk) * d], axis=-1)
        return q.reshape(*q.shape[:2], nq, d), k.reshape(*k.shape[:2], nk, d), v.reshape(*v.shape[:2], nk, d)

    def output(self, attn: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        return linear_t(attn, p["o_t"])

    def mlp(self, h: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        return gated_mlp_fused(h, p["gate_up_t"], p["down_t"])

    def cached_attention(self, q: jax.Array, kt: jax.Array, v: jax.Array, mask: jax.Array, dtype) -> jax.Array:
        if q.shape[1] == 1:  # a decode step
            return decode_attention(q, kt, v, mask)
        return super().cached_attention(q, kt, v, mask, dtype)

    def logits(self, hidden: jax.Array, head: jax.Array) -> jax.Array:
        """``head`` is out-major here, [V, E]."""
        return linear_t(hidden, head, dtype=jnp.float32)


CPU = CpuLayout()


# ----------------------------------------------------------------------------------------------- chunked prefill


# Tokens per prefill chunk on CPU (the sampler's prefill_chunk="auto"): the fastest of the sizes measured
# (docs/performance.md#chunked-prefill).
CPU_PREFILL_CHUNK = 1024


def chunk_rows(rows: int, length: int, chunk_tokens: int) -> int:
    """Prompt rows per prefill chunk: the largest divisor of ``rows`` whose chunk holds at most ``chunk_tokens``
    tokens of ``length`` (at least one row); ``rows`` itself when ``chunk_tokens`` is 0 (no chunking)."""
    if chunk_tokens <= 0:
        return rows
    fit = max(1, chunk_tokens // length)
    return max(d for d in range(1, min(rows, fit) + 1) if rows % d == 0)


def prefill_in_chunks(one, prompt_ids: jax.Array, prompt_mask: jax.Array, rows: int):
    """``one(ids, mask) -> (logits [rows, V], cache)`` over the prompt batch [B, T], ``rows`` prompt rows at a time
    (a divisor of B), merged back into ([B, V], the cache of B rows).

    Chunks (a ``lax.map``; the stacked results merge back with a free reshape) keep a chunk's activations in the CPU's
    caches and write the cache in place (docs/performance.md#chunked-prefill). Chunking moves log-probs by up to
    ~3e-5 (the products' blocking depends on the row count), so only a near-tie could change a greedy token.
    """
    b = prompt_ids.shape[0]
    if b % rows:
        raise ValueError(f"prefill chunks of {rows} rows do not divide a batch of {b}")
    chunks = b // rows
    logits, cache = jax.lax.map(
        lambda a: one(*a), (prompt_ids.reshape(chunks, rows, -1), prompt_mask.reshape(chunks, rows, -1))
    )

    def merge(x):  # [chunks, rows, ...] -> [B, ...]
        return x.reshape(b, *x.shape[2:])

    def merge_kv(x):  # [chunks, (L,) rows, K, D, S] -> [(L,) B, K, D, S] (or S, D): chunks go next to the rows
        x = jnp.moveaxis(x, 0, x.ndim - 5)
        return x.reshape(*x.shape[:-5], b, *x.shape[-3:])

    merged = KVCache(
        k=jax.tree.map(merge_kv, cache.k),
        v=jax.tree.map(merge_kv, cache.v),
        valid=merge(cache.valid),
        next_position=merge(cache.next_position),
        end=cache.end[0],
    )
    return merge(logits), merged
