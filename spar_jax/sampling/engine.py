"""The host API of generation: requests in, ``Result``s out, in input order.

``Engine.generate`` turns requests (chat messages or token ids) into prompt ids, decodes them, trims stop strings,
and returns one ``Result`` per request. Two ways to decode (``batching``):
- "static": plan bucketed batches and dispatch each to the jitted ``DecodeLoop`` (the next batch is dispatched before
  the previous one is read back, so host post-processing overlaps device work); a batch decodes until its longest
  row stops;
- "continuous": R decode slots; a slot whose sample finished takes the next waiting sample while the others keep
  decoding (``continuous.Continuous``).
Both draw every token with the same uniform for the same seed (it depends on the seed, the request, the sample and
the step only); the logits differ by float32 rounding (another summation order), so tokens are equal except at a
near-tie (docs/sampling.md#same-tokens).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from spar_jax.models.tokenizer import chat_prompt_ids
from spar_jax.parallel import DEFAULT_RULES, ShardingContext, shard_state
from spar_jax.sampling import buckets, hosts
from spar_jax.sampling.continuous import Continuous
from spar_jax.sampling.loop import DecodeLoop, LoopShape, Sampling
from spar_jax.sampling.precision import cast_model, engine_dtype

_log = logging.getLogger(__name__)
TRUNCATE_MODES = ("error", "left")


class PromptTooLongError(ValueError):
    """Request ``index`` has a prompt of ``tokens`` tokens, more than the ``max_length - max_new_tokens`` that fit,
    with ``truncate="error"``. Callers that know the request's source (a prompt key, a file) re-raise it naming
    them (``spar_jax.judge.generation.naming_prompts``)."""

    def __init__(self, index: int, tokens: int, max_length: int, max_new_tokens: int):
        self.index, self.tokens, self.max_length, self.max_new_tokens = index, tokens, max_length, max_new_tokens
        self.room = max_length - max_new_tokens
        super().__init__(
            f"request {index}: prompt has {tokens} tokens, but max_length={max_length} with "
            f"max_new_tokens={max_new_tokens} leaves room for {self.room}; shorten it, raise max_length "
            f"or use Engine(truncate='left')"
        )


BATCHING = ("continuous", "static")


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sample. ``token_ids``/``logprobs`` are the generated tokens (including a final EOS or stop-string token
    when ``finish_reason`` is "stop") and their log-probs under the unmodified model distribution. ``text`` excludes
    the EOS, special tokens and the stop string."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"


@dataclasses.dataclass(frozen=True)
class Result:
    """The ``n`` completions of one request; ``prompt_token_ids`` as fed (after any truncation) and how many tokens
    were cut from the left (0 when none)."""

    completions: list[Completion]
    prompt_token_ids: list[int]
    truncated: int = 0


@dataclasses.dataclass
class EngineStats:
    """Running totals over an engine's lifetime (``compiles`` reads the loop's trace counter)."""

    calls: int = 0
    batches: int = 0
    prompts: int = 0
    truncated_prompts: int = 0
    prefill_rows: int = 0  # prompt rows prefilled, including bucket padding
    decode_rows: int = 0  # samples decoded, including row padding (static)
    generated_tokens: int = 0
    # Decode rows x token positions run, the first token of a sample (from the prefill's logits) counting as one
    # position: utilization = generated_tokens / decode_slot_steps (1.0 when no row ever idles).
    decode_slot_steps: int = 0
    buckets: set = dataclasses.field(default_factory=set)  # (rows, length, n, max_new) used


def _place_model(model, mesh):
    """The model with its parameters on ``mesh`` (unchanged when it already lives there or mesh is None)."""
    if mesh is None or (model.shard is not None and model.shard.mesh == mesh):
        return model
    graphdef, state = nnx.split(model)
    placed = nnx.merge(graphdef, state, copy=True)  # new Variables: placing must not move the caller's arrays
    placed.shard = ShardingContext(mesh, model.shard.rules if model.shard is not None else DEFAULT_RULES)
    nnx.update(placed, shard_state(nnx.state(placed), placed.shard))
    return placed


class Engine:
    """Batched, bucketed, sharded generation with a KV cache.

    Args:
      model: a ``spar_jax.models.Transformer``; tokenizer: its HF tokenizer (chat template needed for messages), or
        None for token-id requests only (texts are then empty and stop strings are refused).
      mesh: place the model on this mesh (default: the mesh the model was loaded on, or a single device).
      batch_size: decode rows per batch (prompts per batch = batch_size // n, at least one); the number of decode
        slots with continuous batching.
      batching: "continuous" or "static" (see the module docstring).
      dtype: the engine's copy of the weights and its KV cache, separate from the model given (see ``engine_dtype``;
        default "auto": bfloat16 on TPU/GPU, the model's parameter dtype on CPU).
      refill: continuous batching refills once this many slots are free (or all waiting samples fit).
      max_length: context limit, prompt + new tokens (default: the config's ``max_position_embeddings``).
      truncate: over-long prompts raise ("error") or lose their oldest tokens ("left"; counted in ``stats``).
      length_buckets / new_token_buckets: allowed padded prompt lengths / new-token slots (default: powers of two
        from ``min_bucket`` up to ``max_length``).
      first_segment / segment_growth: decode cache growth (see ``loop.py``); candidates: sampler fast-path bound.
      layer_loop: "auto" | "scan" | "unrolled", how decode runs the layers (see ``loop.DecodeLoop``).
      prefill_chunk: tokens per prefill chunk, 0 for none, or "auto" (see ``loop.DecodeLoop``).
      eos_token_ids: ids that end a sample (default: the EOS ids of the config and the tokenizer; () for none).
      progress: show a tqdm bar per call.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        mesh=None,
        batch_size: int = 32,
        batching: str = "static",
        refill: int = 1,
        dtype: str | None = "auto",
        max_length: int | None = None,
        truncate: str = "error",
        length_buckets: Sequence[int] | None = None,
        new_token_buckets: Sequence[int] | None = None,
        min_bucket: int = 16,
        first_segment: int = 256,
        segment_growth: int = 4,
        candidates: int = 64,
        layer_loop: str = "auto",
        prefill_chunk: int | str = "auto",
        eos_token_ids: Sequence[int] | None = None,
        progress: bool = True,
    ):
        if truncate not in TRUNCATE_MODES:
            raise ValueError(f"Engine: truncate={truncate!r}; choose one of {TRUNCATE_MODES}")
        if batching not in BATCHING:
            raise ValueError(f"Engine: batching={batching!r}; choose one of {BATCHING}")
        if batch_size < 1:
            raise ValueError(f"Engine: batch_size must be >= 1, got {batch_size}")
        self.dtype = engine_dtype(dtype, model)
        self.model = cast_model(_place_model(model, mesh), self.dtype)
        self.tokenizer = tokenizer
        self.shard = self.model.shard
        self.mesh = self.shard.mesh if self.shard is not None else None
        cfg = self.model.config
        self.max_length = int(max_length or cfg.max_position_embeddings)
        self.batch_size = batch_size
        self.truncate = truncate
        self.length_buckets = tuple(sorted(length_buckets or buckets.power_buckets(min_bucket, self.max_length)))
        self.new_token_buckets = tuple(sorted(new_token_buckets or buckets.power_buckets(min_bucket, self.max_length)))
        self.segments = (first_segment, segment_growth)
        self.candidates = candidates
        if eos_token_ids is None:
            eos_token_ids = set(cfg.eos_token_ids)
            if getattr(tokenizer, "eos_token_id", None) is not None:
                eos_token_ids.add(int(tokenizer.eos_token_id))
        self.eos_ids = tuple(sorted(int(t) for t in eos_token_ids))
        self.pad_id = int(cfg.pad_token_id if cfg.pad_token_id is not None else (self.eos_ids or (0,))[0])
        self.progress = progress
        self.row_multiple = 1 if self.shard is None else self.shard.axis_size("batch")
        self.loop = DecodeLoop(self.model, layer_loop=layer_loop, prefill_chunk=prefill_chunk)
        self.batching = batching
        slots = -(-batch_size // self.row_multiple) * self.row_multiple
        self.continuous = Continuous(
            self.loop,
            rows=slots,
            prefill_rows=batch_size,
            refill=refill,
            row_multiple=self.row_multiple,
            candidates=candidates,
        )
        self.stats = EngineStats()

    @property
    def compiles(self) -> int:
        """Programs compiled so far (static decode loops plus continuous batching's programs)."""
        return self.loop.traces + self.continuous.traces

    # -- requests -> prompt ids ----------------------------------------------------------------------------------

    def prompt_ids(self, request, index: int = 0) -> list[int]:
        """Token ids of one request: a list of token ids, a message list, or an instruction string."""
        if isinstance(request, np.ndarray):
            request = request.tolist()
        is_chat = isinstance(request, (list, tuple)) and request and isinstance(request[0], dict)
        if isinstance(request, str) or is_chat:
            if self.tokenizer is None:
                raise ValueError(f"request {index}: chat messages need a tokenizer (the engine has none)")
            try:
                return chat_prompt_ids(self.tokenizer, request)
            except ValueError as e:
                raise ValueError(f"request {index}: {e}") from None
        if isinstance(request, (list, tuple)) and request and all(isinstance(t, (int, np.integer)) for t in request):
            ids = [int(t) for t in request]
            bad = [t for t in ids if not 0 <= t < self.model.config.vocab_size]
            if bad:
                raise ValueError(f"request {index}: token id {bad[0]} is outside the vocabulary")
            return ids
        raise ValueError(
            f"request {index}: expected a non-empty list of token ids or chat messages, got {request!r:.80}"
        )

    def _fit(self, ids: list[int], index: int, max_new_tokens: int) -> tuple[list[int], int]:
        room = self.max_length - max_new_tokens
        if len(ids) <= room:
            return ids, 0
        if self.truncate == "error":
            raise PromptTooLongError(index, len(ids), self.max_length, max_new_tokens)
        return ids[len(ids) - room :], len(ids) - room

    def _stop_ids(self, stop: Sequence[str]) -> np.ndarray:
        """EOS ids plus stop strings that are exactly one token (longer ones are found on the host)."""
        ids = set(self.eos_ids)
        for s in stop:
            enc = self.tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1 and self.tokenizer.decode(enc) == s:
                ids.add(int(enc[0]))
        size = -(-max(len(ids), 1) // 8) * 8
        out = np.full((size,), -1, np.int32)
        out[: len(ids)] = sorted(ids)
        return out

    # -- generation ------------------------------------------------------------------------------------------------

    def generate(
        self,
        requests,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        n: int = 1,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> list[Result]:
        """Sample ``n`` completions for every request; results in request order (see the module docstring)."""
        stop = _check_args(max_new_tokens, temperature, top_p, top_k, n, stop)
        if stop and self.tokenizer is None:
            raise ValueError("generate: stop strings need a tokenizer (the engine has none)")
        if max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt (max_length={self.max_length})"
            )
        prompts, cut = [], []
        for i, r in enumerate(requests):
            ids, dropped = self._fit(self.prompt_ids(r, i), i, max_new_tokens)
            prompts.append(ids)
            cut.append(dropped)
        if not prompts:
            return []
        hosts.check_same_requests(prompts)
        truncated = sum(1 for c in cut if c)
        if truncated:
            _log.warning(
                "Engine.generate: %d of %d prompts were left-truncated to fit max_length", truncated, len(prompts)
            )
        big_n = buckets.bucket_for(max_new_tokens, self.new_token_buckets, "max_new_tokens")
        shape = LoopShape(
            n=n,
            max_new=big_n,
            first_segment=self.segments[0],
            segment_growth=self.segments[1],
            candidates=self.candidates,
        )
        params = Sampling(
            temperature=jnp.float32(temperature),
            top_k=jnp.int32(top_k),
            top_p=jnp.float32(top_p),
            max_new_tokens=jnp.int32(max_new_tokens),
            stop_ids=jnp.asarray(self._stop_ids(stop)),
            seed=jnp.int32(seed),
        )
        if self.batching == "continuous":
            records = self._generate_continuous(prompts, cut, params, shape, stop)
        else:
            records = self._generate_static(prompts, cut, params, shape, stop)
        records = hosts.gather_records(records, self.mesh)
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.truncated_prompts += truncated
        return [_result(records[i]) for i in range(len(prompts))]

    def _generate_continuous(self, prompts, cut, params, shape: LoopShape, stop) -> dict[int, dict]:
        n = shape.n
        order = [
            b.indices
            for b in buckets.plan_batches(
                [len(p) for p in prompts], length_buckets=self.length_buckets, max_rows=len(prompts)
            )
        ]
        order = [i for group in order for i in group]  # longest bucket first, longer prompts first
        if jax.process_count() > 1 and not hosts.is_global(self.mesh):
            order = order[jax.process_index() :: jax.process_count()]
        if not order:
            return {}
        with tqdm(total=len(order) * n, desc="generate", unit="sample", disable=not self.progress) as bar:
            samples, run = self.continuous.run(
                prompts,
                order,
                params,
                n=n,
                max_new=shape.max_new,
                length_buckets=self.length_buckets,
                pad_id=self.pad_id,
                mesh=self.mesh,
                on_finish=bar.update,
            )
        s = self.stats
        s.batches += run.prefills
        s.prefill_rows += run.prefill_rows
        s.decode_rows += run.inserted
        s.decode_slot_steps += self.continuous.rows * run.decode_steps + run.inserted
        records = {}
        for i in order:
            completions = []
            for j in range(n):
                ids, logprobs, stopped = samples[i, j]
                s.generated_tokens += len(ids)
                completions.append(self._completion(ids, logprobs, stopped, stop))
            records[i] = {"completions": completions, "prompt_token_ids": prompts[i], "truncated": cut[i]}
        return records

    def _generate_static(self, prompts, cut, params, shape: LoopShape, stop) -> dict[int, dict]:
        n = shape.n
        plan = buckets.plan_batches(
            [len(p) for p in prompts],
            length_buckets=self.length_buckets,
            max_rows=max(1, self.batch_size // n),
            row_multiple=self.row_multiple,
        )
        mine = hosts.my_batches(plan, self.mesh)
        records: dict[int, dict] = {}
        pending = None
        total = sum(len(b.indices) for b in mine)
        with tqdm(total=total, desc="generate", unit="prompt", disable=not self.progress) as bar:
            for batch in mine:
                out = self.loop(*self._arrays(batch, prompts), params, shape=shape)
                self._count(batch, shape)
                if pending is not None:
                    records.update(self._finish(*pending, prompts, cut, stop, n))
                    bar.update(len(pending[0].indices))
                pending = (batch, out)
            if pending is not None:
                records.update(self._finish(*pending, prompts, cut, stop, n))
                bar.update(len(pending[0].indices))
        return records

    def _arrays(self, batch: buckets.Batch, prompts):
        ids = np.full((batch.rows, batch.length), self.pad_id, np.int32)
        mask = np.zeros((batch.rows, batch.length), bool)
        live = np.zeros((batch.rows,), bool)
        row_ids = np.zeros((batch.rows,), np.int32)
        for row, i in enumerate(batch.indices):
            p = prompts[i]
            ids[row, batch.length - len(p) :] = p
            mask[row, batch.length - len(p) :] = True
            live[row] = True
            row_ids[row] = i
        if self.shard is None:
            return ids, mask, live, row_ids
        two = self.shard.sharding(("batch", "length"), ids.shape)
        one = self.shard.sharding(("batch",), live.shape)
        return hosts.place(ids, two), hosts.place(mask, two), hosts.place(live, one), hosts.place(row_ids, one)

    def _count(self, batch: buckets.Batch, shape: LoopShape):
        s = self.stats
        s.batches += 1
        s.prefill_rows += batch.rows
        s.decode_rows += batch.rows * shape.n
        s.buckets.add((batch.rows, batch.length, shape.n, shape.max_new))

    def _finish(self, batch, out, prompts, cut, stop, n) -> dict[int, dict]:
        """Read one batch back and turn its rows into per-request records."""
        out = hosts.fetch(out, self.mesh)
        records = {}
        self.stats.decode_slot_steps += batch.rows * n * int(out.lengths.max(initial=0))
        for row, i in enumerate(batch.indices):
            completions = []
            for j in range(n):
                r = row * n + j
                length = int(out.lengths[r])
                self.stats.generated_tokens += length
                completions.append(
                    self._completion(
                        out.tokens[r, :length].tolist(), out.logprobs[r, :length].tolist(), bool(out.stopped[r]), stop
                    )
                )
            records[i] = {"completions": completions, "prompt_token_ids": prompts[i], "truncated": cut[i]}
        return records

    def _decode(self, ids: list[int]) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(ids, skip_special_tokens=True)

    def _completion(self, ids: list[int], logprobs: list[float], stopped: bool, stop: Sequence[str]) -> list:
        body = ids[:-1] if stopped else ids
        text = self._decode(body)
        at = buckets.trim_at_stop(text, stop) if stop else None
        if at is None:
            return [text, ids, logprobs, "stop" if stopped else "length"]
        # The shortest token prefix whose text already contains a stop string (binary search; containment grows).
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            if buckets.trim_at_stop(self._decode(body[:mid]), stop) is not None:
                hi = mid
            else:
                lo = mid + 1
        return [text[:at], ids[:lo], logprobs[:lo], "stop"]


def _result(record: dict) -> Result:
    return Result(
        completions=[Completion(*c) for c in record["completions"]],
        prompt_token_ids=list(record["prompt_token_ids"]),
        truncated=int(record["truncated"]),
    )


def _check_args(max_new_tokens, temperature, top_p, top_k, n, stop) -> tuple[str, ...]:
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"generate: top_k must be an int >= 0, got {top_k!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"generate: n must be an int >= 1, got {n!r}")
    if isinstance(stop, str):
        stop = [stop]
    stop = tuple(stop or ())
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"generate: stop must be a list of non-empty strings, got {stop!r}")
    return stop
