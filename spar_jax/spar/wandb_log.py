"""The report's scalars to Weights & Biases (``logging.wandb_project``; the optional ``wandb`` extra).

The report is rewritten after every iteration; W&B history is append-only, so ``wandb_state.json`` in the workdir
keeps the run id and the iterations already logged. A resumed loop continues the same W&B run and logs each
iteration once (step = iteration). ``WANDB_MODE=offline`` writes the run under ``WORKDIR/wandb/`` for a later
``wandb sync``. Only process 0 logs.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from spar_jax import files

STATE = "wandb_state.json"


def log_rows(workdir: str, project: str, rows: list[dict], config: dict[str, Any]) -> list[int]:
    """Log the scalars of the ``rows`` (report rows) not logged yet; returns the iterations logged now."""
    import jax

    if not project or jax.process_index() != 0:
        return []
    try:
        import wandb
    except ImportError:
        raise ValueError(
            "config key 'logging.wandb_project' is set but wandb is not installed: pip install 'spar_jax[wandb]'"
        ) from None
    from spar_jax.spar.report import scalars

    path = os.path.join(workdir, STATE)
    state = {"run_id": uuid.uuid4().hex[:8], "logged": []}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    todo = [r for r in rows if r["iteration"] not in state["logged"] and scalars(r)]
    if not todo:
        return []
    run = wandb.init(
        project=project,
        id=state["run_id"],
        resume="allow",
        dir=workdir,
        config=config,
        name=os.path.basename(os.path.abspath(workdir)),
    )
    try:
        for r in sorted(todo, key=lambda r: r["iteration"]):
            run.log({f"spar/{k}": v for k, v in scalars(r).items()}, step=r["iteration"])
            state["logged"].append(r["iteration"])
    finally:
        run.finish()
        files.write_json(path, state)
    return [r["iteration"] for r in todo]
