"""Time per SPaR stage from FLOPs and HBM bandwidth (pure arithmetic; units in names: _s seconds, _bytes, _flops).

Sampling: a stage decodes ``sequences`` samples (``n`` per prompt, ``prompt_len`` bucketed prompt tokens, at most
``new_tokens`` each) whose output lengths are given (drawn from a measured or default distribution, see
``lengths.py``), on ``batch_rows`` decode rows:
    prefill_s = flops_forward(prompts * prompt_len tokens, context prompt_len) / (chips * peak * mfu)
    step_s    = max(bytes_per_step / (hbm_bandwidth * hbm_efficiency), flops_per_step / (chips * peak * mfu))
    bytes_per_step = weight bytes one chip reads (all weights / tensor shards: FSDP gathers them every step,
                     data-parallel replicas hold them) + that chip's KV cache over the slots a step reads
Decode steps come from the lengths (``slot_model``): static batches run as many steps as their longest sample and
read the cache up to prompt_len + steps so far (mean: half the batch's steps); continuous batching runs the slots
until the last sample ends, every step over the whole dense cache (prompt_len + new_tokens slots). Utilization =
generated tokens / decode slot-steps. ICI time for the FSDP gathers is not modelled (it overlaps with, and is
usually below, HBM time on one slice).

Training (tokens = sequences * padded length):
    flops_s = passes * flops_forward(tokens, context length) / (chips * peak * mfu)
with passes = 3 (forward + backward) or 4 with full remat (one more forward); DPO adds one forward pass over its
data for the reference log-probs.
    flops_forward(tokens, ctx) = 2 * N * tokens + 4 * L * H * D * tokens * ctx
(the full [T, S] score matrix, masked: ctx = S, not S / 2).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spar_jax.planning import slot_model


def flops_forward(params: int, tokens: int, context: int, *, layers: int, heads: int, head_dim: int) -> float:
    """Forward FLOPs of ``tokens`` tokens each attending over ``context`` keys (2 per multiply-add)."""
    return 2.0 * params * tokens + 4.0 * layers * heads * head_dim * tokens * context


def pow2_bucket(n: int, minimum: int = 16) -> int:
    """The engine's power-of-two bucket (>= ``minimum``) holding ``n`` tokens."""
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


@dataclasses.dataclass(frozen=True)
class Machine:
    """What the time model needs of a slice and model. Bytes/s, FLOP/s per chip."""

    chips: int
    peak_flops: float
    hbm_bandwidth: float
    mfu: float
    hbm_efficiency: float
    params: int  # parameter count
    layers: int
    heads: int
    head_dim: int
    weight_bytes_per_step: int  # bytes of weights one chip reads per decode step
    tensor_shards: int


def prefill_s(m: Machine, *, prompts: int, prompt_len: int) -> float:
    """Seconds to prefill ``prompts`` prompts of ``prompt_len`` tokens."""
    return flops_forward(
        m.params, prompts * prompt_len, prompt_len, layers=m.layers, heads=m.heads, head_dim=m.head_dim
    ) / (m.chips * m.peak_flops * m.mfu)


def decode_step_s(m: Machine, *, rows: int, context: float, kv_bytes_per_slot: float) -> float:
    """Seconds for one decode step of ``rows`` rows reading ``context`` cache slots. ``kv_bytes_per_slot``: one
    chip's KV-cache bytes per cache slot (all its rows and layers)."""
    step_bytes = m.weight_bytes_per_step + kv_bytes_per_slot * context
    step_flops = flops_forward(m.params, rows, int(context), layers=m.layers, heads=m.heads, head_dim=m.head_dim)
    return max(step_bytes / (m.hbm_bandwidth * m.hbm_efficiency), step_flops / (m.chips * m.peak_flops * m.mfu))


def decode_batch_s(
    m: Machine, *, prompts: int, rows: int, prompt_len: int, new_tokens: int, kv_bytes_per_slot: float
) -> float:
    """Seconds for one static engine batch: prefill of ``prompts`` prompts then ``new_tokens`` decode steps of
    ``rows`` rows, the cache read up to its mean length prompt_len + new_tokens / 2."""
    step = decode_step_s(m, rows=rows, context=prompt_len + new_tokens / 2, kv_bytes_per_slot=kv_bytes_per_slot)
    return prefill_s(m, prompts=prompts, prompt_len=prompt_len) + new_tokens * step


@dataclasses.dataclass(frozen=True)
class SamplingTime:
    batches: int  # static: engine batches; continuous: prefill groups of up to batch_rows // n prompts
    decode_steps: int
    mean_new: float  # mean generated tokens per sample
    utilization: float  # generated tokens / decode slot-steps
    seconds: float


def sampling_stage_s(
    m: Machine,
    *,
    lengths: np.ndarray,
    n: int,
    batch_rows: int,
    prompt_len: int,
    new_tokens: int,
    kv_bytes_per_slot: float,
    batching: str,
    call_samples: int | None = None,
) -> SamplingTime:
    """Time to decode samples of the given output ``lengths`` (one per sample, ``n`` consecutive per prompt) with
    ``batching`` "static" or "continuous" on ``batch_rows`` decode rows (see the module docstring), in engine calls
    of ``call_samples`` samples (default: one call; each continuous call ends with its own drain)."""
    sequences = len(lengths)
    prompts_per_batch = max(batch_rows // n, 1)
    rows = prompts_per_batch * n
    if not sequences:
        return SamplingTime(0, 0, 0.0, 1.0, 0.0)
    prefill = prefill_s(m, prompts=math.ceil(sequences / n), prompt_len=prompt_len)
    batches = math.ceil(sequences / rows)
    tokens = int(np.sum(lengths))
    if batching == "continuous":
        call = call_samples or sequences
        slot_steps = sum(
            slot_model.continuous_slot_steps(lengths[i : i + call], rows) for i in range(0, sequences, call)
        )
        steps = (slot_steps - sequences) // rows
        step = decode_step_s(m, rows=rows, context=prompt_len + new_tokens, kv_bytes_per_slot=kv_bytes_per_slot)
        seconds = prefill + steps * step
    else:
        padded = np.zeros(batches * rows, np.int64)
        padded[:sequences] = lengths
        per_batch = padded.reshape(batches, rows).max(axis=1)
        slot_steps = int(rows * per_batch.sum())
        steps = int(np.maximum(per_batch - 1, 0).sum())
        seconds = prefill + sum(
            max(b - 1, 0) * decode_step_s(m, rows=rows, context=prompt_len + b / 2, kv_bytes_per_slot=kv_bytes_per_slot)
            for b in per_batch.tolist()
        )
    return SamplingTime(batches, steps, tokens / sequences, tokens / slot_steps, seconds)


def train_passes(remat: str) -> int:
    """Forward-pass equivalents of one training step: forward + backward (2x), plus a recompute with full remat."""
    return 4 if remat == "full" else 3


def training_stage_s(m: Machine, *, sequences: int, length: int, passes: int) -> float:
    """Seconds for ``passes`` forward-equivalents over ``sequences`` sequences padded to ``length``."""
    flops = passes * flops_forward(
        m.params, sequences * length, length, layers=m.layers, heads=m.heads, head_dim=m.head_dim
    )
    return flops / (m.chips * m.peak_flops * m.mfu)
