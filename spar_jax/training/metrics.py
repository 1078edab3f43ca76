"""Training metrics -> TensorBoard event files, a JSONL log, and a tqdm progress bar (process 0 only)."""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping, Optional

import jax

from spar_jax.files import atomic_open

JSONL_NAME = "metrics.jsonl"
BAR_KEYS = ("loss", "rewards/accuracy", "nll", "tokens_per_s")


class MetricsLogger:
    """Write scalar metrics per step.

    ``log_dir`` receives TensorBoard event files and ``metrics.jsonl`` (one ``{"step": k, name: value, ...}`` per
    line). ``start_step`` > 0 means a resumed run: rows after it (logged by the interrupted run past its last
    checkpoint) are dropped first, so the log has one row per step.
    """

    def __init__(self, log_dir: Optional[str], total_steps: int, *, start_step: int = 0, progress: bool = True):
        self.enabled = jax.process_index() == 0
        self.log_dir = log_dir
        self._writer = self._jsonl = self._bar = None
        if not self.enabled:
            return
        if log_dir:
            from tensorboardX import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, JSONL_NAME)
            _truncate_jsonl(path, start_step)
            self._jsonl = open(path, "a", encoding="utf-8")
            self._writer = SummaryWriter(log_dir, purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self._jsonl.flush()
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{values[k]:.4g}" for k in BAR_KEYS if k in values}, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        for handle in (self._writer, self._jsonl, self._bar):
            if handle is not None:
                handle.close()
        self._writer = self._jsonl = self._bar = None


def _truncate_jsonl(path: str, keep_until: int) -> None:
    """Drop rows with step > ``keep_until`` (all rows when 0) from an existing log, atomically. A torn last line
    (a kill mid-write) is dropped with a warning; a malformed line elsewhere is a ValueError naming it."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line.decode("utf-8")).get("step", 0)
        except (ValueError, AttributeError):
            if any(rest.strip() for rest in lines[i:]):
                raise ValueError(f"{path}:{i}: malformed metrics row; delete the line or the log") from None
            logging.getLogger(__name__).warning("%s:%d: torn last line dropped (%d bytes)", path, i, len(line))
            continue
        if step <= keep_until:
            rows.append(line.decode("utf-8") + "\n")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(rows)
