"""The decoder-only transformer (LLaMA / Mistral / Qwen2 / GLM / SmolLM2) as one Flax NNX module.

Layers are stored stacked (leading ``layers`` axis) and run with ``lax.scan``, so compile time does not grow with
depth. Every parameter carries ``logical_axes`` metadata, mapped to mesh axes by :mod:`spar_jax.parallel`.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.kernels.attention import AttentionKernel, causal_self_attention, resolve
from spar_jax.models import layers as L
from spar_jax.models.config import ModelConfig
from spar_jax.parallel import ShardingContext, constrain

# Per-layer parameter name -> logical axes (the stacked array has a leading "layers" axis in addition).
LAYER_AXES: dict[str, tuple[str, ...]] = {
    "attn_norm": ("norm",),
    "q": ("embed", "heads", "head_dim"),
    "k": ("embed", "kv_heads", "head_dim"),
    "v": ("embed", "kv_heads", "head_dim"),
    "q_bias": ("heads", "head_dim"),
    "k_bias": ("kv_heads", "head_dim"),
    "v_bias": ("kv_heads", "head_dim"),
    "o": ("heads", "head_dim", "embed"),
    "mlp_norm": ("norm",),
    "gate": ("embed", "mlp"),
    "up": ("embed", "mlp"),
    "down": ("mlp", "embed"),
}
# The value cache, stacked [L, B, K, S, D]; a per-layer cache drops the leading "layers" axis. Head-major, so attention
# reads V without a transpose.
CACHE_AXES = ("layers", "batch", "kv_heads", "cache_length", "head_dim")
# The key cache, [L, B, K, D, S]: stored transposed, so that a decode step's scores q K^T are a plain product over
# the minor-most slots; XLA:CPU runs the transposed-operand form of these many small products slower
# (docs/performance.md#head-major-value-cache-and-transposed-key-cache).
K_CACHE_AXES = ("layers", "batch", "kv_heads", "head_dim", "cache_length")
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's parameters (without the layers axis)."""
    e, m, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    h, k = cfg.num_attention_heads, cfg.num_key_value_heads
    shapes = {
        "attn_norm": (e,), "q": (e, h, d), "k": (e, k, d), "v": (e, k, d), "o": (h, d, e),
        "mlp_norm": (e,), "gate": (e, m), "up": (e, m), "down": (m, e),
    }  # fmt: skip
    if cfg.attention_bias:
        shapes.update(q_bias=(h, d), k_bias=(k, d), v_bias=(k, d))
    return shapes


def split_layers(stacked: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], ...]:
    """Stacked layer parameters {name: [L, ...]} -> L per-layer dicts {name: [...]}."""
    n = len(next(iter(stacked.values())))
    # split, not indexing: its transpose (the gradient) is one concatenate; XLA:CPU turns the transpose of n
    # indexings into n full-size pads added together.
    parts = {name: jnp.split(a, n) for name, a in stacked.items()}
    return tuple({name: p[i][0] for name, p in parts.items()} for i in range(n))


# The fused, out-major layout of one layer's projections (see ``fuse_layer``): name -> logical axes. The fused output
# dimensions concatenate differently sharded pieces, so they are not sharded.
FUSED_AXES: dict[str, tuple[str | None, ...]] = {
    "qkv_t": (None, "embed"),
    "o_t": ("embed", None),
    "gate_up_t": (None, "embed"),
    "down_t": ("embed", "mlp"),
}
_UNFUSED = ("q", "k", "v", "o", "gate", "up", "down")


def fuse_layer(p: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One layer's parameters with the projections fused and stored out-major ([out, in], for ``L.linear_t``):
    qkv_t [(H + 2K) * D, E], o_t [E, H * D], gate_up_t [2M, E], down_t [E, M]; norms and biases unchanged.

    ``_block`` accepts this layout as well as the plain one. It is the decode layout on XLA:CPU: one product per
    input instead of several (a shared input makes XLA materialize its broadcast), in the form ``L.linear_t``
    streams fastest when only a few rows are decoded; with it, a one-token step attends with
    ``L.decode_attention`` (loops of multiply-adds, not XLA:CPU's batched dots).
    """
    e = p["q"].shape[0]
    fused = {name: a for name, a in p.items() if name not in _UNFUSED}
    fused["qkv_t"] = jnp.concatenate([p[n].reshape(e, -1) for n in ("q", "k", "v")], axis=1).T
    fused["o_t"] = p["o"].reshape(-1, e).T
    fused["gate_up_t"] = jnp.concatenate([p["gate"], p["up"]], axis=1).T
    fused["down_t"] = p["down"].T
    return fused


def _windowed(base_mask: jax.Array, distance: jax.Array, window) -> jax.Array:
    """base_mask bool [B, T, S] limited to keys less than ``window`` positions back (0 = unlimited); ``distance``
    [T, S] or [B, T, S] is query position - key position; ``window`` a Python int or a traced int32 scalar."""
    near = (window == 0) | (distance < window)
    return base_mask & (near if near.ndim == 3 else near[None])


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


class Blocks(nnx.Module):
    """The stacked parameters of all decoder layers: attribute name -> Param [L, ...]."""

    def __init__(self, cfg: ModelConfig, *, param_dtype, rngs: nnx.Rngs):
        for name, shape in layer_shapes(cfg).items():
            full = (cfg.num_hidden_layers, *shape)
            if name.endswith("norm"):
                value = jnp.ones(full, param_dtype)
            elif name.endswith("bias"):
                value = jnp.zeros(full, param_dtype)
            else:
                value = (0.02 * jax.random.normal(rngs.params(), full)).astype(param_dtype)
            setattr(self, name, nnx.Param(value, logical_axes=("layers", *LAYER_AXES[name])))

    def arrays(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in LAYER_AXES if hasattr(self, name)}


class Transformer(nnx.Module):
    """Decoder-only transformer.

    Call: ``model(input_ids [B, T] int32, attention_mask [B, T] | None) -> logits [B, T, V] float32``; with
    ``cache=`` it returns ``(logits, new_cache)`` and appends the T tokens at ``cache.end``. Rotary positions come from
    the attention mask (cumulative count of real tokens), so a left-padded row equals the unpadded row.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: str = "none",
        scan_layers: bool = True,
        attention_impl: str | AttentionKernel = "auto",
        shard: ShardingContext | None = None,
        rngs: nnx.Rngs,
    ):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r}; choose one of {sorted(REMAT_POLICIES)}")
        self.attention = resolve(attention_impl)
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.param_dtype = jnp.dtype(param_dtype)
        self.remat = remat
        self.scan_layers = scan_layers
        self.shard = shard
        e, v = config.hidden_size, config.vocab_size
        self.embed = nnx.Param(
            (0.02 * jax.random.normal(rngs.params(), (v, e))).astype(param_dtype), logical_axes=("vocab", "embed")
        )
        self.layers = Blocks(config, param_dtype=param_dtype, rngs=rngs)
        self.final_norm = nnx.Param(jnp.ones((e,), param_dtype), logical_axes=("norm",))
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nnx.Param(
                (0.02 * jax.random.normal(rngs.params(), (e, v))).astype(param_dtype), logical_axes=("embed", "vocab")
            )
        )

    # -- public API ---------------------------------------------------------------------------------------------

    def __call__(self, input_ids, attention_mask=None, *, cache: KVCache | None = None, layer_params=None):
        hidden, new_cache = self.hidden_states(input_ids, attention_mask, cache=cache, layer_params=layer_params)
        logits = self.logits(hidden)
        return logits if cache is None else (logits, new_cache)

    def logits(self, hidden: jax.Array, head_t: jax.Array | None = None) -> jax.Array:
        """float32 logits [B, T, V] of final hidden states [B, T, E]; with ``head_t``, the output projection given
        out-major [V, E] (the decode layout, see ``fuse_layer``) and applied with ``L.linear_t``."""
        if head_t is None:
            logits = jnp.einsum(
                "bte,ev->btv", hidden, self.unembed().astype(self.dtype), preferred_element_type=jnp.float32
            )
        else:
            logits = L.linear_t(hidden, head_t.astype(self.dtype), dtype=jnp.float32)
        return constrain(logits, ("batch", "length", "vocab"), self.shard)

    def unembed(self) -> jax.Array:
        """The output projection [E, V] (the transposed embedding when tied)."""
        return self.embed[...].T if self.lm_head is None else self.lm_head[...]

    def unstacked_layers(self) -> tuple[dict[str, jax.Array], ...]:
        """The decoder layers' parameters as L separate per-layer dicts (a copy; see ``hidden_states``)."""
        return split_layers(self.layers.arrays())

    def init_cache(self, batch_size: int, max_length: int, dtype=None, *, per_layer: bool = False) -> KVCache:
        """An empty cache for ``batch_size`` rows and ``max_length`` slots (prompt + new tokens): stacked, or a tuple
        of per-layer arrays with ``per_layer`` (for ``hidden_states(..., layer_params=...)``)."""
        cfg = self.config
        dtype = dtype or self.dtype
        k_shape = (batch_size, cfg.num_key_value_heads, cfg.head_dim, max_length)
        v_shape = (batch_size, cfg.num_key_value_heads, max_length, cfg.head_dim)
        if per_layer:
            k = (constrain(jnp.zeros(k_shape, dtype), K_CACHE_AXES[1:], self.shard),) * cfg.num_hidden_layers
            v = (constrain(jnp.zeros(v_shape, dtype), CACHE_AXES[1:], self.shard),) * cfg.num_hidden_layers
        else:
            n = cfg.num_hidden_layers
            k = constrain(jnp.zeros((n, *k_shape), dtype), K_CACHE_AXES, self.shard)
            v = constrain(jnp.zeros((n, *v_shape), dtype), CACHE_AXES, self.shard)
        return KVCache(
            k=k,
            v=v,
            valid=jnp.zeros((batch_size, max_length), bool),
            next_position=jnp.zeros((batch_size,), jnp.int32),
            end=jnp.zeros((), jnp.int32),
        )

    def hidden_states(
        self, input_ids, attention_mask=None, *, segment_ids=None, cache: KVCache | None = None, layer_params=None,
        last_only=False, empty_cache=False,
    ):
        """Final-normed hidden states [B, T, E] (compute dtype) and the updated cache (None without a cache).

        ``segment_ids`` int [B, T] (no cache): several sequences sharing a prefix, packed in one row (see
        ``spar_jax.training.batches.pack_pair``). Segment 0 is the shared prefix; a token of segment k > 0 attends to
        segment 0 and to segment k only, and its rotary position counts the tokens it attends to. Each branch then
        sees exactly what it would see alone after the prefix, which is computed once.

        ``empty_cache``: the cache holds nothing yet (``cache.end`` is 0; a prefill into a cache sized for the tokens
        to come). This call's keys are then all the keys: attention runs over them alone, in causal blocks, instead of
        over every slot of the cache. (A cache of exactly T slots is known to be empty without the flag.)

        ``last_only``: return [B, 1, E], the last position's only (a prefill that needs one position's logits). The
        last layer then computes keys and values for every position (they go into the cache) but its queries,
        attention, output projection and MLP for the last position alone: 1/L of the prefill's work is skipped.

        With ``scan_layers`` (the default) the layers run under ``lax.scan`` over the stacked parameters (program size
        independent of depth). ``layer_params`` (from ``unstacked_layers()``, or those through ``fuse_layer``) runs
        them as an unrolled loop over separate per-layer arrays instead, with a per-layer cache: XLA:CPU copies every
        layer's weights out of the stack on each scan step, which dominates a decode step there; the result is the
        same. Without ``scan_layers``, a call without a cache unrolls over ``unstacked_layers()`` (training on CPU:
        no per-layer weight copies, stacked residuals or zero-filled gradient stacks; about twice the compile time).
        """
        cfg = self.config
        input_ids = jnp.asarray(input_ids, jnp.int32)
        b, t = input_ids.shape
        mask = jnp.ones((b, t), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        counts = jnp.cumsum(mask.astype(jnp.int32), axis=1)
        if cache is None:
            positions = jnp.maximum(counts - 1, 0)
            key_valid, q_slots, s = mask, jnp.arange(t), t
        else:
            if segment_ids is not None:
                raise ValueError("segment_ids (packed shared-prefix sequences) needs a forward pass without a cache")
            positions = jnp.maximum(cache.next_position[:, None] + counts - 1, 0)
            key_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.end))
            q_slots, s = cache.end + jnp.arange(t), cache.max_length
        k_slots = jnp.arange(s)
        distance = q_slots[:, None] - k_slots[None, :]  # [T, S]
        base_mask = key_valid[:, None, :] & (distance >= 0)[None]
        if segment_ids is not None:
            seg = jnp.asarray(segment_ids, jnp.int32)
            base_mask = base_mask & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
            positions = jnp.maximum(jnp.sum(base_mask, axis=-1, dtype=jnp.int32) - 1, 0)
            distance = positions[:, :, None] - positions[:, None, :]  # [B, T, T]: windows count positions
        windows = cfg.layer_windows()
        spans = dict(valid=mask, segment_ids=segment_ids, windows=tuple(int(w) for w in windows))  # for a kernel
        if (windows == windows[0]).all():
            # One mask for every layer, built once: per-layer masks would be recomputed (and, when training, saved
            # for the backward pass) in every layer.
            base_mask, windows = _windowed(base_mask, distance, int(windows[0])), None
        if layer_params is None:
            cos, sin = L.rope_cos_sin(positions, cfg.rope)  # scan operands: computed once anyway
        else:
            # Materialized once: XLA would fuse it into every layer's q and k and recompute it there, per head
            # (docs/performance.md#materialized-producers).
            cos, sin = L.materialized(functools.partial(L.rope_cos_sin, rope=cfg.rope), positions)

        x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"), self.shard)

        def make_step(last: bool):
            block = functools.partial(
                self._block, base_mask=base_mask, distance=distance, cos=cos, sin=sin,
                write_at=None if cache is None else (0 if empty_cache else cache.end), last_only=last,
                empty_cache=empty_cache, spans=spans,
            )  # fmt: skip
            if self.remat == "none":
                return block
            return jax.checkpoint(block, policy=REMAT_POLICIES[self.remat], prevent_cse=False)

        step = make_step(False)
        last_step = make_step(True) if last_only else step
        n = cfg.num_hidden_layers
        ck, cv = (None, None) if cache is None else (cache.k, cache.v)
        if layer_params is None and cache is None and not self.scan_layers:
            layer_params = self.unstacked_layers()
        if layer_params is None:
            params = {k: v.astype(self.dtype) for k, v in self.layers.arrays().items()}
            xs = (params, None if windows is None else jnp.asarray(windows), jnp.arange(n))
            if not last_only:
                (x, ck, cv), _ = jax.lax.scan(step, (x, ck, cv), xs)
            else:
                # Layers 0..L-2 index the stacks themselves (as scan does with xs): slicing off the last layer
                # would copy the weights.
                def body(carry, i):
                    return step(carry, jax.tree.map(lambda a: a[i], xs))

                (x, ck, cv), _ = jax.lax.scan(body, (x, ck, cv), jnp.arange(n - 1))
                (x, ck, cv), _ = last_step((x, ck, cv), jax.tree.map(lambda a: a[n - 1], xs))
        else:
            ks, vs = [None] * n, [None] * n
            per_layer = [None] * n if windows is None else [int(w) for w in windows]
            for i, (p, window) in enumerate(zip(layer_params, per_layer, strict=True)):
                p = {k: v.astype(self.dtype) for k, v in p.items()}
                layer_cache = (None, None) if cache is None else (ck[i], cv[i])
                (x, ks[i], vs[i]), _ = (last_step if i == n - 1 else step)((x, *layer_cache), (p, window, None))
            ck, cv = (None, None) if cache is None else (tuple(ks), tuple(vs))
        x = L.rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
        if cache is None:
            return x, None
        new_cache = KVCache(
            k=ck, v=cv, valid=key_valid, next_position=cache.next_position + mask.sum(1, dtype=jnp.int32), end=cache.end + t
        )
        return x, new_cache

    # -- one decoder layer (pure in its inputs) -------------------------------------------------------------------

    def _block(self, carry, xs, *, base_mask, distance, cos, sin, write_at, spans, last_only=False,
               empty_cache=False):
        """One layer. ``layer`` is its index into a stacked [L, B, K, S, D] cache, or None for a per-layer cache;
        ``window`` its attention window (0 = unlimited), or None when ``base_mask`` already holds the one window of all
        layers. ``last_only``: keys and values for every position, the rest for the last one (x becomes [B, 1, E]).
        ``empty_cache``: see ``hidden_states``. ``spans``: the mask's parts (real tokens, packed segments, the
        layers' windows) for ``self.attention``'s kernel."""
        cfg = self.config
        x, cache_k, cache_v = carry
        p, window, layer = xs
        h = L.rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
        if "qkv_t" in p:  # the fused layout (fuse_layer)
            nq, nk, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
            q, k, v = jnp.split(L.linear_t(h, p["qkv_t"]), [nq * d, (nq + nk) * d], axis=-1)
            q, k, v = q.reshape(*q.shape[:2], nq, d), k.reshape(*k.shape[:2], nk, d), v.reshape(*v.shape[:2], nk, d)
        else:
            q = jnp.einsum("bte,ehd->bthd", h, p["q"])
            k = jnp.einsum("bte,ekd->btkd", h, p["k"])
            v = jnp.einsum("bte,ekd->btkd", h, p["v"])
        if cfg.attention_bias:
            q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
        q = L.apply_rope(q, cos, sin, cfg.rope)
        k = L.apply_rope(k, cos, sin, cfg.rope)
        q = constrain(q, ("batch", "length", "heads", "head_dim"), self.shard)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, D]
        mask = base_mask if window is None else _windowed(base_mask, distance, window)
        if cache_k is not None:
            kt, v_new = k.transpose(0, 1, 3, 2).astype(cache_k.dtype), v.astype(cache_v.dtype)  # [B, K, D, T]
            if layer is None:
                cache_k = jax.lax.dynamic_update_slice(cache_k, kt, (0, 0, 0, write_at))
                cache_v = jax.lax.dynamic_update_slice(cache_v, v_new, (0, 0, write_at, 0))
                all_kt, all_v = cache_k, cache_v
            else:
                cache_k = jax.lax.dynamic_update_slice(cache_k, kt[None], (layer, 0, 0, 0, write_at))
                cache_v = jax.lax.dynamic_update_slice(cache_v, v_new[None], (layer, 0, 0, write_at, 0))
                all_kt = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False)
                all_v = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False)
        if last_only:
            q, mask, x = q[:, -1:], mask[:, -1:], x[:, -1:]
        if cache_k is None or empty_cache or cache_v.shape[-2] == k.shape[2]:
            # This call's keys are all the keys: no cache, or a prefill into an empty cache (a cache of exactly T
            # slots must start at slot 0, so it is empty too). With every position queried, query and key slots are
            # the same positions and the mask is causal.
            mask = mask[..., : k.shape[2]]
            if q.shape[1] == k.shape[2]:
                layer_window = spans["windows"][0] if window is None else window
                attn = causal_self_attention(q, k, v, mask, kernel=self.attention, xla_attention=L.causal_attention,
                                             window=layer_window, shard=self.shard, **spans)  # fmt: skip
            else:
                attn = L.attention(q, k, v, mask)
        elif "qkv_t" in p and q.shape[1] == 1:  # a decode step in the XLA:CPU layout (see fuse_layer)
            attn = L.decode_attention(q, all_kt, all_v, mask)
        else:
            attn = L.attention(q, all_kt.astype(self.dtype), all_v.astype(self.dtype), mask, k_transposed=True)
        # The output projection as one [H * D, E] matmul (see L.attention).
        attn = attn.reshape(*attn.shape[:2], -1)
        if "o_t" in p:
            x = x + L.linear_t(attn, p["o_t"])
        else:
            x = x + jnp.einsum("btf,fe->bte", attn, p["o"].reshape(-1, p["o"].shape[-1]))
        x = constrain(x, ("batch", "length", "embed"), self.shard)
        h = L.rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
        if "gate_up_t" in p:
            x = x + L.gated_mlp_fused(h, p["gate_up_t"], p["down_t"])
        else:
            x = x + L.gated_mlp(h, p["gate"], p["up"], p["down"])
        x = constrain(x, ("batch", "length", "embed"), self.shard)
        return (x, cache_k, cache_v), None
