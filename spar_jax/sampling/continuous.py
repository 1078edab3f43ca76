"""The host side of continuous batching: a queue of prompts, a pool of prefilled prompts, R decode slots.

The JetStream design over a dense cache (device programs in ``slots.py``):
- *prefill*: the next prompts of the queue (one length bucket T, a power-of-two row count P) are prefilled together
  into a P x T cache; the result joins the pool, where each prompt waits until all n of its samples have a slot
  (the n samples of a prompt share this one prefill);
- *insert*: every free slot takes the next sample from the pool (its prompt's cache rows copied into the slot's row,
  its first token sampled from the prefill's logits);
- *generate*: every slot decodes until enough slots are done to refill (``refill`` slots, or fewer when fewer samples
  are waiting), all are done, or the cache needs a ``roll``; then the host reads the finished samples back.
The queue holds prompts longest bucket first (as static batches are formed), so consecutive prefills share a bucket.

Compiled programs: one init, one generate and one roll per (T_max, N) of a call (T_max the call's longest length
bucket, N its new-token bucket), and one prefill and one insert per (P, T) prefilled.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spar_jax.models.cpu_layout import chunk_rows
from spar_jax.sampling import buckets, hosts, slots
from spar_jax.sampling.loop import Sampling, prefill


@dataclasses.dataclass
class _Pooled:
    """One prefill's result: device logits [P, V] and cache, its live rows' request indices, samples handed out."""

    logits: jax.Array
    cache: object
    requests: list[int]
    started: int = 0  # samples of this pool already in slots (prompt-major: row = started // n)


@dataclasses.dataclass
class RunStats:
    prefill_rows: int = 0  # prompt rows prefilled, including row padding
    prefills: int = 0
    decode_steps: int = 0
    inserted: int = 0  # samples started (each one's first token comes from the prefill's logits)
    rolls: int = 0


class Continuous:
    """Continuous batching over the weights and layout of a ``DecodeLoop``.

    Args:
      loop: the engine's ``DecodeLoop`` (split model, decode layout, prefill chunking).
      rows: R decode slots (a multiple of ``row_multiple``).
      prefill_rows: at most this many prompts per prefill (rounded up to ``row_multiple``).
      refill: refill once this many slots are done (1: as soon as any is; larger values trade idle slots for fewer
        host round trips and smaller insert calls).
      candidates: the sampler's static candidate bound.
    """

    def __init__(self, loop, *, rows: int, prefill_rows: int, refill: int, row_multiple: int, candidates: int):
        self.loop, self.rows, self.refill, self.candidates = loop, rows, max(1, refill), candidates
        self.row_buckets = buckets.power_buckets(row_multiple, max(prefill_rows, row_multiple), row_multiple)
        self.shard = loop.shard
        self.per_layer = loop.layer_params is not None
        self.traces = 0
        self.programs: set[tuple] = set()  # (program, static shape) of each trace
        self.last_run = RunStats()
        self._prefill = jax.jit(self._prefill_fn, static_argnames=("chunk",))
        self._init = jax.jit(self._init_fn, static_argnames=("window", "roll", "max_new"))
        self._insert = jax.jit(self._insert_fn, donate_argnums=(0,))
        self._generate = jax.jit(self._generate_fn, donate_argnums=(0,))
        self._roll = jax.jit(self._roll_fn, static_argnames=("drop",), donate_argnums=(0,))

    # -- jitted programs (the Python bodies run once per compile) ---------------------------------------------------

    def _traced(self, *key):
        self.traces += 1
        self.programs.add(key)

    def _model(self, state):
        return nnx.merge(self.loop.graphdef, state)

    def _prefill_fn(self, state, layer_params, head_t, ids, mask, *, chunk):
        self._traced("prefill", ids.shape)
        return prefill(
            self._model(state),
            ids,
            mask,
            ids.shape[1],
            rows=chunk,
            layer_params=layer_params,
            head_t=head_t,
            layout=self.loop.layout,
        )

    def _init_fn(self, state, *, window, roll, max_new):
        self._traced("init", window, roll, max_new)
        return slots.init_slots(self._model(state), self.rows, window, roll, max_new, per_layer=self.per_layer)

    def _insert_fn(self, s, logits, prefix, targets, sources, requests, samples, count, params):
        self._traced("insert", logits.shape, prefix.max_length, s.cache.max_length, s.out.tokens.shape)
        return slots.insert(
            s,
            logits,
            prefix,
            targets,
            sources,
            requests,
            samples,
            count,
            params,
            candidates=self.candidates,
            shard=self.shard,
        )

    def _generate_fn(self, s, state, layer_params, head_t, params, refill_at):
        self._traced("generate", s.cache.max_length, s.out.tokens.shape)
        return slots.generate(
            self._model(state),
            s,
            params,
            refill_at,
            candidates=self.candidates,
            layer_params=layer_params,
            head_t=head_t,
            layout=self.loop.layout,
        )

    def _roll_fn(self, s, *, drop):
        self._traced("roll", s.cache.max_length, drop)
        return slots.roll(s, drop, self.shard)

    # -- the host loop -------------------------------------------------------------------------------------------

    def run(
        self,
        prompts,
        order,
        params: Sampling,
        *,
        n: int,
        max_new: int,
        length_buckets,
        pad_id: int,
        mesh,
        on_finish=None,
    ):
        """Sample n completions of ``prompts[i]`` for every i in ``order`` (the queue order); ``on_finish(k)`` is
        told each time k more samples are finished.

        Returns ({(i, j): (token ids, log-probs, stopped)}, ``RunStats``).
        """
        loop, stats = self.loop, RunStats()
        bucket_of = {i: buckets.bucket_for(len(prompts[i]), length_buckets, "prompt length") for i in order}
        window = slots.window_slots(max(bucket_of.values()), max_new)
        drop = slots.roll_slots(window)
        state = self._init(loop.state, window=window, roll=drop, max_new=max_new)
        queue, pool = collections.deque(order), collections.deque()
        owner: list[tuple[int, int] | None] = [None] * self.rows
        results: dict[tuple[int, int], tuple] = {}
        end = window

        def waiting() -> int:
            return sum(len(p.requests) * n - p.started for p in pool) + len(queue) * n

        while True:
            free = [r for r in range(self.rows) if owner[r] is None]
            while free and (pool or queue):
                pooled = sum(len(p.requests) * n - p.started for p in pool)
                if pooled < len(free) and queue:
                    pool.append(
                        self._prefill_next(queue, prompts, bucket_of, -(-(len(free) - pooled) // n), pad_id, stats)
                    )
                    continue
                state, free = self._insert_from(state, pool[0], free, owner, n, params, stats)
                if pool[0].started == len(pool[0].requests) * n:
                    pool.popleft()
            if all(o is None for o in owner):
                break
            pending = waiting()
            refill_at = self.rows + 1 if not pending else min(self.refill, pending)
            state, steps = self._generate(
                state, loop.state, loop.layer_params, loop.head_t, params, jnp.int32(refill_at)
            )
            done, out, steps = hosts.fetch((state.done, state.out, steps[None]), mesh)
            steps = int(steps.reshape(-1)[0])  # replicated (one copy per process when gathered)
            stats.decode_steps += steps
            end += steps
            finished = 0
            for r, who in enumerate(owner):
                if who is not None and done[r]:
                    finished += 1
                    length = int(out.lengths[r])
                    results[who] = (
                        out.tokens[r, :length].tolist(),
                        out.logprobs[r, :length].tolist(),
                        bool(out.stopped[r]),
                    )
                    owner[r] = None
            if on_finish is not None and finished:
                on_finish(finished)
            if end == window + drop:
                state = self._roll(state, drop=drop)
                end = window
                stats.rolls += 1
            elif not steps and not finished:
                raise RuntimeError("continuous batching made no progress (a decode call ran no step and ended no row)")
        self.last_run = stats
        return results, stats

    def _prefill_next(self, queue, prompts, bucket_of, wanted: int, pad_id: int, stats: RunStats) -> _Pooled:
        """Prefill the next ``wanted`` prompts of the queue (more when the row bucket has room for them)."""
        rows = buckets.bucket_for(min(wanted, len(queue), self.row_buckets[-1]), self.row_buckets, "prefill rows")
        length = bucket_of[queue[0]]
        taken = [queue.popleft() for _ in range(min(rows, len(queue)))]
        ids = np.full((rows, length), pad_id, np.int32)
        mask = np.zeros((rows, length), bool)
        for row, i in enumerate(taken):
            p = prompts[i]
            ids[row, length - len(p) :] = p
            mask[row, length - len(p) :] = True
        if self.shard is not None:
            two = self.shard.sharding(("batch", "length"), ids.shape)
            ids, mask = hosts.place(ids, two), hosts.place(mask, two)
        loop = self.loop
        logits, cache = self._prefill(
            loop.state, loop.layer_params, loop.head_t, ids, mask, chunk=chunk_rows(rows, length, loop.prefill_chunk)
        )
        stats.prefill_rows += rows
        stats.prefills += 1
        return _Pooled(logits, cache, taken)

    def _insert_from(self, state, pooled: _Pooled, free, owner, n, params, stats):
        """Give free slots the next samples of ``pooled``; returns (state, slots still free)."""
        count = min(len(free), len(pooled.requests) * n - pooled.started)
        targets = np.full((self.rows,), self.rows, np.int32)
        sources, requests, samples = (np.zeros((self.rows,), np.int32) for _ in range(3))
        for e in range(count):
            row, j = divmod(pooled.started + e, n)
            targets[e], sources[e], requests[e], samples[e] = free[e], row, pooled.requests[row], j
            owner[free[e]] = (pooled.requests[row], j)
        pooled.started += count
        stats.inserted += count
        state = self._insert(
            state, pooled.logits, pooled.cache, targets, sources, requests, samples, np.int32(count), params
        )
        return state, free[count:]
