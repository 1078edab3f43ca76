"""The decoder-only transformer (LLaMA / Mistral / Qwen2 / GLM / SmolLM2) as one Flax NNX module.

Layers are stored stacked (leading ``layers`` axis) and run with ``lax.scan``, so compile time does not grow with
depth. Every parameter carries ``logical_axes`` metadata, mapped to mesh axes by :mod:`spar_jax.parallel`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.kernels.attention import AttentionKernel, causal_self_attention, resolve
from spar_jax.models import layers as L
from spar_jax.models.cache import CACHE_AXES, K_CACHE_AXES, KVCache, write_cache
from spar_jax.models.config import ModelConfig
from spar_jax.models.layout import PLAIN, DecodeLayout
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
        "attn_norm": (e,),
        "q": (e, h, d),
        "k": (e, k, d),
        "v": (e, k, d),
        "o": (h, d, e),
        "mlp_norm": (e,),
        "gate": (e, m),
        "up": (e, m),
        "down": (m, e),
    }
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


def _windowed(base_mask: jax.Array, distance: jax.Array, window) -> jax.Array:
    """base_mask bool [B, T, S] limited to keys less than ``window`` positions back (0 = unlimited); ``distance``
    [T, S] or [B, T, S] is query position - key position; ``window`` a Python int or a traced int32 scalar."""
    near = (window == 0) | (distance < window)
    return base_mask & (near if near.ndim == 3 else near[None])


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

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        *,
        cache: KVCache | None = None,
        layer_params=None,
        layout: DecodeLayout = PLAIN,
    ):
        hidden, new_cache = self.hidden_states(
            input_ids, attention_mask, cache=cache, layer_params=layer_params, layout=layout
        )
        logits = self.logits(hidden)
        return logits if cache is None else (logits, new_cache)

    def logits(self, hidden: jax.Array, head: jax.Array | None = None, *, layout: DecodeLayout = PLAIN) -> jax.Array:
        """float32 logits [B, T, V] of final hidden states [B, T, E]. ``head``: the output projection in ``layout``'s
        form (default ``unembed()``, the plain form [E, V]; the CPU layout's is out-major [V, E])."""
        head = self.unembed() if head is None else head
        return constrain(layout.logits(hidden, head.astype(self.dtype)), ("batch", "length", "vocab"), self.shard)

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
        self,
        input_ids,
        attention_mask=None,
        *,
        segment_ids=None,
        cache: KVCache | None = None,
        layer_params=None,
        layout: DecodeLayout = PLAIN,
        last_only=False,
        empty_cache=False,
    ):
        """Final-normed hidden states [B, T, E] (compute dtype) and the updated cache (None without a cache).

        Without a cache this is the forward of training and scoring; with one, the T tokens are appended to it at
        ``cache.end`` (a prefill, or a decode step of T = 1).

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
        independent of depth). ``layer_params`` (from ``unstacked_layers()``, or in another ``layout``'s form, e.g.
        ``cpu_layout.decode_params``) runs them as an unrolled loop over separate per-layer arrays instead, with a
        per-layer cache: XLA:CPU copies every layer's weights out of the stack on each scan step, which dominates a
        decode step there; the result is the same. Without ``scan_layers``, a call without a cache unrolls over
        ``unstacked_layers()`` (training on CPU: no per-layer weight copies, stacked residuals or zero-filled
        gradient stacks; about twice the compile time). ``layout`` says how ``layer_params`` are laid out
        (``spar_jax.models.layout``); the model's own parameters are in the plain layout.
        """
        input_ids = jnp.asarray(input_ids, jnp.int32)
        b, t = input_ids.shape
        mask = jnp.ones((b, t), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        if cache is None:
            geometry = self._forward_geometry(mask, segment_ids)
        elif segment_ids is not None:
            raise ValueError("segment_ids (packed shared-prefix sequences) needs a forward pass without a cache")
        else:
            geometry = self._cache_geometry(mask, cache)
        x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"), self.shard)
        step = functools.partial(
            self._block,
            geometry=geometry,
            layout=layout,
            empty_cache=empty_cache,
            write_at=None if cache is None else (0 if empty_cache else cache.end),
        )
        caches = (None, None) if cache is None else (cache.k, cache.v)
        if layer_params is not None:
            x, caches = self._unrolled_layers(step, x, caches, geometry, layer_params, last_only, rope_once=True)
        elif cache is None and not self.scan_layers:
            x, caches = self._unrolled_layers(
                step, x, caches, geometry, self.unstacked_layers(), last_only, rope_once=False
            )
        else:
            x, caches = self._scanned_layers(step, x, caches, geometry, last_only)
        x = L.rms_norm(x, self.final_norm[...], self.config.rms_norm_eps)
        if cache is None:
            return x, None
        return x, KVCache(
            k=caches[0],
            v=caches[1],
            valid=geometry.key_valid,
            next_position=cache.next_position + mask.sum(1, dtype=jnp.int32),
            end=cache.end + t,
        )

    # -- what the T tokens attend to --------------------------------------------------------------------------------

    def _forward_geometry(self, mask: jax.Array, segment_ids) -> _Geometry:
        """Positions and masks of a forward without a cache: the T tokens attend to each other only."""
        t = mask.shape[1]
        positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
        distance = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]  # [T, T]
        base_mask = mask[:, None, :] & (distance >= 0)[None]
        if segment_ids is not None:
            seg = jnp.asarray(segment_ids, jnp.int32)
            base_mask = base_mask & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
            positions = jnp.maximum(jnp.sum(base_mask, axis=-1, dtype=jnp.int32) - 1, 0)
            distance = positions[:, :, None] - positions[:, None, :]  # [B, T, T]: windows count positions
        return self._geometry(positions, mask, base_mask, distance, mask, segment_ids)

    def _cache_geometry(self, mask: jax.Array, cache: KVCache) -> _Geometry:
        """Positions and masks of T tokens written at ``cache.end``: they attend to the cache's valid slots up to
        their own."""
        t = mask.shape[1]
        positions = jnp.maximum(cache.next_position[:, None] + jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
        key_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.end))
        distance = (cache.end + jnp.arange(t))[:, None] - jnp.arange(cache.max_length)[None, :]  # [T, S]
        base_mask = key_valid[:, None, :] & (distance >= 0)[None]
        return self._geometry(positions, key_valid, base_mask, distance, mask, None)

    def _geometry(self, positions, key_valid, base_mask, distance, valid, segment_ids) -> _Geometry:
        cfg = self.config
        windows = cfg.layer_windows()
        spans = dict(valid=valid, segment_ids=segment_ids, windows=tuple(int(w) for w in windows))  # for a kernel
        if (windows == windows[0]).all():
            # One mask for every layer, built once: per-layer masks would be recomputed (and, when training, saved
            # for the backward pass) in every layer.
            base_mask, windows = _windowed(base_mask, distance, int(windows[0])), None
        return _Geometry(positions, key_valid, base_mask, distance, windows, spans)

    # -- the layer loop ---------------------------------------------------------------------------------------------

    def _remat(self, block):
        if self.remat == "none":
            return block
        return jax.checkpoint(block, policy=REMAT_POLICIES[self.remat], prevent_cse=False)

    def _scanned_layers(self, step, x, caches, geometry: _Geometry, last_only: bool):
        """The layers under ``lax.scan`` over the stacked parameters (and a stacked cache)."""
        n = self.config.num_hidden_layers
        cos, sin = L.rope_cos_sin(geometry.positions, self.config.rope)  # scan operands: computed once anyway
        block = self._remat(functools.partial(step, cos=cos, sin=sin, last_only=False))
        params = {k: v.astype(self.dtype) for k, v in self.layers.arrays().items()}
        xs = (params, None if geometry.windows is None else jnp.asarray(geometry.windows), jnp.arange(n))
        if not last_only:
            (x, *caches), _ = jax.lax.scan(block, (x, *caches), xs)
            return x, tuple(caches)
        # Layers 0..L-2 index the stacks themselves (as scan does with xs): slicing off the last layer would copy
        # the weights.
        (x, *caches), _ = jax.lax.scan(
            lambda c, i: block(c, jax.tree.map(lambda a: a[i], xs)), (x, *caches), jnp.arange(n - 1)
        )
        last = self._remat(functools.partial(step, cos=cos, sin=sin, last_only=True))
        (x, *caches), _ = last((x, *caches), jax.tree.map(lambda a: a[n - 1], xs))
        return x, tuple(caches)

    def _unrolled_layers(self, step, x, caches, geometry: _Geometry, layer_params, last_only: bool, rope_once: bool):
        """The layers as a Python loop over separate per-layer parameters (and a per-layer cache). ``rope_once``:
        the rotary table materialized once (the callers that pass ``layer_params``, i.e. prefill and decode): XLA
        would fuse it into every layer's q and k and recompute it there, per head
        (docs/performance.md#materialized-producers)."""
        n = self.config.num_hidden_layers
        rope = functools.partial(L.rope_cos_sin, rope=self.config.rope)
        cos, sin = L.materialized(rope, geometry.positions) if rope_once else rope(geometry.positions)
        block = self._remat(functools.partial(step, cos=cos, sin=sin, last_only=False))
        last = self._remat(functools.partial(step, cos=cos, sin=sin, last_only=True)) if last_only else block
        ck, cv = caches
        ks, vs = [None] * n, [None] * n
        windows = [None] * n if geometry.windows is None else [int(w) for w in geometry.windows]
        for i, (p, window) in enumerate(zip(layer_params, windows, strict=True)):
            p = {k: v.astype(self.dtype) for k, v in p.items()}
            layer_cache = (None, None) if ck is None else (ck[i], cv[i])
            (x, ks[i], vs[i]), _ = (last if i == n - 1 else block)((x, *layer_cache), (p, window, None))
        return x, ((None, None) if ck is None else (tuple(ks), tuple(vs)))

    # -- one decoder layer (pure in its inputs) -------------------------------------------------------------------

    def _block(
        self, carry, xs, *, geometry: _Geometry, cos, sin, layout: DecodeLayout, write_at, last_only, empty_cache
    ):
        """One layer. ``layer`` is its index into a stacked [L, B, K, S, D] cache, or None for a per-layer cache;
        ``window`` its attention window (0 = unlimited), or None when ``geometry.base_mask`` already holds the one
        window of all layers. ``last_only``: keys and values for every position, the rest for the last one (x
        becomes [B, 1, E]). ``empty_cache``: see ``hidden_states``."""
        cfg = self.config
        x, cache_k, cache_v = carry
        p, window, layer = xs
        h = L.rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
        q, k, v = layout.qkv(h, p, cfg)
        if cfg.attention_bias:
            q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
        q = L.apply_rope(q, cos, sin, cfg.rope)
        k = L.apply_rope(k, cos, sin, cfg.rope)
        q = constrain(q, ("batch", "length", "heads", "head_dim"), self.shard)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, D]
        mask = geometry.base_mask if window is None else _windowed(geometry.base_mask, geometry.distance, window)
        if cache_k is not None:
            cache_k, cache_v, all_kt, all_v = write_cache(cache_k, cache_v, k, v, write_at, layer)
        if last_only:
            q, mask, x = q[:, -1:], mask[:, -1:], x[:, -1:]
        if cache_k is None or empty_cache or cache_v.shape[-2] == k.shape[2]:
            # This call's keys are all the keys: no cache, or a prefill into an empty cache (a cache of exactly T
            # slots must start at slot 0, so it is empty too).
            attn = self._fresh_attention(q, k, v, mask[..., : k.shape[2]], geometry, window)
        else:
            attn = layout.cached_attention(q, all_kt, all_v, mask, self.dtype)
        x = x + layout.output(attn.reshape(*attn.shape[:2], -1), p)
        x = constrain(x, ("batch", "length", "embed"), self.shard)
        h = L.rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
        x = x + layout.mlp(h, p)
        x = constrain(x, ("batch", "length", "embed"), self.shard)
        return (x, cache_k, cache_v), None

    def _fresh_attention(self, q, k, v, mask, geometry: _Geometry, window):
        """Attention over this call's own keys. With every position queried, query and key slots are the same
        positions and the mask is causal: ``self.attention``'s kernel. One query (a last-position prefill's last
        layer) runs the formula."""
        if q.shape[1] != k.shape[2]:
            return L.attention(q, k, v, mask)
        layer_window = geometry.spans["windows"][0] if window is None else window
        return causal_self_attention(
            q,
            k,
            v,
            mask,
            kernel=self.attention,
            xla_attention=L.causal_attention,
            window=layer_window,
            shard=self.shard,
            **geometry.spans,
        )


class _Geometry(NamedTuple):
    """What the T tokens of a call attend to, shared by every layer.

    Attributes:
      positions: int32 [B, T] rotary positions.
      key_valid: bool [B, S] real key slots (S = T without a cache).
      base_mask: bool [B, T, S] causal mask over real keys (with packed segments, and the one window of all layers
        when ``windows`` is None).
      distance: int [T, S] or [B, T, S], query position - key position, for per-layer windows.
      windows: int32 [L] per-layer windows, or None when ``base_mask`` holds the one window of all layers.
      spans: the mask's parts for an attention kernel (``kernels.attention.causal_self_attention``).
    """

    positions: jax.Array
    key_valid: jax.Array
    base_mask: jax.Array
    distance: jax.Array
    windows: object
    spans: dict
