"""Config checks against the device mesh: the mesh shape against the device count, the sharded batch sizes against
the batch axis.

Two entry points, because the device count is not always known when the config is read:

- ``check_static(cfg)`` runs inside ``config.parse``: what the config alone decides (at most one ``-1`` in
  ``mesh.shape``; when every mesh axis the ``batch`` rule names has an explicit size, the batch sizes against it).
- ``validate_against_devices(cfg, num_devices)`` runs in ``main.run`` right after ``jax.distributed.initialize``
  and before any model is loaded. ``jax.device_count()`` initializes the backend, and on a multi-host slice that
  must come after the distributed start-up (initializing first pins each process to its local devices), so
  ``parse`` never asks for it.

The batch sizes checked are the ones whose rows are split over the ``batch`` rule's mesh axes (data x fsdp by
default): ``engine.batch_size`` (prefill rows and decode slots) and, for a run that trains, each training section's
rows per micro-batch (``batch_size / grad_accum_steps``; twice that for DPO without ``share_prompt``, whose pair is
two rows). A size the axis does not divide would be replicated on those chips (every chip repeating the same rows)
or padded, so it is refused with one message naming the key.
"""

from __future__ import annotations

import math

from spar_jax.parallel import MESH_AXES, resolve_mesh_shape


def _batch_axes(cfg) -> tuple[str, ...]:
    return tuple(dict(cfg.mesh.rules).get("batch", ()))


def _training_sections(cfg) -> list[str]:
    """The training sections this run uses: dpo and sft for a SPaR run, sft0 when it has a Stage-0 SFT."""
    if not {"spar", "study"} & set(cfg.stages):
        return []
    out = ["dpo", "sft"]
    spar = cfg.spar
    if spar.initial_sft_actor or spar.initial_sft_refiner or spar.bootstrap_prompts:
        out.append("sft0")
    return out


def sharded_batches(cfg) -> list[tuple[str, int, str]]:
    """[(config key, rows split over the batch axis, how the rows follow from the key)]."""
    out = [("engine.batch_size", int(cfg.engine.batch_size), "")]
    for name in _training_sections(cfg):
        t = getattr(cfg, name)
        micro = int(t["batch_size"]) // max(int(t["grad_accum_steps"]), 1)
        pair_rows = 2 if name == "dpo" and not t["share_prompt"] else 1
        how = []
        if int(t["grad_accum_steps"]) > 1:
            how.append(f"/ {name}.grad_accum_steps={t['grad_accum_steps']}")
        if pair_rows == 2:
            how.append("x 2 rows per pair (dpo.share_prompt=False)")
        out.append((f"{name}.batch_size", micro * pair_rows, " ".join(how)))
    return out


def _check_batches(cfg, shape: tuple[int, ...], devices: str) -> None:
    axes = _batch_axes(cfg)
    size = math.prod(shape[MESH_AXES.index(a)] for a in axes)
    if size <= 1:
        return
    axis_text = " x ".join(f"{a}={shape[MESH_AXES.index(a)]}" for a in axes)
    for key, rows, how in sharded_batches(cfg):
        if rows % size:
            value = f"{rows}" if not how else f"{rows} rows ({key.split('.')[0]}.batch_size {how})"
            raise ValueError(
                f"config key {key!r}: {value} does not divide over the batch axis ({axis_text} = {size}) "
                f"of mesh.shape {tuple(cfg.mesh.shape)}{devices}; pick a multiple of {size} or change "
                f"mesh.shape"
            )


def check_static(cfg) -> None:
    """What the config alone decides; raises ValueError naming the key."""
    shape = tuple(int(x) for x in cfg.mesh.shape)
    if shape.count(-1) > 1:
        raise ValueError(f"config key 'mesh.shape': at most one entry may be -1 (the remaining devices), got {shape}")
    if all(shape[MESH_AXES.index(a)] != -1 for a in _batch_axes(cfg)):
        _check_batches(cfg, shape, "")


def validate_against_devices(cfg, num_devices: int) -> tuple[int, ...]:
    """Check ``mesh.shape`` and the sharded batch sizes against ``num_devices`` (all processes' devices); returns
    the resolved mesh shape. Raises ValueError naming the key."""
    try:
        shape = resolve_mesh_shape(cfg.mesh.shape, num_devices)
    except ValueError as e:
        raise ValueError(f"config key 'mesh.shape': {e}") from None
    _check_batches(cfg, shape, f" on {num_devices} devices")
    return shape
