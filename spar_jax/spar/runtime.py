"""Models, engines and trainers for the SPaR pipeline, loaded by checkpoint path on demand.

The pipeline asks for "the actor's engine at checkpoint P" or "train SFT from checkpoint P on data D"; this module
owns loading, sharing (actor and refiner at the same checkpoint share one model), releasing, and training.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the loop is driven by the run config; config.py builds on spar, not the reverse
    from spar_jax.config import ModelSpec, RunConfig


_log = logging.getLogger(__name__)

EngineFactory = Callable[[str, str, "ModelSpec"], Any]  # (role, checkpoint path, spec) -> engine, or None = default
ENGINE_COUNTERS = ("calls", "prompts", "prefill_rows", "decode_rows", "generated_tokens", "decode_slot_steps")


class DeferredEngine:
    """Stands for an engine that ``load()`` returns; loads it on first attribute access and delegates to it."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self._engine = load, None

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_load", "_engine"):  # not set yet (copy, pickle): never load for these
            raise AttributeError(name)
        if self._engine is None:
            self._engine = self._load()
        return getattr(self._engine, name)


class Runtime:
    """Loads engines by (checkpoint path, dtype) and trains models. ``engine_factory`` replaces engine creation
    (tests use it to script a role); by default engines are ``spar_jax.sampling.Engine`` over our models."""

    def __init__(self, cfg: RunConfig, *, mesh=None, engine_factory: EngineFactory | None = None):
        self.cfg = cfg
        self._mesh = mesh
        self._factory = engine_factory
        self._engines: dict[tuple, Any] = {}

    @property
    def mesh(self):
        if self._mesh is None:
            from spar_jax import parallel

            self._mesh = parallel.make_mesh(self.cfg.mesh.shape)
        return self._mesh

    def spec(self, role: str) -> ModelSpec:
        return self.cfg.actor if role == "actor" else self.cfg.refiner

    def engine(self, role: str, path: str):
        """The engine for ``role`` ("actor" | "refiner") at checkpoint ``path``; shared when path and dtype match."""
        spec = self.spec(role)
        key = (path, spec.dtype, spec.param_dtype) if self._factory is None else (role, path)
        if key not in self._engines:
            self._engines[key] = self._make_engine(role, path, spec)
        return self._engines[key]

    def deferred_engine(self, role: str, path: str) -> "DeferredEngine":
        """``engine(role, path)``, loaded on first use: a stage reads and checks its inputs (a prompt file, a dataset
        from the Hub) before it spends time loading a model, so bad input fails fast."""
        return DeferredEngine(lambda: self.engine(role, path))

    def _make_engine(self, role: str, path: str, spec: ModelSpec):
        engine = self._factory(role, path, spec) if self._factory is not None else None
        return engine if engine is not None else self.default_engine(role, path, spec)

    def default_engine(self, role: str, path: str, spec: ModelSpec):
        """``spar_jax.sampling.Engine`` over our model loaded from ``path`` on the run's mesh."""
        from spar_jax.models import from_pretrained, load_tokenizer
        from spar_jax.sampling import Engine

        _log.info("loading %s from %s", role, path)
        model = from_pretrained(
            path,
            dtype=spec.dtype,
            param_dtype=spec.param_dtype,
            mesh=self.mesh,
            rules=self.cfg.mesh.rules,
            attention_impl=spec.attention_impl,
        )
        e = self.cfg.engine
        return Engine(
            model,
            load_tokenizer(path),
            mesh=self.mesh,
            batch_size=e.batch_size,
            batching=e.batching,
            dtype=e.dtype,
            max_length=e.max_length or None,
            truncate=e.truncate,
            progress=e.progress,
        )

    def engine_counters(self) -> dict[int, dict[str, int]]:
        """{id(engine): its ``EngineStats`` counters (``ENGINE_COUNTERS``)} for every loaded engine that keeps
        statistics (an engine shared by actor and refiner appears once; scripted test engines keep none)."""
        out = {}
        for engine in self._engines.values():
            stats = getattr(engine, "stats", None)
            if stats is not None and id(engine) not in out:
                out[id(engine)] = {k: int(getattr(stats, k, 0)) for k in ENGINE_COUNTERS}
        return out

    def release(self) -> None:
        """Drop every loaded engine (before training, to free accelerator memory)."""
        self._engines.clear()
        gc.collect()

    def train(
        self, kind: str, data_path: str, init_path: str, out_dir: str, *, role: str, seed: int, initial: bool = False
    ) -> dict:
        """Train ``kind`` ("dpo" | "sft") from checkpoint ``init_path`` on ``data_path``; export to ``out_dir/hf``.

        ``initial`` selects the Stage-0 SFT settings (``sft0``). Resumes from ``out_dir/checkpoints`` when present.
        Returns the last step's metrics and the step count.
        """
        from spar_jax.models import from_pretrained, load_tokenizer
        from spar_jax.training.trainer import TrainConfig, Trainer, load_data

        self.release()
        spec = self.spec(role)
        settings = dict(self.cfg.dpo if kind == "dpo" else self.cfg.sft0 if initial else self.cfg.sft)
        config = TrainConfig(
            kind=kind,
            seed=seed,
            checkpoint_dir=os.path.join(out_dir, "checkpoints"),
            log_dir=os.path.join(out_dir, "logs"),
            progress_bar=self.cfg.engine.progress,
            **settings,
        )
        tokenizer = load_tokenizer(init_path)
        model = from_pretrained(
            init_path,
            dtype=spec.dtype,
            param_dtype=spec.param_dtype,
            mesh=self.mesh,
            rules=self.cfg.mesh.rules,
            remat=spec.remat,
            scan_layers=spec.scan_layers,
            attention_impl=spec.attention_impl,
        )
        data = load_data(data_path, tokenizer, config)
        trainer = Trainer(model, data, config, tokenizer=tokenizer)
        try:
            metrics = trainer.fit()
            trainer.export(os.path.join(out_dir, "hf"), tokenizer=tokenizer)
            steps = trainer.step
        finally:
            trainer.close()
        del trainer, model
        gc.collect()
        return {"steps": int(steps), "examples": len(data), **{k: float(v) for k, v in metrics.items()}}
