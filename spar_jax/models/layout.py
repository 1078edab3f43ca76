"""How a decoder layer's products are computed from its parameters: the plain layout, and the protocol a decode
layout follows.

Shapes: B batch, T tokens, S cache slots, E embed, H query heads, K kv heads, D head dim, V vocabulary.

The plain layout reads the parameters as stored (``transformer.LAYER_AXES``: q [E, H, D], o [H, D, E], gate/up
[E, M], down [M, E]) and computes every product as one einsum. It is the layout of training everywhere and of
sampling on TPU and GPU. ``spar_jax.models.cpu_layout`` holds the XLA:CPU decode layout, which stores the
projections fused and out-major; a caller that passes its parameters passes its layout object with them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from spar_jax.models import layers as L
from spar_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class DecodeLayout:
    """The plain layout (see the module docstring). A subclass overrides the products for its own parameter form."""

    def qkv(self, h: jax.Array, p: dict[str, jax.Array], cfg: ModelConfig):
        """Queries [B, T, H, D], keys and values [B, T, K, D] of the normed input h [B, T, E] (before biases)."""
        q = jnp.einsum("bte,ehd->bthd", h, p["q"])
        k = jnp.einsum("bte,ekd->btkd", h, p["k"])
        v = jnp.einsum("bte,ekd->btkd", h, p["v"])
        return q, k, v

    def output(self, attn: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        """The output projection of attn [B, T, H * D] -> [B, T, E], one [H * D, E] matmul (see ``L.attention``)."""
        return jnp.einsum("btf,fe->bte", attn, p["o"].reshape(-1, p["o"].shape[-1]))

    def mlp(self, h: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
        """The gated MLP of h [B, T, E] -> [B, T, E]."""
        return L.gated_mlp(h, p["gate"], p["up"], p["down"])

    def cached_attention(self, q: jax.Array, kt: jax.Array, v: jax.Array, mask: jax.Array, dtype) -> jax.Array:
        """Queries [B, T, H, D] against the cache: kt [B, K, D, S] (transposed), v [B, K, S, D], mask [B, T, S]."""
        return L.attention(q, kt.astype(dtype), v.astype(dtype), mask, k_transposed=True)

    def logits(self, hidden: jax.Array, head: jax.Array) -> jax.Array:
        """float32 logits [B, T, V] of hidden [B, T, E] and the output projection head [E, V] (both in the compute
        dtype)."""
        return jnp.einsum("bte,ev->btv", hidden, head, preferred_element_type=jnp.float32)


PLAIN = DecodeLayout()
