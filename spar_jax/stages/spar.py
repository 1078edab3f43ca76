"""The ``spar`` stage: the SPaR loop (``spar_jax.spar.pipeline``), resumable step by step under ``workdir``."""

from __future__ import annotations

from spar_jax.config import RunConfig
from spar_jax.spar.pipeline import Pipeline


def run(cfg: RunConfig, runtime) -> dict:
    return Pipeline(cfg, runtime).run()
