"""The ``calibration`` stage: the refiner's judgments of the actor's IFEval answers against the IFEval checker."""

from __future__ import annotations

import os

from spar_jax.config import RunConfig
from spar_jax.eval import calibration
from spar_jax.stages.common import eval_settings, refiner_path


def run(cfg: RunConfig, runtime) -> dict:
    settings = eval_settings(cfg, "calibration")
    deferred = runtime.deferred_engine  # each loaded on first use, after the stage has read its inputs
    actor = None if settings.responses_file else deferred("actor", cfg.actor.path)
    return calibration.run(
        deferred("refiner", refiner_path(cfg)), settings, os.path.join(cfg.workdir, "calibration"), actor_engine=actor
    )
