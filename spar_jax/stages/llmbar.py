"""The ``llmbar`` stage: the refiner as a judge on LLMBar's pairs."""

from __future__ import annotations

import os

from spar_jax.config import RunConfig
from spar_jax.eval import llmbar
from spar_jax.stages.common import eval_settings, refiner_path


def run(cfg: RunConfig, runtime) -> dict:
    settings = eval_settings(cfg, "llmbar")
    return llmbar.run(
        runtime.deferred_engine("refiner", refiner_path(cfg)), settings, os.path.join(cfg.workdir, "llmbar")
    )
