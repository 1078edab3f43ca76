"""IFEval prompts and responses: loading and validation.

Prompts follow IFEval's schema (``key``, ``prompt``, ``instruction_id_list``,
``kwargs``) and come from a local JSONL file or a Hugging Face ``datasets``
name (default ``google/IFEval``). Responses follow the reference's response
format: JSONL lines with ``prompt`` and ``response``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from spar_jax.files import SourceUnavailableError

from .registry import build_checker

DEFAULT_SOURCE = "google/IFEval"
_PROMPT_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz")


@dataclasses.dataclass(frozen=True)
class IFEvalPrompt:
    """One IFEval prompt; ``kwargs[i]`` holds the non-None kwargs of instruction i."""

    key: int
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


def prompt_from_record(record: Any) -> IFEvalPrompt:
    """Validates one IFEval record (a dict) into an :class:`IFEvalPrompt`.

    Checks field presence and types and builds every instruction's checker, so
    unknown ids and bad kwargs surface here. Raises ValueError (no location;
    callers prefix it).
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for field in _PROMPT_FIELDS:
        if field not in record:
            raise ValueError(f"missing field {field!r}")
    key, prompt = record["key"], record["prompt"]
    ids, kwargs = record["instruction_id_list"], record["kwargs"]
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"field 'key' must be an integer, got {key!r}")
    if not isinstance(prompt, str):
        raise ValueError(f"field 'prompt' must be a string, got {type(prompt).__name__}")
    if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
        raise ValueError("field 'instruction_id_list' must be a list of strings")
    if not isinstance(kwargs, (list, tuple)) or len(kwargs) != len(ids):
        raise ValueError(f"field 'kwargs' must be a list with one dict per instruction ({len(ids)})")
    cleaned = []
    for instruction_id, kw in zip(ids, kwargs):
        build_checker(instruction_id, kw)
        cleaned.append({k: v for k, v in (kw or {}).items() if v is not None})
    return IFEvalPrompt(int(key), prompt, tuple(ids), tuple(cleaned))


def _check_unique(prompts: list[IFEvalPrompt], where: list[str]) -> None:
    seen_prompt: dict[str, str] = {}
    seen_key: dict[int, str] = {}
    for p, loc in zip(prompts, where):
        if p.prompt in seen_prompt:
            raise ValueError(f"{loc}: duplicate prompt text (first at {seen_prompt[p.prompt]})")
        if p.key in seen_key:
            raise ValueError(f"{loc}: duplicate key {p.key} (first at {seen_key[p.key]})")
        seen_prompt[p.prompt] = loc
        seen_key[p.key] = loc


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; line-numbered errors."""
    if path.suffix == ".gz":
        import gzip

        opener = lambda: gzip.open(path, "rb")  # noqa: E731
    else:
        opener = lambda: open(path, "rb")  # noqa: E731
    with opener() as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e}") from None
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: invalid JSON: nested too deeply") from None


def prompts_from_jsonl(path: str | os.PathLike) -> list[IFEvalPrompt]:
    path = Path(path)
    prompts, where = [], []
    for lineno, record in _read_jsonl(path):
        try:
            prompts.append(prompt_from_record(record))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        where.append(f"{path}:{lineno}")
    if not prompts:
        raise ValueError(f"{path}: no IFEval prompts in file")
    _check_unique(prompts, where)
    return prompts


def prompts_from_hub(name: str, split: str = "train") -> list[IFEvalPrompt]:
    try:
        import datasets

        rows = datasets.load_dataset(name, split=split)
    except Exception as e:  # the hub client raises many unrelated types when offline
        raise SourceUnavailableError(
            f"could not load IFEval prompts from the Hugging Face dataset {name!r} (split "
            f"{split!r}): {type(e).__name__}: {e}\nIf this machine is offline, pass a local "
            "JSONL file with IFEval's schema (key, prompt, instruction_id_list, kwargs) "
            "instead, e.g. the reference's instruction_following_eval/data/input_data.jsonl."
        ) from e
    prompts, where = [], []
    for index, record in enumerate(rows):
        try:
            prompts.append(prompt_from_record(record))
        except ValueError as e:
            raise ValueError(f"dataset {name!r} row {index}: {e}") from None
        where.append(f"dataset {name!r} row {index}")
    _check_unique(prompts, where)
    return prompts


def load_ifeval_prompts(source: str | os.PathLike = DEFAULT_SOURCE, *, split: str = "train") -> list[IFEvalPrompt]:
    """IFEval prompts from a local JSONL path or a ``datasets`` hub name.

    An existing path is read as JSONL (``.gz`` allowed); a string that names no
    existing file but ends in .jsonl/.json/.gz (or is a ``PathLike``) is a
    missing-file error; any other string goes to ``datasets.load_dataset``
    (a hub name, or a local dataset directory). Every record is validated (see
    :func:`prompt_from_record`); errors name the file and line.
    """
    path = Path(source)
    if path.is_file():
        return prompts_from_jsonl(path)
    if isinstance(source, os.PathLike) or str(source).endswith(_FILE_SUFFIXES):
        raise ValueError(f"IFEval prompts file not found: {source}")
    return prompts_from_hub(str(source), split)


def load_responses(path: str | os.PathLike) -> dict[str, str]:
    """``{prompt: response}`` from a JSONL of objects with string fields
    ``prompt`` and ``response`` (IFEval's response format)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"IFEval responses file not found: {path}")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, record in _read_jsonl(path):
        if not isinstance(record, Mapping):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        for field in ("prompt", "response"):
            if field not in record:
                raise ValueError(f"{path}:{lineno}: missing field {field!r}")
            if not isinstance(record[field], str):
                raise ValueError(f"{path}:{lineno}: field {field!r} must be a string")
        prompt = record["prompt"]
        if prompt in out:
            raise ValueError(f"{path}:{lineno}: duplicate prompt (first at line {first_line[prompt]})")
        out[prompt] = record["response"]
        first_line[prompt] = lineno
    return out
