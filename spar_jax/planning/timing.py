"""Time per SPaR stage from FLOPs and HBM bandwidth (pure arithmetic; units in names: _s seconds, _bytes, _flops).

Sampling (one engine batch of ``rows`` decode rows from ``prompts`` prompts of ``prompt_len`` bucketed tokens,
``new_tokens`` decode steps):
    prefill_s = flops_forward(prompts * prompt_len tokens, context prompt_len) / (chips * peak * mfu)
    step_s    = max(bytes_per_step / (hbm_bandwidth * hbm_efficiency), flops_per_step / (chips * peak * mfu))
    bytes_per_step = weight bytes one chip reads (all weights / tensor shards: FSDP gathers them every step,
                     data-parallel replicas hold them) + that chip's KV cache at the mean length
                     prompt_len + new_tokens / 2
A batch runs ``new_tokens`` steps: the decode loop stops when its longest row stops, so the configured maximum is
the planning value. ICI time for the FSDP gathers is not modelled (it overlaps with, and is usually below, HBM time
on one slice).

Training (tokens = sequences * padded length):
    flops_s = passes * flops_forward(tokens, context length) / (chips * peak * mfu)
with passes = 3 (forward + backward) or 4 with full remat (one more forward); DPO adds one forward pass over its
data for the reference log-probs.
    flops_forward(tokens, ctx) = 2 * N * tokens + 4 * L * H * D * tokens * ctx
(our attention computes the full [T, S] score matrix, masked, so ctx = S, not S / 2).
"""

from __future__ import annotations

import dataclasses
import math


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


def decode_batch_s(m: Machine, *, prompts: int, rows: int, prompt_len: int, new_tokens: int,
                   kv_bytes_per_slot: float) -> float:
    """Seconds for one engine batch: prefill of ``prompts`` prompts then ``new_tokens`` decode steps of ``rows``
    rows. ``kv_bytes_per_slot``: one chip's KV-cache bytes per cache slot (all its rows and layers)."""
    compute = m.chips * m.peak_flops * m.mfu
    prefill = flops_forward(m.params, prompts * prompt_len, prompt_len, layers=m.layers, heads=m.heads,
                            head_dim=m.head_dim) / compute
    mean_len = prompt_len + new_tokens / 2
    step_bytes = m.weight_bytes_per_step + kv_bytes_per_slot * mean_len
    step_flops = flops_forward(m.params, rows, int(mean_len), layers=m.layers, heads=m.heads, head_dim=m.head_dim)
    step = max(step_bytes / (m.hbm_bandwidth * m.hbm_efficiency), step_flops / compute)
    return prefill + new_tokens * step


def sampling_stage_s(m: Machine, *, sequences: int, n: int, batch_rows: int, prompt_len: int, new_tokens: int,
                     kv_bytes_per_slot: float) -> tuple[int, float]:
    """(engine batches, seconds) to decode ``sequences`` rows, ``n`` samples per prompt, ``batch_rows`` per batch
    (the engine puts ``max(batch_rows // n, 1)`` prompts in a batch)."""
    prompts_per_batch = max(batch_rows // n, 1)
    rows = prompts_per_batch * n
    batches = math.ceil(sequences / rows) if sequences else 0
    return batches, batches * decode_batch_s(m, prompts=prompts_per_batch, rows=rows, prompt_len=prompt_len,
                                             new_tokens=new_tokens, kv_bytes_per_slot=kv_bytes_per_slot)


def train_passes(remat: str) -> int:
    """Forward-pass equivalents of one training step: forward + backward (2x), plus a recompute with full remat."""
    return 4 if remat == "full" else 3


def training_stage_s(m: Machine, *, sequences: int, length: int, passes: int) -> float:
    """Seconds for ``passes`` forward-equivalents over ``sequences`` sequences padded to ``length``."""
    flops = passes * flops_forward(m.params, sequences * length, length, layers=m.layers, heads=m.heads,
                                   head_dim=m.head_dim)
    return flops / (m.chips * m.peak_flops * m.mfu)
