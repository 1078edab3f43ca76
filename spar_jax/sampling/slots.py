"""The device programs of continuous batching: a fixed set of R decode slots over one dense KV cache.

Shapes: R decode slots, C cache slots, N new-token slots (a max-new-tokens bucket), P prefilled prompt rows, T their
prompt slots (a length bucket), V vocabulary.

Every slot writes the same cache slot at each step (``cache.end``, as in the static loop), so one decode step is the
static loop's step. A slot's sample occupies a contiguous window of the cache that ends at ``cache.end``: a prompt
prefilled into T slots is inserted at ``[end - T, end)`` of its row (the rest of the row is marked invalid), and
every step appends one slot. Attention masks by ``cache.valid`` and rotary positions come from
``cache.next_position``, so a window's place in the row changes nothing: the slot distance between two tokens is
their position distance, as sliding windows require.

``end`` only grows. With W = T_max + N - 1 (the longest window a sample can need) the cache holds C = W + G slots;
when ``end`` reaches C, ``roll`` drops the oldest G slots of every row (no live window reaches back past ``end - W``)
and ``end`` goes back to W. A roll moves the cache once per G steps; every step reads all C slots, so G ~ sqrt(2W)
(``roll_slots``) keeps both costs small.

Sampling randomness: sample j of request i draws token s with the uniform of
``fold_in(fold_in(fold_in(key(seed), i), j), s)``, exactly as the static loop does, so the uniform depends neither on
the slot nor on what else is decoding. The logits it is applied to agree with the static loop's to float32 rounding
only (other prefill and decode row counts, the window at other cache slots), so a draw at a near-tie can differ
(docs/sampling.md#same-tokens).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from spar_jax.models.layout import PLAIN, DecodeLayout
from spar_jax.models.transformer import KVCache
from spar_jax.parallel import constrain
from spar_jax.sampling import strategies
from spar_jax.sampling.loop import SLOT_MULTIPLE, Output, Sampling, _map_kv


class Slots(NamedTuple):
    """The decode state of R slots (a jit argument, donated to every program that updates it)."""

    cache: KVCache  # R rows, C slots
    tokens: jax.Array  # int32 [R], each slot's last sampled token (the next step feeds it)
    step: jax.Array  # int32 [R], tokens sampled so far for the slot's sample (the next token's index)
    done: jax.Array  # bool [R]; an empty slot is done
    keys: jax.Array  # uint32 key data [R, ...], the sample's key (seed, request, sample)
    out: Output  # per slot: tokens / logprobs [R, N], lengths [R], stopped [R]


def window_slots(prompt_slots: int, max_new: int) -> int:
    """W: cache slots a sample can need (T prompt slots + N - 1 fed tokens), rounded up to ``SLOT_MULTIPLE``."""
    return -(-(prompt_slots + max_new - 1) // SLOT_MULTIPLE) * SLOT_MULTIPLE


def roll_slots(window: int) -> int:
    """G: slots dropped per roll, ~sqrt(2W) (minimizing W + G + 2(W + G)/G slot reads and writes per step), a
    multiple of ``SLOT_MULTIPLE``."""
    return max(SLOT_MULTIPLE, -(-round(math.sqrt(2 * window)) // SLOT_MULTIPLE) * SLOT_MULTIPLE)


def init_slots(model, rows: int, window: int, roll: int, max_new: int, *, per_layer: bool) -> Slots:
    """R empty (done) slots over a cache of W + G slots, ``end`` at W (every prompt fits before it)."""
    shard = model.shard
    cache = model.init_cache(rows, window + roll, per_layer=per_layer)
    cache = cache.replace(valid=constrain(cache.valid, ("batch", "cache_length"), shard), end=jnp.int32(window))
    zeros = constrain(jnp.zeros((rows, max_new), jnp.int32), ("batch", None), shard)
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), rows))
    out = Output(
        tokens=zeros,
        logprobs=zeros.astype(jnp.float32),
        lengths=jnp.zeros((rows,), jnp.int32),
        stopped=jnp.zeros((rows,), bool),
    )
    zero = jnp.zeros((rows,), jnp.int32)
    return Slots(cache, zero, zero, jnp.ones((rows,), bool), keys, out)


def pick(logits, keys, steps, params: Sampling, candidates: int):
    """One token per row from logits float32 [R, V], drawn with ``fold_in(key, step)`` per row: (tokens, log-probs)."""
    uniforms = jax.vmap(lambda k, s: jax.random.uniform(jax.random.fold_in(jax.random.wrap_key_data(k), s)))(
        keys, steps
    )
    tokens = strategies.sample(logits, uniforms, params.temperature, params.top_k, params.top_p, candidates=candidates)
    return tokens, strategies.token_logprobs(logits, tokens)


def insert(
    slots: Slots,
    logits,
    prefix: KVCache,
    targets,
    sources,
    requests,
    samples,
    count,
    params: Sampling,
    *,
    candidates: int,
    shard,
) -> Slots:
    """Start ``count`` samples: entry e puts prefilled row ``sources[e]`` (its prompt cache and last-position logits)
    into slot ``targets[e]`` as sample ``samples[e]`` of request ``requests[e]``, and samples its first token.

    Args:
      logits: float32 [P, V]; prefix: the prefill's cache (P rows, T slots, ``next_position`` = prompt lengths).
      targets, sources, requests, samples: int32 [R]; entries from ``count`` on are ignored (targets >= R there).
    """
    cache, rows = slots.cache, slots.done.shape[0]
    t = prefix.max_length
    at = cache.end - t
    k_slot_axis, v_slot_axis = -1, -2

    def put_row(big, piece_src, row, src, slot_axis):
        batch_axis = big.ndim - 4
        piece = jax.lax.dynamic_slice_in_dim(piece_src, src, 1, axis=batch_axis)
        start = [0] * big.ndim
        start[batch_axis], start[big.ndim + slot_axis] = row, at
        return jax.lax.dynamic_update_slice(big, piece.astype(big.dtype), start)

    def body(e, carry):
        k, v, valid, position = carry
        row, src = targets[e], sources[e]
        k = jax.tree.map(lambda big, p: put_row(big, p, row, src, k_slot_axis), k, prefix.k)
        v = jax.tree.map(lambda big, p: put_row(big, p, row, src, v_slot_axis), v, prefix.v)
        line = jax.lax.dynamic_update_slice(jnp.zeros_like(valid[0]), prefix.valid[src], (at,))
        valid = jax.lax.dynamic_update_index_in_dim(valid, line, row, 0)
        position = position.at[row].set(prefix.next_position[src])
        return k, v, valid, position

    k, v, valid, position = jax.lax.fori_loop(0, count, body, (cache.k, cache.v, cache.valid, cache.next_position))
    cache = _map_kv(cache.replace(k=k, v=v), lambda x, _: x, shard).replace(valid=valid, next_position=position)

    used = jnp.arange(rows) < count
    index = jnp.where(used, targets, rows)  # out of range: dropped by the scatters
    new = jnp.zeros((rows,), bool).at[index].set(True, mode="drop")

    def per_row(values):
        return jnp.zeros((rows,), jnp.int32).at[index].set(values.astype(jnp.int32), mode="drop")

    base = jax.random.key(params.seed)
    fresh = jax.vmap(lambda i, j: jax.random.key_data(jax.random.fold_in(jax.random.fold_in(base, i), j)))(
        per_row(requests), per_row(samples)
    )
    keys = jnp.where(new[:, None], fresh, slots.keys)
    first = constrain(logits[per_row(sources)], ("batch", "vocab"), shard)
    tokens, logprobs = pick(first, keys, jnp.zeros((rows,), jnp.int32), params, candidates)
    stopped = jnp.isin(tokens, params.stop_ids)
    out = slots.out
    column = jnp.arange(out.tokens.shape[1])[None, :] == 0
    out = Output(
        tokens=jnp.where(new[:, None], jnp.where(column, tokens[:, None], 0), out.tokens),
        logprobs=jnp.where(new[:, None], jnp.where(column, logprobs[:, None], 0.0), out.logprobs),
        lengths=jnp.where(new, 1, out.lengths),
        stopped=jnp.where(new, stopped, out.stopped),
    )
    return Slots(
        cache=cache,
        tokens=jnp.where(new, tokens, slots.tokens),
        step=jnp.where(new, 1, slots.step),
        done=jnp.where(new, stopped | (params.max_new_tokens <= 1), slots.done),
        keys=keys,
        out=out,
    )


def generate(
    model,
    slots: Slots,
    params: Sampling,
    refill_at,
    *,
    candidates: int,
    layer_params=None,
    head_t=None,
    layout: DecodeLayout = PLAIN,
):
    """Decode steps until every slot is done, ``refill_at`` slots are done (some may take new samples), or the
    cache's last slot is written (time to ``roll``). Returns (slots, steps run).

    A step feeds every slot's last token at ``cache.end`` and samples the next one; done slots feed too (skipping
    them would copy the cache, see ``loop.decode``) but record nothing.
    """
    rows, big_n = slots.out.tokens.shape
    capacity = slots.cache.max_length
    live_mask = jnp.ones((rows, 1), bool)
    row_index = jnp.arange(rows)

    def cond(carry):
        s, _ = carry
        return (s.cache.end < capacity) & ~s.done.all() & (s.done.sum() < refill_at)

    def body(carry):
        s, steps = carry
        hidden, cache = model.hidden_states(
            s.tokens[:, None], live_mask, cache=s.cache, layer_params=layer_params, layout=layout
        )
        tokens, logprobs = pick(model.logits(hidden, head_t, layout=layout)[:, 0], s.keys, s.step, params, candidates)
        tokens = jnp.where(s.done, 0, tokens)
        at = jnp.where(s.done, big_n, s.step)  # done rows write nowhere
        hit = ~s.done & jnp.isin(tokens, params.stop_ids)
        out = Output(
            tokens=s.out.tokens.at[row_index, at].set(tokens, mode="drop"),
            logprobs=s.out.logprobs.at[row_index, at].set(logprobs, mode="drop"),
            lengths=jnp.where(s.done, s.out.lengths, s.step + 1),
            stopped=s.out.stopped | hit,
        )
        done = s.done | hit | (s.step + 1 >= params.max_new_tokens)
        step = jnp.where(s.done, s.step, s.step + 1)
        return Slots(cache, tokens, step, done, s.keys, out), steps + 1

    return jax.lax.while_loop(cond, body, (slots, jnp.zeros((), jnp.int32)))


def roll(slots: Slots, drop: int, shard) -> Slots:
    """Drop the oldest ``drop`` cache slots of every row (appending as many empty ones) and move ``end`` back."""

    def shift(x, axis):
        tail = jax.lax.slice_in_dim(x, drop, x.shape[axis], axis=axis)
        return jnp.concatenate([tail, jnp.zeros_like(jax.lax.slice_in_dim(x, 0, drop, axis=axis))], axis=axis)

    cache = _map_kv(slots.cache, shift, shard)
    valid = constrain(shift(cache.valid, 1), ("batch", "cache_length"), shard)
    return slots._replace(cache=cache.replace(valid=valid, end=cache.end - drop))
