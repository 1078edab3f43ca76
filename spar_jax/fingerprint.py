"""Fingerprints of stages and loop steps: what their artifacts were made from, so one workdir never mixes two runs.

A stage directory holds ``inputs.json`` (written when the stage starts) and, once finished, ``DONE.json`` (which
repeats the inputs). The inputs are a flat ``{key: value}`` dict: the identity of every model checkpoint the stage
reads (its path, plus for a directory a digest of ``config.json``, the index files and the weight files' names and
sizes; for a single file its size and a digest of the whole file), the dtypes, the seed, a digest of the templates
file's contents, and the config keys that shape the stage's output. Settings that change only speed or logging
(batch sizes, checkpoint cadence, progress bars) are left out, so changing them never invalidates a run.

A rerun compares each stage's recorded inputs with its current ones before touching the stage:

* equal: a finished stage is skipped, a half-finished one resumes;
* different, ``on_change="stop"`` (default): :class:`InputsChangedError` (exit code 2 from ``main``) naming the
  changed keys and the stage;
* different, ``on_change="rerun"``: the stage and every stage started after it are deleted, then rerun.

Checkpoints written inside the workdir are identified by their path relative to it: their contents are fixed by the
stage that wrote them, whose own inputs were checked first. Process 0 takes every decision and broadcasts it, so all
processes of a multi-host run take the same branch.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

from spar_jax import files
from spar_jax.parallel import agree, sync_processes

RECORD = "inputs.json"
DONE = "DONE.json"
ON_CHANGE = ("stop", "rerun")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".msgpack", ".pt", ".npz")
_log = logging.getLogger(__name__)

# Config keys (exact, or a prefix ending in ".") that shape each kind of stage's output.
_ENGINE = ("engine.max_length", "engine.truncate")
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "prompts": ("seed", "prompts."),
    "bootstrap": (
        "seed",
        "prompts.constraint_types",
        "prompts.max_constraints",
        "spar.bootstrap_",
        "mining.actor_",
        *_ENGINE,
    ),
    "mine": ("seed", "mining.", "judge.kind", "spar.shard_size", *_ENGINE),
    "search": ("seed", "search.", "mining.judge_", "judge.kind", "spar.shard_size", *_ENGINE),
    "data": ("seed", "mixture."),
    "eval": ("seed", "eval.", *_ENGINE),
    "evaluate": ("seed", "eval.", "prompts.", *_ENGINE),
    "refine_inference": ("seed", "eval.", "search.", "mining.judge_", "mining.k_votes", "prompts.", *_ENGINE),
    "answer": ("seed", "answer.", *_ENGINE),
    **{name: ("seed", f"{name}.", *_ENGINE) for name in ("ifeval", "calibration", "llmbar", "followbench")},
    **{name: ("seed", f"{name}.") for name in ("dpo", "sft", "sft0")},
}
# Keys that were replaced: old name -> the key now read instead. A config still setting an old name is refused with a
# message naming the new key (spar_jax.config); a stage records the new key's value under the old name, the name its
# records have always used, so a finished stage of an older workdir still matches.
RETIRED_KEYS = {"ifeval.prompts_source": "eval.ifeval_source", "calibration.prompts_source": "eval.ifeval_source"}
# Keys under a matched prefix that never shape the output.
_IGNORED = {"save_every", "keep_checkpoints", "progress", "shard_size_hint"}
# Stages that read the templates (judge / refine prompts).
_TEMPLATED = {"bootstrap", "mine", "search", "data", "refine_inference"}


class InputsChangedError(ValueError):
    """A stage's recorded inputs differ from this run's; the message names the keys and the stage."""


@dataclasses.dataclass(frozen=True)
class StageInputs:
    """What a stage is made from: ``values`` is the flat fingerprint; ``workdir`` and ``on_change`` say where later
    stages live and what to do on a difference."""

    workdir: str
    on_change: str
    values: dict[str, Any]
    cascade: bool = True  # False: no later stage reads this one's output (an evaluation); a rerun deletes it alone
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # schema defaults of ``values``' config keys


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 (first 16 hex digits) of a whole file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def model_identity(path: str, workdir: str = "") -> dict[str, Any]:
    """``{"path": ..., "content": ...}`` identifying a checkpoint without reading its weights.

    A directory: digest of config.json, every ``*.json`` index and the weight files' names and sizes. A file (GGUF):
    its size and whole-file digest. A path inside ``workdir``: its relative path only (see the module docstring). A
    name ("demo", a Hub id): the name itself.
    """
    if not path:
        return {"path": ""}
    full = os.path.abspath(path)
    if workdir and os.path.commonpath([full, os.path.abspath(workdir)]) == os.path.abspath(workdir):
        return {"path": os.path.relpath(full, workdir), "content": "workdir"}
    if os.path.isdir(path):
        h = hashlib.sha256()
        for name in sorted(os.listdir(path)):
            p = os.path.join(path, name)
            if name == "config.json" or name.endswith(".index.json"):
                h.update(f"{name}:{file_digest(p)}\n".encode())
            elif name.endswith(_WEIGHT_SUFFIXES):
                h.update(f"{name}:{os.path.getsize(p)}\n".encode())
        return {"path": full, "content": h.hexdigest()[:16]}
    if os.path.isfile(path):
        return {"path": full, "content": f"{os.path.getsize(path)}:{file_digest(path)}"}
    return {"path": path}


def data_identity(path: str, workdir: str = "") -> str:
    """A data file inside the workdir by relative path (its producer was checked); outside by contents."""
    if not path:
        return ""
    full = os.path.abspath(path)
    if workdir and os.path.commonpath([full, os.path.abspath(workdir)]) == os.path.abspath(workdir):
        return os.path.relpath(full, workdir)
    return f"{full}:{file_digest(path)}" if os.path.isfile(path) else path


def templates_identity(templates_file: str) -> str:
    return f"file:{file_digest(templates_file)}" if templates_file else "default"


def config_values(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """The flattened config keys that shape a stage of ``kind`` (see ``STAGE_KEYS``)."""
    flat = _flatten(raw)
    wanted = STAGE_KEYS[kind]
    values = {
        k: v
        for k, v in flat.items()
        if any(k == w or (w.endswith(".") and k.startswith(w)) for w in wanted) and k.rpartition(".")[2] not in _IGNORED
    }
    for name, source in RETIRED_KEYS.items():
        if name.startswith(f"{kind}."):
            values[name] = flat.get(source, "")
    return values


def stage_inputs(
    cfg, kind: str, *, models: dict[str, str] | None = None, data: str = "", cascade: bool = True, **extra
) -> StageInputs:
    """The fingerprint of a stage of ``kind`` run with ``cfg`` (a RunConfig): ``models`` maps a role ("actor",
    "refiner", "judge") to the checkpoint the stage reads; ``data`` is a training data file; ``extra`` adds values
    that are not config keys. ``cascade=False`` marks a stage whose output no later stage reads."""
    raw = cfg.raw
    values = config_values(raw, kind)
    models = dict(models or {})
    if kind == "bootstrap" and raw["spar"]["bootstrap_responses"] != "actor":
        models.pop("actor", None)  # rule-made drafts: no model involved
    if kind == "prompts":
        if raw["prompts"]["evolve"]:
            models["actor"] = raw["actor"]["path"]
        data = data or raw["prompts"]["source"]
    for role, path in sorted(models.items()):
        section = raw.get(role) if role in ("actor", "refiner") else raw.get("actor")
        for k, v in model_identity(path, cfg.workdir).items():
            values[f"model.{role}.{k}"] = v
        values[f"model.{role}.dtype"] = section["dtype"]
        values[f"model.{role}.param_dtype"] = section["param_dtype"] or section["dtype"]
    if kind in _TEMPLATED:
        values["templates"] = templates_identity(raw["spar"]["templates_file"])
    if data:
        values["data"] = data_identity(data, cfg.workdir)
    values.update({f"stage.{k}": v for k, v in extra.items()})
    values = json.loads(json.dumps(values, default=str))
    schema = json.loads(json.dumps(_flatten(getattr(cfg, "defaults", None) or {}), default=str))
    defaults = {k: schema[k] for k in values if k in schema}
    return StageInputs(cfg.workdir, raw.get("on_change", "stop"), values, cascade, defaults)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = object()


def read_record(path: str) -> dict | None:
    """A JSON record; None when absent, {} when unreadable (a torn write counts as other inputs)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a torn record from a killed write of an older version: treated as other inputs


def _local_decision(directory: str, inputs: StageInputs) -> tuple[int, str]:
    """0 = run (fresh or resume), 1 = finished with the same inputs, 2 = recorded inputs differ (+ message),
    3 / 4 = a stage from before fingerprints that matches ``config.json``: adopt it as finished / to resume."""
    done = read_record(os.path.join(directory, DONE))
    record = done.get("inputs") if done is not None else None
    if record is None:
        started = read_record(os.path.join(directory, RECORD))
        record = started.get("values") if started is not None else None
    if record is None and (done is not None or _has_work(directory)):
        return _legacy_decision(directory, inputs, finished=done is not None)
    if record is None:
        return 0, ""
    keys = changed_keys(record, inputs.values)
    if not keys:
        return (1 if done is not None else 0), ""
    shown = ", ".join(
        f"{k} (was {record.get(k, '<absent>')!r}, now {inputs.values.get(k, '<absent>')!r})" for k in keys[:6]
    ) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
    stage = os.path.relpath(directory, inputs.workdir) if inputs.workdir else directory
    return 2, (
        f"{inputs.workdir}: the inputs of stage {stage!r} changed since it ran: {shown}. Use a new workdir, "
        f"or pass --config.on_change=rerun to delete {stage!r} and every later stage and rerun them."
    )


def _has_work(directory: str) -> bool:
    """Anything but temp files of killed writes in ``directory``."""
    return os.path.isdir(directory) and any(not n.startswith(".tmp") for n in os.listdir(directory))


def _legacy_started(directory: str) -> int:
    """When a stage without an inputs record started, as well as it can be told: its oldest file's mtime (ns)."""
    times = [
        os.stat(os.path.join(root, n)).st_mtime_ns
        for root, _, files in os.walk(directory)
        for n in files
        if not n.startswith(".tmp")
    ]
    return min(times, default=time.time_ns())


def _is_config_key(key: str) -> bool:
    return key not in ("templates", "data") and not key.startswith(("model.", "stage."))


def _legacy_decision(directory: str, inputs: StageInputs, *, finished: bool) -> tuple[int, str]:
    """A stage made before fingerprints (work, or DONE.json, but no inputs record): adopted (3 finished, 4 to
    resume) when the workdir's ``config.json`` has this run's values for every config key of the stage, else 2.
    A key an older config.json lacks counts with its schema default (what that run used)."""
    stage = os.path.relpath(directory, inputs.workdir) if inputs.workdir else directory
    old = read_record(os.path.join(inputs.workdir, "config.json")) if inputs.workdir else None
    hint = (
        f"Use a new workdir, or pass --config.on_change=rerun to delete {stage!r} and every later stage and rerun them."
    )
    if not old:
        return 2, (
            f"{inputs.workdir}: stage {stage!r} was made before stage fingerprints, and the workdir has no "
            f"readable config.json to check it against. {hint}"
        )
    recorded = json.loads(json.dumps({**inputs.defaults, **_flatten(old)}, default=str))
    for name, source in RETIRED_KEYS.items():  # a config.json written since the key was shared
        if name not in recorded and source in recorded:
            recorded[name] = recorded[source]
    keys = sorted(k for k, v in inputs.values.items() if _is_config_key(k) and recorded.get(k, _MISSING) != v)
    if not keys:
        return (3 if finished else 4), ""
    shown = ", ".join(f"{k} (was {recorded.get(k, '<absent>')!r}, now {inputs.values[k]!r})" for k in keys[:6]) + (
        f" and {len(keys) - 6} more" if len(keys) > 6 else ""
    )
    return 2, (
        f"{inputs.workdir}: stage {stage!r} was made before stage fingerprints, and the workdir's config.json "
        f"differs from this run in its settings: {shown}. {hint}"
    )


def _adopt(directory: str, inputs: StageInputs, finished: bool) -> None:
    stage = os.path.relpath(directory, inputs.workdir) if inputs.workdir else directory
    _log.warning(
        "%s: stage %r was made before stage fingerprints; config.json has this run's values for its "
        "settings, so it is adopted (%s) and its inputs are recorded now",
        inputs.workdir,
        stage,
        "finished" if finished else "to resume",
    )
    if files.is_writer():
        files.write_json(
            os.path.join(directory, RECORD),
            {"values": inputs.values, "started": _legacy_started(directory), "adopted": time.time_ns()},
        )


def decide(directory: str, inputs: StageInputs | None) -> bool:
    """True if the stage in ``directory`` is finished with these inputs (skip it); False if it must run (fresh or
    resumed), after recording the inputs. Raises InputsChangedError, or with ``on_change="rerun"`` deletes the stage
    and the later ones first. Collective: every process must call it; process 0's view decides."""
    if inputs is None:
        done = agree(int(os.path.exists(os.path.join(directory, DONE))))
        return bool(done)
    code, message = _local_decision(directory, inputs)
    code = agree(code)
    if code in (3, 4):
        _adopt(directory, inputs, finished=code == 3)
        sync_processes(f"adopt:{directory}")
        return code == 3
    if code == 1:
        return True
    if code == 2:
        if inputs.on_change != "rerun":
            raise InputsChangedError(message or f"{directory}: inputs changed (reported by process 0)")
        _log.warning("%s", message.replace("Use a new workdir, or pass --config.on_change=rerun to", "Rerunning:"))
        if files.is_writer():
            delete_from(directory, inputs.workdir if inputs.cascade else "")
        sync_processes(f"rerun:{directory}")
    if files.is_writer() and read_record(os.path.join(directory, RECORD)) is None:
        files.write_json(os.path.join(directory, RECORD), {"values": inputs.values, "started": time.time_ns()})
    sync_processes(f"inputs:{directory}")
    return False


def delete_from(directory: str, workdir: str) -> list[str]:
    """Delete ``directory`` and every stage under ``workdir`` started after it (by the ``started`` time of their
    inputs records; ``workdir=""``: ``directory`` alone). Returns the deleted directories."""
    since = _started(directory)
    doomed = [directory]
    for other in _stage_directories(workdir) if workdir else []:
        if os.path.abspath(other) != os.path.abspath(directory) and _started(other) > since:
            doomed.append(other)
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    return doomed


def _started(directory: str) -> int:
    """When the stage in ``directory`` started: its inputs record's time, else (a stage from before fingerprints)
    its oldest file's."""
    return (read_record(os.path.join(directory, RECORD)) or {}).get("started") or _legacy_started(directory)


def _stage_directories(workdir: str) -> list[str]:
    """Every stage directory under ``workdir``: those holding an inputs record or, from before fingerprints, a
    DONE.json, a plan.json or a checkpoints directory."""
    found = set()
    for marker in (RECORD, DONE, "plan.json", "checkpoints"):
        found.update(
            os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(workdir), "**", marker), recursive=True)
        )
    return sorted(found)


def check_config(workdir: str, raw: dict[str, Any]) -> None:
    """Write ``config.json`` once; on a rerun with another config, keep it, log the differing keys and write the new
    one beside it as ``config.latest.json`` (the stages' own inputs decide whether the run may continue)."""
    path = os.path.join(workdir, "config.json")
    old = read_record(path)
    if not old:
        files.write_json(path, raw)
        return
    keys = changed_keys(_flatten(old), _flatten(json.loads(json.dumps(raw, default=str))))
    if keys:
        _log.warning(
            "%s differs from this run's config in %s; this run's config is in config.latest.json",
            path,
            ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""),
        )
        files.write_json(os.path.join(workdir, "config.latest.json"), raw)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out
