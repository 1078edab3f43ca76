"""The ``ifeval`` stage: IFEval scores of the actor (or of a responses file), written under ``workdir/ifeval``."""

from __future__ import annotations

import os

from spar_jax.config import RunConfig
from spar_jax.eval import run_ifeval
from spar_jax.stages.common import eval_settings, stage_inputs


def run(cfg: RunConfig, runtime) -> dict:
    settings = eval_settings(cfg, "ifeval")
    engine = None if settings.responses_file else runtime.deferred_engine("actor", cfg.actor.path)
    return run_ifeval.run(engine, settings, os.path.join(cfg.workdir, "ifeval"), inputs=stage_inputs(cfg, "ifeval"))
