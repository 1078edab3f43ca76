"""from_pretrained / save_pretrained: HF checkpoints (or GGUF) <-> a sharded Transformer."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.models import weights
from spar_jax.models.config import load_model_config
from spar_jax.models.tokenizer import resolve_checkpoint
from spar_jax.models.transformer import Transformer
from spar_jax.parallel import DEFAULT_RULES, ShardingContext, param_shardings

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name):
    if isinstance(name, str):
        if name not in DTYPES:
            raise ValueError(f"dtype {name!r} is not supported; choose one of {sorted(DTYPES)}")
        return DTYPES[name]
    return jnp.dtype(name)


def abstract_model(
    cfg,
    *,
    dtype="float32",
    param_dtype=None,
    mesh=None,
    rules=DEFAULT_RULES,
    remat="none",
    scan_layers=True,
    attention_impl="auto",
):
    """A Transformer whose parameters are ShapeDtypeStructs (no memory), for loading or planning."""
    shard = ShardingContext(mesh, rules) if mesh is not None else None
    return nnx.eval_shape(
        lambda: Transformer(
            cfg,
            dtype=_dtype(dtype),
            param_dtype=_dtype(param_dtype or dtype),
            remat=remat,
            scan_layers=scan_layers,
            attention_impl=attention_impl,
            shard=shard,
            rngs=nnx.Rngs(0),
        )
    )


def from_pretrained(
    path,
    *,
    dtype="float32",
    param_dtype=None,
    mesh=None,
    rules=DEFAULT_RULES,
    remat="none",
    scan_layers=True,
    attention_impl="auto",
):
    """Load a model from an HF checkpoint directory, a ``.gguf`` file, or ``"demo"``.

    Tensors are streamed one at a time and placed directly with their target sharding on ``mesh`` (by the logical
    axis ``rules``); without a mesh everything lives on the first local device.
    """
    directory = resolve_checkpoint(path)
    cfg = load_model_config(directory)
    model = abstract_model(
        cfg,
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        rules=rules,
        remat=remat,
        scan_layers=scan_layers,
        attention_impl=attention_impl,
    )
    graphdef, state = nnx.split(model)
    if mesh is not None:
        shardings = param_shardings(state, model.shard)
    else:
        shardings = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    weights.load_state(state, cfg, directory, shardings)
    return nnx.merge(graphdef, state)


def save_pretrained(model: Transformer, path, tokenizer=None, *, max_shard_bytes: int = 2 << 30) -> None:
    """Write ``model`` as an HF checkpoint (config.json, safetensors shards + index, generation config, tokenizer).

    Tensors are gathered one layer at a time; with several processes only process 0 writes. The directory is
    written to a temporary sibling and renamed into place; a missing parent directory is created, and the temporary
    sibling of an earlier, killed save to the same path is removed first.
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    cfg = model.config
    state = nnx.state(model, nnx.Param)
    writer = jax.process_index() == 0
    parent = os.path.dirname(os.path.abspath(path))
    tmp = None
    if writer:
        os.makedirs(parent, exist_ok=True)  # like transformers: a missing parent is created
        prefix = f".tmp-save-{os.path.basename(os.path.abspath(path))}-"
        for stale in os.listdir(parent):  # a killed save's partial copy of this same target
            if stale.startswith(prefix):
                shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    shards, current, size = [], {}, 0

    def flush():
        nonlocal current, size
        if current and writer:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(current, os.path.join(tmp, name), metadata={"format": "pt"})
            shards.append((name, list(current)))
        current, size = {}, 0

    for name, array in weights.iter_hf_tensors(state, cfg):
        if size and size + array.nbytes > max_shard_bytes:
            flush()
        current[name] = array
        size += array.nbytes
    flush()
    if not writer:
        return
    try:
        _write_metadata(tmp, model, shards, tokenizer)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_metadata(directory, model, shards, tokenizer):
    cfg = model.config
    if len(shards) == 1:
        os.replace(os.path.join(directory, shards[0][0]), os.path.join(directory, "model.safetensors"))
    else:
        final = []
        for i, (name, names) in enumerate(shards):
            new = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            os.replace(os.path.join(directory, name), os.path.join(directory, new))
            final.append((new, names))
        index = {"metadata": {}, "weight_map": {t: f for f, names in final for t in names}}
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    raw = dict(cfg.raw_dict)
    raw["dtype"] = jnp.dtype(model.param_dtype).name
    raw.pop("torch_dtype", None)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(raw, f, indent=2, sort_keys=True)
    gen = {"bos_token_id": cfg.bos_token_id, "pad_token_id": cfg.pad_token_id}
    if cfg.eos_token_ids:
        gen["eos_token_id"] = list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else cfg.eos_token_ids[0]
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump({k: v for k, v in gen.items() if v is not None}, f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
