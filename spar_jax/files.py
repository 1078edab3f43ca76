"""Atomic file writes and line-numbered JSONL reading."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Any, Iterable, Iterator, Sequence


class SourceUnavailableError(RuntimeError):
    """A public data source (Hub dataset, URL) could not be reached; the message says how to pass a local copy."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Open a temporary file next to ``path``; on success it is fsynced and renamed over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_writer() -> bool:
    """True on the process that writes shared files: process 0 of a multi-process JAX run (every process computes
    the same records; the others skip ``write_text`` / ``write_json`` / ``write_jsonl``), always without JAX."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def write_text(path: str | os.PathLike, text: str) -> None:
    if not is_writer():
        return
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    if not is_writer():
        return
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[dict]:
    """Yield one dict per non-empty line; malformed JSON, a line that is not UTF-8 or a missing field raises
    ValueError naming file:line."""
    for _, record in read_jsonl_numbered(path, required):
        yield record


def read_jsonl_numbered(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` pairs of ``read_jsonl``."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(f"{path}:{lineno}: malformed JSON ({msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in required if k not in record]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {', '.join(map(repr, missing))}")
            yield lineno, record
