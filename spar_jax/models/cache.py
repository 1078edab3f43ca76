"""The key/value cache of incremental decoding: its layout, and writing a call's keys and values into it.

Shapes: L layers, B batch, K kv heads, S slots, D head dim, T tokens of a call.
"""

from __future__ import annotations

import flax.struct
import jax

# The value cache, stacked [L, B, K, S, D]; a per-layer cache drops the leading "layers" axis. Head-major, so attention
# reads V without a transpose.
CACHE_AXES = ("layers", "batch", "kv_heads", "cache_length", "head_dim")
# The key cache, [L, B, K, D, S]: stored transposed, so that a decode step's scores q K^T are a plain product over
# the minor-most slots; XLA:CPU runs the transposed-operand form of these many small products slower
# (docs/performance.md#head-major-value-cache-and-transposed-key-cache).
K_CACHE_AXES = ("layers", "batch", "kv_heads", "head_dim", "cache_length")


@flax.struct.dataclass
class KVCache:
    """Key/value cache for incremental decoding.

    Attributes:
      k: [L, B, K, D, S] cached keys, transposed (slot s of row b is ``k[:, b, :, :, s]``; see ``K_CACHE_AXES``).
      v: [L, B, K, S, D] cached values.
        Per layer (the layout of ``Transformer.hidden_states(..., layer_params=...)``), k and v are tuples of L
        arrays without the leading axis.
      valid: bool [B, S], True where a slot holds a real (non-padding) token.
      next_position: int32 [B], the rotary position the next real token of each row gets.
      end: int32 scalar, the next slot to write (all rows write the same slots; padding is masked by ``valid``).
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    next_position: jax.Array
    end: jax.Array

    @property
    def max_length(self) -> int:
        return jax.tree.leaves(self.v)[0].shape[-2]


def write_cache(cache_k, cache_v, k, v, write_at, layer):
    """This call's keys k and values v [B, K, T, D] written at slot ``write_at`` of the cache (stacked, at index
    ``layer``, or per layer when ``layer`` is None). Returns the new cache and this layer's whole cache (kt, v)."""
    kt, v_new = k.transpose(0, 1, 3, 2).astype(cache_k.dtype), v.astype(cache_v.dtype)  # [B, K, D, T]
    if layer is None:
        cache_k = jax.lax.dynamic_update_slice(cache_k, kt, (0, 0, 0, write_at))
        cache_v = jax.lax.dynamic_update_slice(cache_v, v_new, (0, 0, write_at, 0))
        return cache_k, cache_v, cache_k, cache_v
    cache_k = jax.lax.dynamic_update_slice(cache_k, kt[None], (layer, 0, 0, 0, write_at))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v_new[None], (layer, 0, 0, write_at, 0))
    all_kt = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False)
    all_v = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False)
    return cache_k, cache_v, all_kt, all_v
