"""The trainer: a typed config, the sharded train state, one jitted step (SFT or DPO), checkpoints and metrics.

Usage::

    data = load_data("pairs.jsonl", tokenizer, config)          # TrainConfig(kind="dpo", ...)
    trainer = Trainer(model, data, config, tokenizer=tokenizer)  # resumes from config.checkpoint_dir if present
    trainer.fit()                                                # reference log-probs first (DPO), then steps
    trainer.export("out/actor")                                  # HF format

The trainer takes ownership of the model's parameter buffers (they are donated to the step); use
``trainer.model`` for the trained model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from spar_jax.models.pretrained import save_pretrained
from spar_jax.parallel import ShardingContext, make_mesh, param_shardings
from spar_jax.training import step as S
from spar_jax.training.batches import (
    Batches,
    DataPosition,
    TokenizedData,
    collate,
    length_buckets,
    tokenize_dpo,
    tokenize_sft,
)
from spar_jax.training.checkpoints import CheckpointStore, signature
from spar_jax.training.losses import DPO_LOSS_TYPES
from spar_jax.training.metrics import MetricsLogger

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the model and data (defaults: SPaR's actor DPO)."""

    kind: str = "dpo"  # "sft" or "dpo" (DPO + sft_weight × NLL of chosen)
    learning_rate: float = 2e-7
    schedule: str = "linear"  # "linear" decay to 0, or "constant"; both after warm-up
    warmup_ratio: float = 0.1
    epochs: int = 1
    max_steps: Optional[int] = None  # overrides epochs when set
    batch_size: int = 32  # examples (pairs) per optimizer step, over all devices
    grad_accum_steps: int = 1  # micro-batches per step; must divide batch_size
    max_grad_norm: Optional[float] = 1.0  # None/0 disables clipping
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    beta: float = 0.1
    sft_weight: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    share_prompt: bool = True  # DPO: one row per pair, the shared prompt computed once (pack_pair)
    max_length: int = 2048
    max_prompt_length: int = 1024
    seed: int = 0  # data order and the RNG in the train state
    logits_chunk_size: int = 256  # tokens per log-prob chunk; 0 = full logits, no recompute (more memory)
    group_by_length: bool = True
    min_bucket: int = 64  # smallest padded length; buckets double up to max_length
    reference_batch_size: Optional[int] = None  # pairs per reference forward (default: the micro-batch)
    checkpoint_dir: Optional[str] = None
    save_every: int = 500
    keep_checkpoints: int = 2
    async_checkpoints: bool = True
    log_dir: Optional[str] = None
    progress_bar: bool = True

    def __post_init__(self):
        def bad(key, why):
            raise ValueError(f"TrainConfig.{key}={getattr(self, key)!r}: {why}")

        if self.kind not in ("sft", "dpo"):
            bad("kind", "choose 'sft' or 'dpo'")
        if self.schedule not in S.SCHEDULES:
            bad("schedule", f"choose one of {S.SCHEDULES}")
        if self.loss_type not in DPO_LOSS_TYPES:
            bad("loss_type", f"choose one of {DPO_LOSS_TYPES}")
        if not self.learning_rate >= 0:
            bad("learning_rate", "must be >= 0")
        if not 0 <= self.warmup_ratio <= 1:
            bad("warmup_ratio", "must be in [0, 1]")
        if self.logits_chunk_size < 0:
            bad("logits_chunk_size", "must be >= 0")
        for key in (
            "epochs",
            "batch_size",
            "grad_accum_steps",
            "save_every",
            "keep_checkpoints",
            "max_length",
            "min_bucket",
        ):
            if int(getattr(self, key)) <= 0:
                bad(key, "must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            bad("max_steps", "must be > 0 (or None)")
        if self.batch_size % self.grad_accum_steps:
            bad("grad_accum_steps", f"must divide batch_size={self.batch_size}")
        if not 0 < self.max_prompt_length < self.max_length:
            bad("max_prompt_length", f"must be in (0, max_length={self.max_length})")
        if not self.beta > 0:
            bad("beta", "must be > 0")
        if not self.sft_weight >= 0:
            bad("sft_weight", "must be >= 0")
        if not 0 <= self.label_smoothing < 0.5:
            bad("label_smoothing", "must be in [0, 0.5)")


def load_data(records: Any, tokenizer, config: TrainConfig) -> TokenizedData:
    """Tokenize SFT or DPO records (a .jsonl/.json path, a datasets.Dataset or a list of dicts) for ``config``."""
    fn = tokenize_sft if config.kind == "sft" else tokenize_dpo
    return fn(records, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length)


def compute_reference_logps(
    model,
    data: TokenizedData,
    *,
    pairs_per_batch: int,
    chunk_size: int = 256,
    min_bucket: int = 64,
    packed: bool = True,
) -> np.ndarray:
    """[N, 2] float32 sums of target log-probs of (chosen, rejected) under ``model``, one jitted pass over ``data``
    (``packed``: pairs as ``pack_pair`` rows, as the trainer's ``share_prompt`` steps see them)."""
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    ctx = _context(model)
    replicated = NamedSharding(ctx.mesh, PartitionSpec())  # every process can read the result
    fn = jax.jit(S.make_pair_logps(graphdef, jax.tree.structure(state), rest, chunk_size), out_shardings=replicated)
    params = nnx.to_pure_dict(state)
    lengths = data.packed_lengths() if packed else data.lengths
    buckets = length_buckets(int(lengths.max()), min(min_bucket, int(lengths.max())))
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(data), 2), np.float32)
    for start in range(0, len(order), pairs_per_batch):
        idx = order[start : start + pairs_per_batch]
        length = next(b for b in buckets if b >= lengths[idx].max())
        b = collate(data, idx, pairs_per_batch, length, packed=packed)
        arrays = {k: _place(v, ctx, ("batch", "length")) for k, v in b.items() if k not in ("valid", "ref_logps")}
        out[idx] = np.asarray(jax.device_get(fn(params, arrays)))[: len(idx)]
    return out


def _context(model) -> ShardingContext:
    """The model's sharding context, or a one-device mesh for a model loaded without one."""
    return model.shard or ShardingContext(make_mesh((1, 1, 1), devices=jax.local_devices()[:1]))


def _place(array: np.ndarray, ctx: ShardingContext, names) -> jax.Array:
    """A host array (identical on every process) -> a global jax.Array sharded by logical ``names``."""
    sharding = ctx.sharding(names, array.shape)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


class Trainer:
    """Owns the sharded train state and runs ``fit``; see the module docstring."""

    def __init__(self, model, data: TokenizedData, config: TrainConfig, *, tokenizer=None):
        if data.kind != config.kind:
            raise ValueError(f"the data is {data.kind!r} but TrainConfig.kind is {config.kind!r}")
        self.config, self.data, self.tokenizer = config, data, tokenizer
        self.fingerprint = data.fingerprint()
        self.ctx = _context(model)
        self.graphdef, state, self.rest = nnx.split(model, nnx.Param, ...)
        self.state_def = jax.tree.structure(state)
        params = nnx.to_pure_dict(state)
        if any(a is not b for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(params))):
            raise AssertionError("nnx.State and its pure dict flatten in different orders")
        self.micro = config.batch_size // config.grad_accum_steps
        self.packed = config.kind == "dpo" and config.share_prompt
        lengths = data.packed_lengths() if self.packed else data.lengths
        top = max(config.max_length, int(lengths.max()))
        self.batches = Batches(
            data,
            config.batch_size,
            seed=config.seed,
            group_by_length=config.group_by_length,
            buckets=length_buckets(top, min(config.min_bucket, top)),
            packed=self.packed,
        )
        self.total_steps = config.max_steps or config.epochs * self.batches.steps_per_epoch
        self.schedule = S.make_schedule(config.schedule, config.learning_rate, self.total_steps, config.warmup_ratio)
        self.tx = S.make_optimizer(
            self.schedule,
            weight_decay=config.weight_decay,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            max_grad_norm=config.max_grad_norm,
        )
        self.spec = S.LossSpec(
            config.kind,
            config.beta,
            config.sft_weight,
            config.loss_type,
            config.label_smoothing,
            config.logits_chunk_size,
        )
        self.shardings = self._state_shardings(state, params)
        self.signature = signature(params)
        self.position = DataPosition()
        self.ckpt = (
            CheckpointStore(
                config.checkpoint_dir,
                save_every=config.save_every,
                keep=config.keep_checkpoints,
                async_save=config.async_checkpoints,
            )
            if config.checkpoint_dir
            else None
        )
        latest = self.ckpt.latest_step() if self.ckpt else None
        if latest is None:
            self.state = self._init_state(params)
        else:
            self.state = self._restore(latest, params)
        self.step = int(self.state["step"])
        self._step_fn = jax.jit(
            S.make_train_step(self.graphdef, self.state_def, self.rest, self.tx, self.schedule, self.spec),
            out_shardings=(self.shardings, self._replicated),
            donate_argnums=(0,),
        )

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    def _replicated(self) -> NamedSharding:
        return NamedSharding(self.ctx.mesh, PartitionSpec())

    def _state_shardings(self, state, params) -> dict:
        leaves = jax.tree.leaves(param_shardings(state, self.ctx))
        pshard = jax.tree.unflatten(jax.tree.structure(params), leaves)
        opt_shapes = jax.eval_shape(self.tx.init, params)
        opt = optax.tree_map_params(
            self.tx, lambda _, s: s, opt_shapes, pshard, transform_non_params=lambda _: self._replicated
        )
        return {"step": self._replicated, "params": pshard, "opt_state": opt, "rng": self._replicated}

    def _init_state(self, params) -> dict:
        params = jax.device_put(params, self.shardings["params"])
        opt_state = jax.jit(self.tx.init, out_shardings=self.shardings["opt_state"])(params)
        rep = self._replicated
        return {
            "step": jax.device_put(jnp.zeros((), jnp.int32), rep),
            "params": params,
            "opt_state": opt_state,
            "rng": jax.device_put(jax.random.PRNGKey(self.config.seed), rep),
        }

    def _abstract_state(self, params) -> dict:
        shapes = {
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "params": params,
            "opt_state": jax.eval_shape(self.tx.init, params),
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
        }
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, self.shardings)

    def _meta(self) -> dict:
        return {
            "position": dataclasses.asdict(self.position),
            "signature": self.signature,
            "total_steps": self.total_steps,
            "data_fingerprint": self.fingerprint,
            "config": dataclasses.asdict(self.config),
        }

    def _restore(self, step: int, params) -> dict:
        state, meta = self.ckpt.restore(step, self._abstract_state(params), self.signature)
        if meta.get("data_fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.ckpt.directory}: checkpoint step {step} was trained on different data; "
                "resume with the same data (and tokenizer/max lengths) or use a new checkpoint_dir"
            )
        if meta.get("total_steps") != self.total_steps:
            raise ValueError(
                f"{self.ckpt.directory}: checkpoint run has {meta.get('total_steps')} total steps, this "
                f"config gives {self.total_steps}; the learning-rate schedule would not match"
            )
        changed = sorted(k for k, v in meta.get("config", {}).items() if getattr(self.config, k, v) != v)
        if changed:
            _log.warning("resuming with changed config keys: %s", ", ".join(changed))
        self.position = DataPosition(**meta["position"])
        _log.info(
            "resumed from %s step %d (epoch %d, batch %d)",
            self.ckpt.directory,
            step,
            self.position.epoch,
            self.position.step,
        )
        return state

    @property
    def model(self):
        """The model with the current parameters (buffers are shared with the train state)."""
        return nnx.merge(self.graphdef, S.params_to_state(self.state["params"], self.state_def), self.rest)

    # -- running ----------------------------------------------------------------------------------------------------

    def ensure_reference(self) -> None:
        """DPO: attach reference log-probs (cached in the checkpoint dir, else one pass of the starting model)."""
        if self.config.kind != "dpo" or self.data.ref_logps is not None:
            return
        ref = self.ckpt.load_reference(self.fingerprint) if self.ckpt else None
        if ref is None:
            if self.step > 0:
                raise ValueError(
                    "resuming a DPO run whose reference log-probs are not in the checkpoint directory; "
                    "they must come from the starting model"
                )
            ref = compute_reference_logps(
                self.model,
                self.data,
                chunk_size=self.config.logits_chunk_size,
                pairs_per_batch=self.config.reference_batch_size or self.micro,
                min_bucket=self.config.min_bucket,
                packed=self.packed,
            )
            if self.ckpt:
                self.ckpt.save_reference(self.fingerprint, ref)
        self.data = self.data.with_reference(ref)
        self.batches.data = self.data

    def _device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        a = self.config.grad_accum_steps
        out = {}
        for key, value in batch.items():
            value = value.reshape(a, value.shape[0] // a, *value.shape[1:])
            names = (None, "batch", "length") if value.ndim == 3 and key != "ref_logps" else (None, "batch", None)
            out[key] = _place(value, self.ctx, names[: value.ndim])
        return out

    def fit(
        self, *, until_step: Optional[int] = None, on_step: Optional[Callable[[int, dict], None]] = None
    ) -> dict[str, float]:
        """Train to ``total_steps`` (or stop early at ``until_step``, saving a checkpoint there); returns the last
        step's metrics. ``on_step(step, metrics)`` runs after every step (and its checkpoint save)."""
        self.ensure_reference()
        stop = min(until_step or self.total_steps, self.total_steps)
        cfg = self.config
        logger = MetricsLogger(cfg.log_dir, self.total_steps, start_step=self.step, progress=cfg.progress_bar)
        batches = self.batches.iterate(self.position)
        metrics: dict[str, float] = {}
        try:
            while self.step < stop:
                position, batch = next(batches)
                metrics = self.train_step(batch)
                metrics["epoch"] = self.position.epoch  # the epoch this batch came from
                self.position = position
                logger.log(self.step, metrics)
                if self.ckpt:
                    self.ckpt.save(self.step, self.state, self._meta(), force=self.step == stop)
                if on_step:
                    on_step(self.step, metrics)
        finally:
            logger.close()
            if self.ckpt:
                self.ckpt.wait()
        return metrics

    def train_step(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One optimizer step on a host batch from ``collate`` (``batch_size`` examples); returns its metrics.

        ``fit`` calls this; it does not move the data position or save checkpoints by itself.
        """
        real_tokens = int(batch["attention_mask"].sum())
        start = time.perf_counter()
        self.state, device_metrics = self._step_fn(self.state, self._device_batch(batch))
        metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        elapsed = time.perf_counter() - start
        self.step += 1
        metrics.update(tokens_per_s=real_tokens / elapsed, step_time_s=elapsed)
        return metrics

    def export(self, path: str, tokenizer=None) -> None:
        """Write the current model in HF format (config, safetensors, tokenizer) via ``save_pretrained``."""
        save_pretrained(self.model, path, tokenizer=tokenizer or self.tokenizer)

    def close(self) -> None:
        if self.ckpt:
            self.ckpt.close()
