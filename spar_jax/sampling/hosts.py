"""Multi-process plumbing for the engine: placing batches, fetching outputs, sharing work, gathering results.

Two layouts are supported when ``jax.process_count() > 1``:
- a *global* mesh (devices of every process): every process runs every batch, each feeding and computing its own
  rows (its addressable shards); outputs are all-gathered, so every process returns all results;
- a *process-local* model (no mesh, or a mesh of this process's devices): process p runs batches p, p + P, ...
  and the finished results are all-gathered (serialized) in request order.
Every process must call ``generate`` with the same requests; ``check_same_requests`` verifies it.
"""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np


def is_global(mesh) -> bool:
    """True when ``mesh`` spans devices of more than one process."""
    return mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def check_same_requests(token_lists) -> None:
    """Raise (on every process) unless all processes hold the same prompts."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(json.dumps(token_lists).encode()).digest()[:8], np.int32)
    try:
        multihost_utils.assert_equal(digest, "different requests")
    except AssertionError:
        raise ValueError(
            "Engine.generate: processes were given different requests (every process must pass the same list)"
        ) from None


def my_batches(batches: list, mesh) -> list:
    """The batches this process runs (all of them unless work is shared between process-local replicas)."""
    if jax.process_count() == 1 or is_global(mesh):
        return batches
    return batches[jax.process_index() :: jax.process_count()]


def place(array: np.ndarray, sharding):
    """Put a host array (identical on every process) onto ``sharding``; each process supplies its own shards."""
    if sharding is None:
        return array
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def fetch(tree, mesh):
    """Device outputs -> numpy on this process (all-gathered first when the mesh spans processes)."""
    if is_global(mesh) and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))


def gather_records(records: dict[int, dict], mesh) -> dict[int, dict]:
    """Union of every process's {request index: JSON-able record} (identity without work sharing)."""
    if jax.process_count() == 1 or is_global(mesh):
        return records
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(sorted(records.items())).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([blob.size], np.int32))
    padded = np.zeros((int(sizes.max()),), np.uint8)
    padded[: blob.size] = blob
    blobs = multihost_utils.process_allgather(padded)
    merged: dict[int, dict] = {}
    for size, data in zip(sizes.reshape(-1), blobs):
        merged.update({int(k): v for k, v in json.loads(bytes(data[: int(size)]).decode())})
    return merged
