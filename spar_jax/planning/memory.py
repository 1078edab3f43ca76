"""Per-chip bytes of parameters, optimizer state, gradients and KV cache, from abstract shapes and the run's rules.

Everything here is derived, not tabulated: the model is built with ``jax.eval_shape`` (``abstract_model``), its
parameters get the same ``NamedSharding``s the run gives them (``param_shardings`` over the logical-axis rules) on
an ``AbstractMesh`` of the slice's shape, and each array costs ``prod(sharding.shard_shape(shape)) * itemsize``
bytes on a chip. The optimizer state is ``jax.eval_shape(tx.init, params)`` for the trainer's own optimizer, sharded
the way the trainer shards it (``optax.tree_map_params``: parameter-like leaves follow their parameter, the rest
are replicated).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec

from spar_jax.models.config import ModelConfig
from spar_jax.models.pretrained import abstract_model
from spar_jax.models.transformer import CACHE_AXES, K_CACHE_AXES
from spar_jax.parallel import MESH_AXES, Rules, ShardingContext, logical_to_spec, param_shardings, resolve_mesh_shape


def abstract_mesh(shape: Sequence[int], num_devices: int) -> AbstractMesh:
    """A (data, fsdp, tensor) AbstractMesh for ``num_devices`` chips; -1 in ``shape`` takes the remaining chips.
    Raises ValueError when the shape does not divide the chips (``resolve_mesh_shape``)."""
    resolved = resolve_mesh_shape(shape, num_devices)
    return AbstractMesh(resolved, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def shard_bytes(shape: Sequence[int], dtype, spec: PartitionSpec, mesh) -> int:
    """Bytes one device holds of an array of ``shape``/``dtype`` laid out by ``spec`` on ``mesh``."""
    local = NamedSharding(mesh, spec).shard_shape(tuple(shape))
    return math.prod(local) * jnp.dtype(dtype).itemsize


def undivided(names: Sequence[str | None], shape: Sequence[int], mesh, rules: Rules) -> list[tuple[str, int, str, int]]:
    """Dimensions the rules want sharded over a mesh axis that does not divide them (so they stay replicated).

    Returns [(logical name, dim size, mesh axis, axis size)], in the order ``logical_to_spec`` considers them.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, dim in zip(names, shape):
        size = 1
        for axis in table.get(name, ()) if name is not None else ():
            n = mesh.shape[axis]
            if axis in used or n == 1:
                continue
            if dim % (size * n):
                out.append((name, int(dim), axis, int(n)))
                continue
            used.add(axis)
            size *= n
    return out


@dataclasses.dataclass(frozen=True)
class ParamLayout:
    """Parameters of one model on one mesh.

    Attributes:
      count: number of parameters.
      total_bytes: bytes of all parameters (param dtype), unsharded.
      chip_bytes: bytes of parameters on one chip.
      gathered_layer_bytes: bytes (compute dtype) of one decoder layer's weights once the data/fsdp axes are
        gathered: the transient copy FSDP materializes per layer in forward and backward (0 on a mesh without
        data/fsdp axes).
      unembed_chip_bytes: bytes on one chip of the output projection (what the loss casts to compute dtype).
      layer_chip_bytes: bytes on one chip of the stacked decoder-layer weights (what each forward casts to compute
        dtype when the param dtype differs).
      step_read_bytes: bytes (param dtype) one chip reads per decode step: every weight except an untied input
        embedding (a lookup reads a few rows), with the fsdp axis gathered.
      local: per-chip sizes of the tensor-parallel dimensions {"heads", "kv_heads", "mlp", "vocab"}.
      undivided: [(parameter, logical name, dim, mesh axis, axis size)] dimensions left replicated.
    """

    count: int
    total_bytes: int
    chip_bytes: int
    gathered_layer_bytes: int
    unembed_chip_bytes: int
    layer_chip_bytes: int
    step_read_bytes: int
    local: dict[str, int]
    undivided: tuple[tuple[str, str, int, str, int], ...]


def _split_params(model):
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, state, rest


def _path_name(path) -> str:
    return ".".join(str(getattr(p, "key", p)) for p in path)


def param_layout(cfg: ModelConfig, mesh, rules: Rules, *, dtype: str, param_dtype: str | None) -> ParamLayout:
    """Build the model abstractly on ``mesh`` and measure its parameters per chip (see module docstring)."""
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    _, state, _ = _split_params(model)
    shardings = param_shardings(state, ShardingContext(mesh, rules))
    compute = jnp.dtype(dtype)
    total = chip = gathered = count = unembed = layers = read = 0
    local: dict[str, int] = {}
    flags = []
    leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda v: isinstance(v, nnx.Variable))[0]
    shard_leaves = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    for (path, var), sharding in zip(leaves, shard_leaves):
        name = _path_name(path)
        value = var.get_value()
        names = var.get_metadata().get("logical_axes") or (None,) * len(value.shape)
        size = math.prod(value.shape)
        count += size
        total += size * value.dtype.itemsize
        local_shape = sharding.shard_shape(value.shape)
        chip_bytes = math.prod(local_shape) * value.dtype.itemsize
        chip += chip_bytes
        if name in ("lm_head", "embed") and (name == "lm_head" or cfg.tie_word_embeddings):
            unembed = chip_bytes
        for logical, n in zip(names, local_shape):
            if logical in ("heads", "kv_heads", "mlp", "vocab"):
                local[logical] = int(n)
        flags += [(name, *u) for u in undivided(names, value.shape, mesh, rules)]
        gathered_spec = PartitionSpec(*[_drop_axes(s, ("data", "fsdp")) for s in sharding.spec])
        if not (name == "embed" and not cfg.tie_word_embeddings):
            read += shard_bytes(value.shape, value.dtype, gathered_spec, mesh)
        if names and names[0] == "layers":
            layers += chip_bytes
            if tuple(gathered_spec) != tuple(sharding.spec):
                gathered += shard_bytes(value.shape[1:], compute, PartitionSpec(*gathered_spec[1:]), mesh)
    return ParamLayout(count, total, chip, gathered, unembed, layers, read, local, tuple(flags))


def _drop_axes(entry, axes: tuple[str, ...]):
    """A PartitionSpec entry without the mesh ``axes`` (the layout once those axes are all-gathered)."""
    kept = tuple(a for a in (entry if isinstance(entry, tuple) else (entry,)) if a is not None and a not in axes)
    return kept if len(kept) > 1 else (kept[0] if kept else None)


def optimizer_chip_bytes(
    cfg: ModelConfig, mesh, rules: Rules, tx: optax.GradientTransformation, *, dtype: str, param_dtype: str | None
) -> int:
    """Bytes on one chip of ``tx``'s state for the model's parameters, sharded as the trainer shards it."""
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    _, state, _ = _split_params(model)
    params = nnx.to_pure_dict(state)
    leaves = jax.tree.leaves(
        param_shardings(state, ShardingContext(mesh, rules)), is_leaf=lambda s: isinstance(s, NamedSharding)
    )
    pshard = jax.tree.unflatten(jax.tree.structure(params), leaves)
    opt_shapes = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shard = optax.tree_map_params(tx, lambda _, s: s, opt_shapes, pshard, transform_non_params=lambda _: replicated)
    sizes = jax.tree.map(lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize, opt_shapes, opt_shard)
    return int(sum(jax.tree.leaves(sizes)))


def kv_cache_chip_bytes(cfg: ModelConfig, mesh, rules: Rules, *, rows: int, length: int, dtype: str) -> int:
    """Bytes on one chip of the k and v caches for ``rows`` decode rows of ``length`` slots (``init_cache`` shapes,
    laid out by ``K_CACHE_AXES`` and ``CACHE_AXES``)."""
    v_shape = (cfg.num_hidden_layers, rows, cfg.num_key_value_heads, length, cfg.head_dim)
    k_shape = (*v_shape[:3], cfg.head_dim, length)
    total = 0
    for shape, axes in ((k_shape, K_CACHE_AXES), (v_shape, CACHE_AXES)):
        total += shard_bytes(shape, dtype, logical_to_spec(axes, shape, mesh, rules), mesh)
    return total


def rows_per_chip(rows: int, length: int, width: int, mesh, rules: Rules) -> int:
    """Sequence rows one chip processes of a [rows, length, width] activation laid out by ("batch", "length",
    "embed")."""
    spec = logical_to_spec(("batch", "length", "embed"), (rows, length, width), mesh, rules)
    return NamedSharding(mesh, spec).shard_shape((rows, length, width))[0]


def array_bytes(tree) -> int:
    """Total bytes of a pytree of arrays / ShapeDtypeStructs."""
    return int(sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))
