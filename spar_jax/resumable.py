"""Resumable work in shards: apply a function to fixed-size slices of a list, one atomically written JSONL per slice.

Used by the SPaR steps (mining, tree search) and the IFEval run: after a kill, a rerun skips the shards on disk and
continues with the next one. Each finished shard also leaves ``shard_XXXXX.timing`` (its wall time and when it
finished), so a resumed step can count the time of the work earlier attempts finished (`seconds_before`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

from spar_jax import files, progress
from spar_jax.fingerprint import InputsChangedError, StageInputs, changed_keys, read_record
from spar_jax.parallel import agree, agree_all, sync_processes

_log = logging.getLogger(__name__)


def fingerprint(items: Sequence[Any]) -> str:
    """A short hash of JSON-able items (identifies a workload across reruns)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sharded(
    directory: str,
    items: Sequence[Any],
    shard_size: int,
    fn: Callable[[list, int], list[dict]],
    keys: Sequence[Any],
    inputs: StageInputs | None = None,
) -> list[dict]:
    """Apply ``fn(shard_items, shard_index) -> records`` shard by shard, writing ``shard_XXXXX.jsonl`` atomically and
    skipping shards already on disk. ``keys`` identify the items and ``inputs`` (optional) what the records are made
    from (the model, its settings): a rerun over other items fails clearly, and one with other inputs stops or
    starts over as ``inputs.on_change`` says. Which shards exist is decided by process 0 for every process.
    Returns all records in item order. Prints a line when each shard starts and ends (elapsed, ETA)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    os.makedirs(directory, exist_ok=True)
    plan = {"items": len(items), "shard_size": shard_size, "fingerprint": fingerprint(list(keys))}
    if inputs is not None:
        plan["inputs"] = inputs.values
    plan_path = os.path.join(directory, "plan.json")
    old = read_record(plan_path)
    if old and inputs is not None and "inputs" not in old and old == {k: v for k, v in plan.items() if k != "inputs"}:
        # A plan from before fingerprints, over the same items: its stage's inputs were checked (and recorded) by
        # fingerprint.decide before this call, so its shards are adopted.
        _log.warning(
            "%s: plan from before stage fingerprints; its shards are adopted and this run's inputs recorded", plan_path
        )
        old = None
    state = agree(0 if old is None else 1 if old == plan else 2)
    if state == 2:
        changed = changed_keys(old.get("inputs", {}), plan.get("inputs", {})) if old else []
        only_inputs = old is not None and {k: v for k, v in old.items() if k != "inputs"} == {
            k: v for k, v in plan.items() if k != "inputs"
        }
        if not (only_inputs and inputs is not None and inputs.on_change == "rerun"):
            what = f"changed inputs {', '.join(changed)}" if only_inputs and changed else "other inputs or shard size"
            hint = " or pass --config.on_change=rerun" if only_inputs else ""
            raise InputsChangedError(
                f"{plan_path}: this directory was produced from {what} ({old}); now {plan}. "
                f"Use a new workdir{hint}, or delete {directory}."
            )
        if files.is_writer():
            for name in os.listdir(directory):
                if name.startswith("shard_"):
                    os.unlink(os.path.join(directory, name))
        state = 0
    if state == 0:
        files.write_json(plan_path, plan)
        sync_processes(f"plan:{plan_path}")
    n = math.ceil(len(items) / shard_size)
    paths = [os.path.join(directory, f"shard_{s:05d}.jsonl") for s in range(n)]
    done = agree_all([os.path.exists(p) for p in paths]) if n else []
    records: list[dict] = []
    on_disk = sum(done)
    what = progress.label(directory)
    done_note = f", {on_disk} already done" if on_disk else ""
    progress.line(f"{what}: {len(items)} items in {n} shards of {shard_size}{done_note}")
    clock = progress.ShardClock(n, on_disk)
    for s, path in enumerate(paths):
        if done[s]:
            records.extend(files.read_jsonl(path))
            continue
        shard = list(items[s * shard_size : (s + 1) * shard_size])
        progress.line(f"{what} shard {s + 1}/{n} ({len(shard)} items): start")
        start = time.time()
        out = fn(shard, s)
        files.write_jsonl(path, out)
        seconds = time.time() - start
        files.write_json(_timing_path(path), {"seconds": round(seconds, 2), "finished": time.time()}, indent=None)
        sync_processes(f"shard:{path}")
        records.extend(out)
        progress.line(f"{what} shard {s + 1}/{n}: done in {progress.duration(seconds)}; {clock.done()}")
    return records


def _timing_path(shard_path: str) -> str:
    return shard_path[: -len(".jsonl")] + ".timing"


def seconds_before(directory: str, since: float) -> float:
    """Wall time (s) of the shards under ``directory`` that finished before ``since`` (a ``time.time()``): the work
    of earlier attempts that this attempt adopted. Shards an attempt deleted (changed inputs) are not counted."""
    total = 0.0
    for root, _, names in os.walk(directory):
        for name in names:
            if name.startswith("shard_") and name.endswith(".timing"):
                record = read_record(os.path.join(root, name)) or {}
                if record.get("finished", since) < since:
                    total += float(record.get("seconds", 0.0))
    return total
