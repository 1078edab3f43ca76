"""Pure bucket arithmetic and batch planning: every compiled shape comes from a small fixed set.

Three bucketed dimensions: prompt rows per batch (B), prompt length (T) and new-token slots (N). A workload compiles
at most once per distinct (B, T, N, n) it uses.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


def power_buckets(minimum: int, maximum: int, multiple: int = 1) -> tuple[int, ...]:
    """Sizes multiple * 2^i from ``minimum`` (rounded up to ``multiple``), capped by ``maximum`` (which is included,
    rounded up to ``multiple``). E.g. (16, 100) -> (16, 32, 64, 100)."""
    if minimum < 1 or maximum < 1 or multiple < 1:
        raise ValueError(f"bucket bounds must be positive, got minimum={minimum} maximum={maximum} multiple={multiple}")
    top = -(-maximum // multiple) * multiple
    size = -(-max(minimum, 1) // multiple) * multiple
    out = []
    while size < top:
        out.append(size)
        size *= 2
    out.append(top)
    return tuple(out)


def bucket_for(value: int, buckets: Sequence[int], what: str = "value") -> int:
    """The smallest bucket >= value; ValueError when value exceeds every bucket."""
    for b in sorted(buckets):
        if b >= value:
            return b
    raise ValueError(f"{what} {value} exceeds the largest bucket {max(buckets)}")


@dataclasses.dataclass(frozen=True)
class Batch:
    """One compiled call: request indices (in batch row order), and the bucketed prompt rows and length."""

    indices: tuple[int, ...]
    rows: int
    length: int


def plan_batches(
    lengths: Sequence[int], *, length_buckets: Sequence[int], max_rows: int, row_multiple: int = 1
) -> list[Batch]:
    """Group requests by length bucket and cut each group into batches of at most ``max_rows`` prompts.

    Args:
      lengths: prompt length of each request (already truncated to fit).
      length_buckets: allowed padded prompt lengths.
      max_rows: prompts per batch (rounded up to ``row_multiple``).
      row_multiple: every batch's row count is a multiple of this (the data-parallel size of the mesh).
    Returns:
      Batches, longest bucket first; within a bucket, longer prompts first. Row counts come from
      ``power_buckets(row_multiple, max_rows, row_multiple)``.
    """
    row_buckets = power_buckets(row_multiple, max(max_rows, row_multiple), row_multiple)
    cap = row_buckets[-1]
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(bucket_for(n, length_buckets, "prompt length"), []).append(i)
    batches = []
    for length in sorted(groups, reverse=True):
        order = sorted(groups[length], key=lambda i: (-lengths[i], i))
        for start in range(0, len(order), cap):
            chunk = tuple(order[start : start + cap])
            batches.append(Batch(indices=chunk, rows=bucket_for(len(chunk), row_buckets, "batch"), length=length))
    return batches


def trim_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text`` (None if none occurs)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
