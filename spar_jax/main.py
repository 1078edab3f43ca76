"""Entry point: ``python -m spar_jax.main --config=configs/NAME.py [--config.key=value ...]``."""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml-collections config file (get_config()).")


def run(config) -> dict:
    """Run the configured stages; returns a summary dict. ``config`` is a ConfigDict."""
    from spar_jax import config as config_lib
    from spar_jax import parallel

    cfg = config_lib.parse(config)
    parallel.maybe_initialize_distributed()
    os.makedirs(cfg.workdir, exist_ok=True)
    summary = {}
    for stage in cfg.stages:
        start = time.time()
        if stage == "answer":
            from spar_jax.stages import answer

            summary[stage] = answer.run(cfg)
        summary[stage]["seconds"] = round(time.time() - start, 2)
        logging.info("stage %s done in %.1fs", stage, summary[stage]["seconds"])
    return summary


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/NAME.py is required")
    try:
        run(_CONFIG.value)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(_main)
