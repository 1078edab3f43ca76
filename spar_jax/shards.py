"""Resumable work in shards: apply a function to fixed-size slices of a list, one atomically written JSONL per slice.

Used by the SPaR stages (mining, tree search) and the IFEval run: after a kill, a rerun skips the shards on disk and
continues with the next one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Sequence

from spar_jax import io, progress
from spar_jax.parallel import sync_processes


def fingerprint(items: Sequence[Any]) -> str:
    """A short hash of JSON-able items (identifies a workload across reruns)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sharded(directory: str, items: Sequence[Any], shard_size: int, fn: Callable[[list, int], list[dict]],
            keys: Sequence[Any]) -> list[dict]:  # fmt: skip
    """Apply ``fn(shard_items, shard_index) -> records`` shard by shard, writing ``shard_XXXXX.jsonl`` atomically and
    skipping shards already on disk. ``keys`` identify the items: a rerun over different items fails clearly.
    Returns all records in item order. Prints a line when each shard starts and ends (elapsed, ETA)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    os.makedirs(directory, exist_ok=True)
    plan = {"items": len(items), "shard_size": shard_size, "fingerprint": fingerprint(list(keys))}
    plan_path = os.path.join(directory, "plan.json")
    if os.path.exists(plan_path):
        with open(plan_path) as f:
            old = json.load(f)
        if old != plan:
            raise ValueError(f"{plan_path}: this workdir was produced from other inputs or shard size ({old}); "
                             f"now {plan}. Use a new workdir or delete {directory}.")  # fmt: skip
    else:
        io.write_json(plan_path, plan)
        sync_processes(f"plan:{plan_path}")
    records: list[dict] = []
    n = math.ceil(len(items) / shard_size)
    paths = [os.path.join(directory, f"shard_{s:05d}.jsonl") for s in range(n)]
    on_disk = sum(os.path.exists(p) for p in paths)
    what = progress.label(directory)
    done_note = f", {on_disk} already done" if on_disk else ""
    progress.line(f"{what}: {len(items)} items in {n} shards of {shard_size}{done_note}")
    clock = progress.ShardClock(n, on_disk)
    for s, path in enumerate(paths):
        if os.path.exists(path):
            records.extend(io.read_jsonl(path))
            continue
        shard = list(items[s * shard_size : (s + 1) * shard_size])
        progress.line(f"{what} shard {s + 1}/{n} ({len(shard)} items): start")
        start = time.time()
        out = fn(shard, s)
        io.write_jsonl(path, out)
        sync_processes(f"shard:{path}")
        records.extend(out)
        progress.line(f"{what} shard {s + 1}/{n}: done in {progress.duration(time.time() - start)}; {clock.done()}")
    return records
