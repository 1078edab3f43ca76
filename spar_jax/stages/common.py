"""What the stages run from the entry point share: the fingerprint of a stage's inputs and an evaluation's settings."""

from __future__ import annotations

import dataclasses
from typing import Any

from spar_jax import fingerprint
from spar_jax.config import RunConfig

LOOP_STAGES = ("spar", "study")  # they fingerprint each of their own steps


def refiner_path(cfg: RunConfig) -> str:
    """The refiner's checkpoint: ``refiner.path``, else the actor's."""
    return cfg.refiner.path or cfg.actor.path


def stage_inputs(cfg: RunConfig, stage: str) -> fingerprint.StageInputs | None:
    """The fingerprint of a stage run from the entry point: the models it reads, and the files it scores; None for
    the loop stages."""
    if stage in LOOP_STAGES:
        return None
    refiner = refiner_path(cfg)
    models, data = {"actor": cfg.actor.path}, ""
    if stage in cfg.evals:
        settings = cfg.evals[stage]
        data = getattr(settings, "responses_file", "")
        if data:
            models = {}
        if stage in ("calibration", "llmbar"):
            models["refiner"] = refiner
        if stage == "followbench":
            models["judge"] = cfg.judge_paths.get(stage) or refiner
    elif stage == "refine_inference":
        models["refiner"] = refiner
    return fingerprint.stage_inputs(cfg, stage, models=models, data=data, cascade=False)


def eval_settings(cfg: RunConfig, name: str) -> Any:
    """The settings dataclass of evaluation ``name``, labelled by the checkpoint it scores when unlabelled."""
    settings = cfg.evals[name]
    if settings.label:
        return settings
    return dataclasses.replace(
        settings, label=cfg.actor.path if name in ("ifeval", "followbench") else refiner_path(cfg)
    )
