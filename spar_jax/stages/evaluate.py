"""The ``evaluate`` stage: the loop's per-iteration evaluation of ``actor.path`` (held-out prompts, IFEval when
``eval.ifeval_source`` is set), written under ``workdir/evaluate``."""

from __future__ import annotations

import os

from spar_jax import files
from spar_jax.config import RunConfig
from spar_jax.judge import generation as gen
from spar_jax.spar import evaluation, sources


def run(cfg: RunConfig, runtime) -> dict:
    # The held-out prompts of a SPaR run in this workdir, so the numbers compare with the run's own evaluations.
    path = os.path.join(cfg.workdir, "prompts", "heldout.jsonl")
    heldout = list(files.read_jsonl(path)) if os.path.exists(path) else sources.heldout_prompts(cfg)
    directory = os.path.join(cfg.workdir, "evaluate")
    source = path if os.path.exists(path) else "the generated held-out prompts"
    with gen.prompt_source([(p["key"], p["prompt"]) for p in heldout], source):
        return evaluation.evaluate_actor(
            runtime.engine("actor", cfg.actor.path), heldout, cfg, directory, seed=cfg.seed
        )
