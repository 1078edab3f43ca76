"""Pure layer math: RMSNorm, rotary embeddings, grouped-query attention, gated MLP.

Shapes: B batch, T query length, S key length, E embed, H query heads, K kv heads, G = H // K, D head dim, M mlp.
"""

from __future__ import annotations

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
    qg = grouped_queries(q, k.shape[1])
    spec = "bkqd,bkds->bkqs" if k_transposed else "bkqd,bksd->bkqs"
    scores = jnp.einsum(spec, qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    probs = masked_softmax(scores, jnp.repeat(mask, g, axis=1)[:, None]).astype(v.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v, preferred_element_type=jnp.float32)
    return ungrouped(out, q)


def grouped_queries(q: jax.Array, kv_heads: int) -> jax.Array:
    """q [B, T, H, D] -> [B, K, T * G, D]: query rows ordered (token, group), so that the heads sharing a KV head
    form one matrix per (b, k); both attention products are then plain batched matmuls and the output reshapes back
    to [B, T, H * D] with one transpose. (XLA:CPU picks much worse layouts, including per-call copies of the output
    projection, for [B, K, G, T, D].)"""
    b, t, h, d = q.shape
    return q.reshape(b, t, kv_heads, h // kv_heads, d).transpose(0, 2, 1, 3, 4).reshape(b, kv_heads, -1, d)


def ungrouped(out: jax.Array, q: jax.Array) -> jax.Array:
    """The inverse of ``grouped_queries``: [B, K, T * G, D] -> q's shape [B, T, H, D] and dtype."""
    b, t, h, d = q.shape
    kh = out.shape[1]
    return out.reshape(b, kh, t, h // kh, d).transpose(0, 2, 1, 3, 4).reshape(b, t, h, d).astype(q.dtype)


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
