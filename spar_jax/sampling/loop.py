"""The device side of generation: one jitted function = prefill + a ``lax.while_loop`` decode state machine.

Shapes: B prompt rows (a batch bucket), T prompt slots (a length bucket, left-padded), n samples per prompt,
R = B * n decode rows (sample j of prompt i is row i * n + j), N new-token slots (a max-new-tokens bucket).

The prompt batch is prefilled once; the cache rows are then repeated n times on device, so a prompt is never
prefilled twice. Decoding runs in *segments* of geometrically growing room (e.g. 256, 1024, ... new tokens):
each segment is a ``while_loop`` over a cache that is only as long as its segment needs, so attention reads
O(tokens so far) rather than O(T + N) per step, and a segment starts only if some row is still running. A row stops
on a stop id (EOS or a stop-string token) or at ``max_new_tokens``; the loop exits as soon as every row has stopped.
The first token is sampled from the prefill's logits; each step then feeds the last token (writing its K/V) and
samples the next from the logits it gives, so the last sampled token is never fed. Nothing returns to the host until
the whole batch is done.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.models import cpu_layout
from spar_jax.models.layout import PLAIN, DecodeLayout
from spar_jax.models.transformer import CACHE_AXES, K_CACHE_AXES, KVCache
from spar_jax.parallel import constrain
from spar_jax.sampling import strategies


@dataclasses.dataclass(frozen=True)
class LoopShape:
    """The static part of a compilation (with the shapes of the prompt arrays).

    Attributes:
      n: samples per prompt.
      max_new: N, the bucketed number of new-token slots.
      first_segment / segment_growth: new tokens of the first decode segment and the factor between segments.
      candidates: the sampler's static candidate bound C.
      prefill_rows: prefill this many prompt rows at a time (a divisor of B; 0 = all B at once, see ``prefill``).
    """

    n: int
    max_new: int
    first_segment: int = 256
    segment_growth: int = 4
    candidates: int = 64
    prefill_rows: int = 0

    def segments(self) -> tuple[int, ...]:
        """Cumulative new tokens per segment (the last is N). The cache of a segment of c tokens holds
        ``cache_slots(T, c)`` slots."""
        need = self.max_new
        caps, cap = [], max(self.first_segment, 1)
        while cap < need:
            caps.append(cap)
            cap *= max(self.segment_growth, 2)
        caps.append(need)
        return tuple(caps)


# Cache slots come in multiples of this: XLA:CPU runs a decode step's scores q K^T faster over a multiple of 16 slots
# (docs/performance.md#cache-slot-multiple); the extra slots are never valid, so attention ignores them.
SLOT_MULTIPLE = 16


def cache_slots(prompt_slots: int, new_tokens: int) -> int:
    """Cache slots for T prompt slots and a segment of c new tokens: T + c - 1 (the last token is never fed), rounded
    up to a multiple of ``SLOT_MULTIPLE``."""
    need = prompt_slots + new_tokens - 1
    return -(-need // SLOT_MULTIPLE) * SLOT_MULTIPLE


class Sampling(NamedTuple):
    """Traced per-call values (never static, so they never trigger a compile)."""

    temperature: jax.Array  # float32 []
    top_k: jax.Array  # int32 []
    top_p: jax.Array  # float32 []
    max_new_tokens: jax.Array  # int32 [], <= LoopShape.max_new
    stop_ids: jax.Array  # int32 [S], padded with -1
    seed: jax.Array  # int32 []


class Output(NamedTuple):
    """Per decode row: tokens int32 [R, N] (0 past ``lengths``), logprobs float32 [R, N] (raw model log-probs),
    lengths int32 [R], stopped bool [R] (True when the last token is a stop id, False when the length ran out)."""

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    stopped: jax.Array


class _State(NamedTuple):
    step: jax.Array  # tokens sampled so far (the next token's index)
    done: jax.Array  # [R]
    out: Output


def _map_kv(cache: KVCache, fn, shard) -> KVCache:
    """Apply ``fn(x, slot_axis)`` to every K/V array (stacked or per-layer, see ``KVCache``) and re-constrain it;
    ``slot_axis`` is the index of x's cache_length axis."""

    def over(arrays, axes):
        slot = axes.index("cache_length") - len(axes)
        return jax.tree.map(lambda x: constrain(fn(x, x.ndim + slot), axes[-x.ndim :], shard), arrays)

    return cache.replace(k=over(cache.k, K_CACHE_AXES), v=over(cache.v, CACHE_AXES))


def _grow(cache: KVCache, slots: int, shard) -> KVCache:
    """Append ``slots`` empty slots to every row of the cache."""
    cache = _map_kv(cache, lambda x, at: jnp.pad(x, [(0, slots if i == at else 0) for i in range(x.ndim)]), shard)
    valid = constrain(jnp.pad(cache.valid, ((0, 0), (0, slots))), ("batch", "cache_length"), shard)
    return cache.replace(valid=valid)


def _repeat_rows(cache: KVCache, n: int, shard) -> KVCache:
    if n == 1:
        return cache
    cache = _map_kv(cache, lambda x, _: jnp.repeat(x, n, axis=x.ndim - 4), shard)
    return cache.replace(
        valid=jnp.repeat(cache.valid, n, axis=0), next_position=jnp.repeat(cache.next_position, n, axis=0)
    )


def _pick(logits, row_keys, step, params: Sampling, candidates: int):
    """Sample one token per row at ``step`` and return (tokens [R], raw log-probs [R])."""
    uniforms = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, step)))(row_keys)
    tokens = strategies.sample(logits, uniforms, params.temperature, params.top_k, params.top_p, candidates=candidates)
    return tokens, strategies.token_logprobs(logits, tokens)


def _record(state: _State, tokens, logprobs, params: Sampling) -> tuple[_State, jax.Array]:
    """Write the tokens sampled at ``state.step``, update the per-row stop flags; also return the tokens to feed."""
    s, out, done = state.step, state.out, state.done
    tokens = jnp.where(done, 0, tokens)
    logprobs = jnp.where(done, 0.0, logprobs)
    hit = ~done & jnp.isin(tokens, params.stop_ids)
    out = Output(
        tokens=out.tokens.at[:, s].set(tokens),
        logprobs=out.logprobs.at[:, s].set(logprobs),
        lengths=jnp.where(done, out.lengths, s + 1),
        stopped=out.stopped | hit,
    )
    done = done | hit | (s + 1 >= params.max_new_tokens)
    return state._replace(step=s + 1, done=done, out=out), tokens


def prefill(
    model,
    prompt_ids,
    prompt_mask,
    slots: int,
    *,
    rows: int,
    layer_params=None,
    head_t=None,
    layout: DecodeLayout = PLAIN,
):
    """The prompt batch's last-position logits float32 [B, V] and its cache (``slots`` slots, the prompt in the first
    T), computed ``rows`` prompt rows at a time (a divisor of B; ``cpu_layout.prefill_in_chunks``).

    Only the last position's logits: the last layer runs its MLP and attention for one query, and no T x V prompt
    logits are made.
    """

    def one(ids, mask):
        cache = model.init_cache(ids.shape[0], slots, per_layer=layer_params is not None)
        hidden, cache = model.hidden_states(
            ids, mask, cache=cache, layer_params=layer_params, layout=layout, last_only=True, empty_cache=True
        )
        return model.logits(hidden, head_t, layout=layout)[:, 0], cache

    if rows >= prompt_ids.shape[0]:
        return one(prompt_ids, prompt_mask)
    return cpu_layout.prefill_in_chunks(one, prompt_ids, prompt_mask, rows)


def decode(
    model,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    live: jax.Array,
    row_ids: jax.Array,
    params: Sampling,
    *,
    shape: LoopShape,
    layer_params=None,
    head_t=None,
    layout: DecodeLayout = PLAIN,
) -> Output:
    """Generate up to ``shape.max_new`` tokens for each of ``shape.n`` samples of every prompt.

    Args:
      model: a Transformer (see spar_jax.models.transformer).
      prompt_ids: int32 [B, T], left-padded; prompt_mask: bool [B, T], True on real tokens.
      live: bool [B]; False rows are batch padding (done from the start; their outputs stay empty).
      row_ids: int32 [B], a stable id per prompt (its index in the caller's request list). A draw's uniform is
        ``fold_in(fold_in(fold_in(key(seed), row_id), sample), step)``, so it never depends on batching (the logits
        do, to float32 rounding: docs/sampling.md#same-tokens).
      params: traced sampling values.
      layer_params: None (layers under ``lax.scan``) or per-layer parameter dicts in ``layout``'s form, for an
        unrolled layer loop with a per-layer cache (faster on XLA:CPU, see ``Transformer.hidden_states``).
      head_t: None, or the output projection in ``layout``'s form (``cpu_layout.decode_params``).
      layout: how ``layer_params`` and ``head_t`` are laid out (``spar_jax.models.layout``).
    Returns:
      ``Output`` with R = B * n rows.
    """
    shard = model.shard
    b, t = prompt_ids.shape
    n, big_n = shape.n, shape.max_new
    rows = b * n
    prompt_ids = constrain(prompt_ids.astype(jnp.int32), ("batch", "length"), shard)
    prompt_mask = constrain(prompt_mask.astype(bool), ("batch", "length"), shard)

    caps = shape.segments()
    logits, cache = prefill(
        model,
        prompt_ids,
        prompt_mask,
        cache_slots(t, caps[0]),
        rows=shape.prefill_rows or b,
        layer_params=layer_params,
        head_t=head_t,
        layout=layout,
    )
    logits = constrain(jnp.repeat(logits, n, axis=0), ("batch", "vocab"), shard)
    cache = _repeat_rows(cache, n, shard)

    base = jax.random.key(params.seed)
    sample_ids = jnp.tile(jnp.arange(n, dtype=jnp.int32), b)
    row_keys = jax.vmap(lambda r, j: jax.random.fold_in(jax.random.fold_in(base, r), j))(
        jnp.repeat(row_ids.astype(jnp.int32), n), sample_ids
    )
    zeros = jnp.zeros((rows, big_n), jnp.int32)
    out = Output(
        tokens=constrain(zeros, ("batch", None), shard),
        logprobs=constrain(zeros.astype(jnp.float32), ("batch", None), shard),
        lengths=jnp.zeros((rows,), jnp.int32),
        stopped=jnp.zeros((rows,), bool),
    )
    done = ~jnp.repeat(live.astype(bool), n)
    live_mask = jnp.ones((rows, 1), bool)

    def sample_next(state, logits):
        tokens, logprobs = _pick(logits, row_keys, state.step, params, shape.candidates)
        return _record(state, tokens, logprobs, params)

    def body(carry):
        # Feed token s - 1 (writing cache slot T + s - 1), then sample token s. The feed runs for rows that have
        # stopped too: skipping it with lax.cond makes XLA copy the whole cache every step.
        state, cache, tokens = carry
        hidden, cache = model.hidden_states(
            tokens[:, None], live_mask, cache=cache, layer_params=layer_params, layout=layout
        )
        state, tokens = sample_next(state, model.logits(hidden, head_t, layout=layout)[:, 0])
        return state, cache, tokens

    def run(carry, j):
        state, cache, tokens = carry
        room = cache_slots(t, caps[j]) - cache.max_length  # 0 when rounding gave the last segment enough
        if room > 0:
            cache = _grow(cache, room, shard)

        def cond(carry):
            s = carry[0]
            return (s.step < caps[j]) & ~s.done.all()

        carry = jax.lax.while_loop(cond, body, (state, cache, tokens))
        if j + 1 == len(caps):
            return carry[0]
        return jax.lax.cond(carry[0].done.all(), lambda c: c[0], lambda c: run(c, j + 1), carry)

    state = _State(step=jnp.zeros((), jnp.int32), done=done, out=out)
    state, tokens = sample_next(state, logits)  # token 0, from the prompt's logits
    return run((state, cache, tokens), 0).out


LAYER_LOOPS = ("auto", "scan", "unrolled")


class DecodeLoop:
    """A thin stateful shell around ``decode``: holds the split model and one ``jax.jit``, counts compilations.

    ``layer_loop``: "scan" (stacked layers in the plain layout; compile time independent of depth), "unrolled"
    (separate per-layer arrays in the XLA:CPU decode layout, ``spar_jax.models.cpu_layout``: an extra copy of the
    layer weights, no per-step weight copies on XLA:CPU) or "auto" (unrolled on CPU, else scan).
    ``prefill_chunk``: tokens per prefill chunk (see ``prefill``), 0 for the whole batch at once, or "auto"
    (``cpu_layout.CPU_PREFILL_CHUNK`` on CPU, else 0). Chunking needs a batch axis that is not sharded (a chunk
    would otherwise sit on some of the devices only).
    ``traces`` counts how many times ``decode`` was traced (= compiled, since jit caches by shape and static args);
    ``shapes`` logs (B, T, R, N) of each trace: B prompt rows prefilled, R decode rows.
    """

    def __init__(self, model, *, layer_loop: str = "auto", prefill_chunk: int | str = "auto"):
        if layer_loop not in LAYER_LOOPS:
            raise ValueError(f"layer_loop={layer_loop!r}; choose one of {LAYER_LOOPS}")
        if layer_loop == "auto":
            layer_loop = "unrolled" if jax.default_backend() == "cpu" else "scan"
        self.layer_loop = layer_loop
        sharded = model.shard is not None and model.shard.axis_size("batch") > 1
        if prefill_chunk == "auto":
            prefill_chunk = cpu_layout.CPU_PREFILL_CHUNK if jax.default_backend() == "cpu" and not sharded else 0
        if not isinstance(prefill_chunk, int) or prefill_chunk < 0:
            raise ValueError(f"prefill_chunk={prefill_chunk!r}; give a number of tokens >= 0 (0 = no chunks) or 'auto'")
        if prefill_chunk and sharded:
            raise ValueError(
                f"prefill_chunk={prefill_chunk} needs a batch axis that is not sharded; use 0 on this mesh"
            )
        self.prefill_chunk = prefill_chunk
        self.graphdef, self.state = nnx.split(model)
        unrolled = layer_loop == "unrolled"
        self.layout = cpu_layout.CPU if unrolled else PLAIN
        self.layer_params, self.head_t = cpu_layout.decode_params(model) if unrolled else (None, None)
        self.shard = model.shard
        self.traces = 0
        self.shapes: list[tuple[int, int, int, int]] = []
        self._jit = jax.jit(self._run, static_argnames=("shape",))

    def _run(self, state, layer_params, head_t, prompt_ids, prompt_mask, live, row_ids, params, *, shape):
        self.traces += 1
        b, t = prompt_ids.shape
        self.shapes.append((b, t, b * shape.n, shape.max_new))
        model = nnx.merge(self.graphdef, state)
        return decode(
            model,
            prompt_ids,
            prompt_mask,
            live,
            row_ids,
            params,
            shape=shape,
            layer_params=layer_params,
            head_t=head_t,
            layout=self.layout,
        )

    def __call__(self, prompt_ids, prompt_mask, live, row_ids, params: Sampling, *, shape: LoopShape) -> Output:
        """Dispatch one batch (asynchronously: read the returned arrays to wait)."""
        b, t = prompt_ids.shape
        shape = dataclasses.replace(shape, prefill_rows=cpu_layout.chunk_rows(b, t, self.prefill_chunk))
        return self._jit(
            self.state, self.layer_params, self.head_t, prompt_ids, prompt_mask, live, row_ids, params, shape=shape
        )
