"""Decode slot-steps of a sampling call from its samples' output lengths, for static and continuous batching.

Pure arithmetic that mirrors what ``spar_jax.sampling.Engine`` counts in ``EngineStats.decode_slot_steps`` (a
sample's first token, sampled from the prefill's logits, is one slot-step; every later token one decode step of its
row), so ``generated_tokens / slot_steps`` is the engine's utilization for those lengths:

- static (``loop.py``): each batch of ``rows`` prompt rows (padding included) x ``n`` samples runs as many positions
  as its longest sample: rows * n * max(length);
- continuous (``continuous.py`` with ``refill=1``): R slots take the samples in queue order; a slot that finishes
  takes the next sample at once (greedy list scheduling), so the call runs D = the last finish step decode steps
  and counts R * D + samples.

The planner uses these with a length distribution to turn tokens into decode steps, and the benchmark compares the
engine's measured counts with them (the continuous count is the best any slot policy can do without knowing the
lengths in advance: what is left is the drain, the last long samples decoding while other slots idle).
"""

from __future__ import annotations

import heapq
from typing import Sequence


def continuous_slot_steps(lengths: Sequence[int], slots: int) -> int:
    """Slot-steps of ``lengths`` (tokens per sample, in queue order) on ``slots`` decode slots, refilled at once."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    free = [(0, r) for r in range(slots)]  # (decode step at which the slot frees, slot)
    last = 0
    for length in lengths:
        start, slot = heapq.heappop(free)
        end = start + max(int(length) - 1, 0)
        heapq.heappush(free, (end, slot))
        last = max(last, end)
    return slots * last + len(lengths)


def static_slot_steps(lengths: Sequence[int], rows: int, n: int = 1) -> int:
    """Slot-steps of samples in batch order (``n`` consecutive samples per prompt), ``rows`` prompt rows per batch
    (a partial last batch padded to ``rows``; pass the engine's row bucket for exact counts)."""
    per_batch = rows * n
    total = 0
    for start in range(0, len(lengths), per_batch):
        total += per_batch * max(int(x) for x in lengths[start : start + per_batch])
    return total


def utilization(lengths: Sequence[int], slot_steps: int) -> float:
    """generated tokens / slot-steps (1.0 for no samples)."""
    return sum(int(x) for x in lengths) / slot_steps if slot_steps else 1.0
