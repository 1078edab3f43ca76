"""The dtype of an engine's weight copy, and making that copy (the caller's weights stay as they are)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def engine_dtype(requested, model) -> jnp.dtype:
    """The dtype an engine holds its weights (and KV cache) in: ``requested``, or for None / "auto" bfloat16 on
    TPU/GPU (decode reads every weight per step; half the bytes) and the model's own parameter dtype on CPU (where
    bfloat16 arithmetic is emulated and slower)."""
    if requested in (None, "auto"):
        return jnp.dtype(jnp.bfloat16) if jax.default_backend() in ("tpu", "gpu") else model.param_dtype
    try:
        dtype = jnp.dtype(requested)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Engine: dtype={requested!r}; give a floating dtype (e.g. 'bfloat16') or 'auto'")
    return dtype


def cast_model(model, dtype):
    """The model with its floating parameters (and compute dtype) in ``dtype``: a separate copy, so the caller's
    (e.g. float32 master) weights stay as they are; the model itself when nothing changes."""
    if model.param_dtype == dtype and model.dtype == dtype:
        return model
    graphdef, state = nnx.split(model)
    cast = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    copy = nnx.merge(graphdef, cast, copy=True)
    copy.dtype = copy.param_dtype = dtype
    return copy
