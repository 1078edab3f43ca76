"""Orbax checkpoints of the train state (periodic, keep-N, async), exact resume, cached reference log-probs.

A checkpoint step directory holds two items: ``state`` (the train-state pytree: step, params, optimizer state, RNG)
and ``meta`` (JSON: data position, the model signature — every parameter's path, shape and dtype — and the
trainer's config). Restoring into a model whose signature differs fails with a ValueError naming the differences.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from spar_jax.files import atomic_open, is_writer

_log = logging.getLogger(__name__)
REFERENCE_FILE = "reference_logps.npz"


def signature(params: Any) -> dict[str, list]:
    """``{"layers/q": [[L, E, H, D], "float32"], ...}`` for a params pytree (arrays or ShapeDtypeStructs)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        out[name] = [list(leaf.shape), str(np.dtype(leaf.dtype))]
    return out


def signature_mismatch(saved: dict, current: dict, limit: int = 6) -> list[str]:
    """Human-readable differences between two signatures (empty when they match)."""
    problems = [f"missing in checkpoint: {k}" for k in sorted(set(current) - set(saved))]
    problems += [f"unexpected in checkpoint: {k}" for k in sorted(set(saved) - set(current))]
    problems += [
        f"{k}: checkpoint has {saved[k][0]} {saved[k][1]}, model has {current[k][0]} {current[k][1]}"
        for k in sorted(set(saved) & set(current))
        if list(saved[k]) != list(current[k])
    ]
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])


class CheckpointStore:
    """A thin shell over ``ocp.CheckpointManager`` for one training run's directory."""

    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        if save_every <= 0 or keep <= 0:
            raise ValueError(f"checkpoints: save_every ({save_every}) and keep ({keep}) must be > 0")
        self.directory = os.path.abspath(os.fspath(directory))
        # A save killed midway leaves a "<step>.orbax-checkpoint-tmp[-<time>]" directory (a model's size; the suffix
        # depends on the Orbax version): removed here, before
        # the manager opens the directory (Orbax's own cleanup_tmp_directories may run in the background).
        _remove_stale_tmp(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
        """Save if ``step`` is due (or ``force``); returns whether a save started. Async saves copy the arrays to
        host memory before returning, so the caller may donate ``state`` to the next step right away."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: Any, current_signature: dict) -> tuple[Any, dict]:
        """Restore ``step`` into the shardings of ``abstract_state`` (ShapeDtypeStructs), checking the signature.

        A step that cannot be read (a torn or half-copied directory) is skipped with a warning naming it, and the
        previous step is restored instead; the state's own ``step`` says which one was. A signature mismatch is an
        error, not a fallback: every step of the directory was written for the same model."""
        steps = [s for s in sorted(self.manager.all_steps(), reverse=True) if s <= step] or [step]
        for i, s in enumerate(steps):
            try:
                return self._restore_step(s, abstract_state, current_signature)
            except ValueError:
                raise
            except Exception as e:  # noqa: BLE001 -- Orbax/tensorstore raise many types for unreadable files
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                if i + 1 == len(steps):
                    raise ValueError(
                        f"{self.directory}: no readable checkpoint (step {s}: {reason}); delete the "
                        "directory to start the training over"
                    ) from None
                _log.warning(
                    "%s: checkpoint step %d is unreadable (%s); restoring step %d instead",
                    self.directory,
                    s,
                    reason,
                    steps[i + 1],
                )
        raise AssertionError("unreachable")

    def _restore_step(self, step: int, abstract_state: Any, current_signature: dict) -> tuple[Any, dict]:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        saved = (meta or {}).get("signature")
        if saved is None:
            raise ValueError(
                f"{self.directory}: checkpoint step {step} has no model signature; it was not written "
                "by spar_jax's trainer"
            )
        problems = signature_mismatch(saved, current_signature)
        if problems:
            raise ValueError(
                f"{self.directory}: checkpoint step {step} does not match the model:\n  " + "\n  ".join(problems)
            )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # -- reference log-probs (DPO): computed once from the starting model, reused on resume ----------------------

    def save_reference(self, fingerprint: str, ref_logps: np.ndarray) -> None:
        if jax.process_index() != 0:
            return
        with atomic_open(os.path.join(self.directory, REFERENCE_FILE), "wb") as f:
            np.savez(f, fingerprint=np.asarray(fingerprint), ref_logps=np.asarray(ref_logps, np.float32))

    def load_reference(self, fingerprint: str) -> Optional[np.ndarray]:
        """The cached reference log-probs for data with ``fingerprint``, or None when absent.

        A cache computed for different data is an error: it would silently pair the wrong references.
        """
        path = os.path.join(self.directory, REFERENCE_FILE)
        if not os.path.exists(path):
            return None
        with np.load(path) as f:
            saved = str(f["fingerprint"])
            ref = np.asarray(f["ref_logps"])
        if saved != fingerprint:
            raise ValueError(
                f"{path}: reference log-probs were computed for different training data "
                f"(fingerprint {saved}, data {fingerprint}); use a fresh checkpoint directory"
            )
        return ref


def _remove_stale_tmp(directory: str) -> None:
    import shutil

    if not is_writer() or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if ".orbax-checkpoint-tmp" in name:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
