"""The ``followbench`` stage: FollowBench scores of the actor, judged by a judge model (default: the refiner)."""

from __future__ import annotations

import dataclasses
import os

from spar_jax.config import RunConfig
from spar_jax.eval import followbench
from spar_jax.stages.common import eval_settings, refiner_path


def run(cfg: RunConfig, runtime) -> dict:
    settings = eval_settings(cfg, "followbench")
    deferred = runtime.deferred_engine  # each loaded on first use, after the stage has read its inputs
    judge_path = cfg.judge_paths.get("followbench") or refiner_path(cfg)
    actor = None if settings.responses_file else deferred("actor", cfg.actor.path)
    if not settings.judge_name:
        settings = dataclasses.replace(settings, judge_name=judge_path)
    return followbench.run(
        actor, settings, os.path.join(cfg.workdir, "followbench"), judge_engine=deferred("refiner", judge_path)
    )
