"""Device mesh (data, fsdp, tensor), logical-axis sharding rules, and multi-host start-up.

Every parameter and key activation carries logical axis names (``vocab``, ``embed``, ``heads``, ``kv_heads``,
``head_dim``, ``mlp``, ``batch``, ``length``, ``layers``, ...). ``rules`` map each logical name to zero or more mesh
axes. A dimension that does not divide evenly over its mesh axes is replicated instead (e.g. SmolLM2's 9 heads over a
tensor axis of 2), so any model runs on any mesh.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. FSDP shards the embed dimension of every weight; tensor parallelism shards heads / mlp /
# vocab; the batch is split over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", ()),
    ("cache_length", ()),
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("mlp", ("tensor",)),
    ("layers", ()),
    ("norm", ()),
)

Rules = tuple[tuple[str, tuple[str, ...]], ...]

_log = logging.getLogger(__name__)


def normalize_rules(rules) -> Rules:
    """Accept [(name, None | str | [str, ...]), ...] and return a hashable tuple form."""
    out = []
    for name, axes in rules:
        if axes is None:
            axes = ()
        elif isinstance(axes, str):
            axes = (axes,)
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"sharding rule for {name!r} names unknown mesh axes {unknown}; mesh axes are {MESH_AXES}")
        out.append((str(name), tuple(axes)))
    return tuple(out)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replace a single -1 in ``shape`` with the remaining devices; check the product equals ``num_devices``."""
    shape = [int(s) for s in shape]
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries for axes {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    if -1 in shape:
        rest = math.prod(s for s in shape if s != -1)
        if rest <= 0 or num_devices % rest:
            raise ValueError(f"mesh shape {shape} does not divide {num_devices} devices")
        shape[shape.index(-1)] = num_devices // rest
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices but {num_devices} are available")
    return tuple(shape)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types over ``devices`` (default: all global devices)."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = resolve_mesh_shape(shape, len(devices))
    device_grid = np.asarray(devices, dtype=object).reshape(resolved)
    try:
        from jax.experimental import mesh_utils

        device_grid = mesh_utils.create_device_mesh(resolved, devices=devices)
    except Exception:  # non-TPU backends or shapes mesh_utils cannot lay out: keep the plain order
        pass
    return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


@dataclasses.dataclass(frozen=True)
class ShardingContext:
    """A mesh plus logical-axis rules: everything needed to place arrays by their logical names."""

    mesh: Mesh
    rules: Rules = DEFAULT_RULES

    def spec(self, names: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec:
        return logical_to_spec(names, shape, self.mesh, self.rules)

    def sharding(self, names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(names, shape))

    def axis_size(self, name: str) -> int:
        """How many ways the rules may split logical axis ``name``: the product of its mesh axes' sizes."""
        return math.prod(self.mesh.shape[axis] for axis in dict(self.rules).get(name, ()))


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> PartitionSpec:
    """PartitionSpec for an array of ``shape`` whose dimensions have logical ``names``.

    A mesh axis is used at most once; mesh axes of size 1 are dropped; a dimension keeps only the leading mesh axes
    whose product divides it.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        axes = []
        size = 1
        for axis in table.get(name, ()) if name is not None else ():
            n = mesh.shape[axis]
            if axis in used or n == 1 or dim % (size * n):
                continue
            axes.append(axis)
            size *= n
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None], ctx: ShardingContext | None) -> jax.Array:
    """``with_sharding_constraint`` by logical names; identity without a sharding context."""
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(x, ctx.sharding(names, x.shape))


def param_shardings(state, ctx: ShardingContext):
    """Map an nnx State (or any pytree of Variables with ``logical_axes`` metadata) to NamedShardings."""
    from flax import nnx

    def one(v):
        names = v.get_metadata().get("logical_axes") if isinstance(v, nnx.Variable) else None
        value = v.get_value() if isinstance(v, nnx.Variable) else v
        if names is None:
            names = (None,) * len(value.shape)
        return ctx.sharding(names, value.shape)

    return jax.tree.map(one, state, is_leaf=lambda v: isinstance(v, nnx.Variable))


def shard_state(state, ctx: ShardingContext):
    """Place every array of an nnx State on the mesh by its logical names."""
    shardings = param_shardings(state, ctx)
    return jax.device_put(state, shardings)


def maybe_initialize_distributed() -> bool:
    """Call ``jax.distributed.initialize()`` when launched as one of several processes.

    Detected from the standard variables (``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``)
    or a Cloud TPU pod environment (``TPU_WORKER_HOSTNAMES`` with more than one host). Returns True if initialized.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h]) > 1:
        jax.distributed.initialize()
        return True
    return False


def sync_processes(name: str) -> None:
    """Barrier across the processes of a multi-process run (a no-op with one process): after process 0 wrote a
    shared file, the others wait here before reading it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(value: int) -> int:
    """Process 0's ``value`` on every process (identity with one process): a decision taken once, from one view of
    the shared files, so that every process takes the same branch and reaches the same barriers."""
    return int(agree_all([value])[0])


def agree_all(values: Sequence[int]) -> np.ndarray:
    """Process 0's int vector on every process; every process must pass one of the same length."""
    values = np.asarray(values, dtype=np.int32)
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(values), dtype=np.int32)
