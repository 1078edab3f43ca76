"""Training records -> chat messages: SFT conversations and DPO (prompt, chosen, rejected) triples.

Accepted formats (one JSON object per record):
- SFT: ``messages`` (``[{"role", "content"}, ...]``); LLaMA-Factory ShareGPT ``conversations``
  (``[{"from", "value"}, ...]``, optional ``system``); Alpaca ``instruction`` / ``input`` / ``output``
  (optional ``system``).
- DPO: the prompt as ``prompt`` (a string or a message list), ShareGPT ``conversations`` or Alpaca
  ``instruction`` (+ ``input``), optional ``system``; ``chosen`` / ``rejected`` each a string, one message dict
  (``{"role", "content"}`` or ``{"from", "value"}``, LLaMA-Factory's pairwise format) or a one-message list.
Every error names where the record came from (``file:line`` or ``records[i]``) and the offending key.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

from spar_jax.files import read_jsonl_numbered

ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant",
}  # fmt: skip

Messages = list[dict[str, str]]


def iter_records(source: Any) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, record)`` from a ``.jsonl`` / ``.json`` path, a ``datasets.Dataset`` or an iterable of dicts."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".jsonl"):
            for lineno, record in read_jsonl_numbered(path):
                yield f"{path}:{lineno}", record
            return
        if path.endswith(".json"):
            with open(path, "rb") as f:
                data = f.read()
            try:
                records = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError as e:
                line = data[: e.start].count(b"\n") + 1
                raise ValueError(f"{path}:{line}: not UTF-8 text") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}:1: malformed JSON (nested too deeply)") from None
            if not isinstance(records, list):
                raise ValueError(f"{path}:1: expected a JSON list of records, got {type(records).__name__}")
            for i, record in enumerate(records):
                yield f"{path}[{i}]", _as_dict(record, f"{path}[{i}]")
            return
        raise ValueError(f"{path}: training data must be a .jsonl or .json file")
    for i, record in enumerate(_iterable(source)):
        yield f"records[{i}]", _as_dict(record, f"records[{i}]")


def _iterable(source: Any) -> Iterable:
    if isinstance(source, dict):
        raise ValueError("training data: got a dict (a DatasetDict?); pass one split, e.g. dataset['train']")
    try:
        return iter(source)
    except TypeError:
        raise ValueError(f"training data: cannot read records from {type(source).__name__}") from None


def _as_dict(record: Any, where: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def _message(m: Any, where: str) -> dict[str, str]:
    """One message in either the OpenAI (role/content) or ShareGPT (from/value) spelling."""
    if isinstance(m, dict) and "role" in m and "content" in m:
        role, content = m["role"], m["content"]
    elif isinstance(m, dict) and "from" in m and "value" in m:
        role, content = m["from"], m["value"]
    else:
        raise ValueError(f"{where}: a message must have 'role'/'content' or 'from'/'value', got {m!r:.120}")
    if role not in ROLE_ALIASES:
        raise ValueError(f"{where}: unsupported message role {role!r}; expected one of {sorted(ROLE_ALIASES)}")
    if not isinstance(content, str):
        raise ValueError(f"{where}: message content must be a string, got {type(content).__name__}")
    return {"role": ROLE_ALIASES[role], "content": content}


def _messages(value: Any, where: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of messages")
    return [_message(m, f"{where}[{i}]") for i, m in enumerate(value)]


def _with_system(record: dict, messages: Messages, where: str) -> Messages:
    system = record.get("system")
    if not system:
        return messages
    if not isinstance(system, str):
        raise ValueError(f"{where}: 'system' must be a string")
    if messages[0]["role"] == "system":
        raise ValueError(f"{where}: both a 'system' field and a leading system message")
    return [{"role": "system", "content": system}, *messages]


def _alpaca_prompt(record: dict, where: str) -> Messages:
    instruction, extra = record["instruction"], record.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        raise ValueError(f"{where}: 'instruction' and 'input' must be strings")
    return [{"role": "user", "content": instruction + ("\n" + extra if extra else "")}]


def _check_roles(messages: Messages, where: str) -> None:
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if any(m["role"] == "system" for m in body):
        raise ValueError(f"{where}: a system message is only allowed first")
    for i, (a, b) in enumerate(zip(body, body[1:])):
        if a["role"] == b["role"]:
            raise ValueError(f"{where}: turns must alternate user/assistant; two {a['role']!r} turns at {i}, {i + 1}")
    if not body or body[0]["role"] != "user":
        raise ValueError(f"{where}: the conversation must start with a user turn (after an optional system turn)")


def sft_messages(record: dict, where: str) -> Messages:
    """A validated SFT conversation; at least one assistant turn (every assistant turn is a training target)."""
    if "messages" in record:
        messages = _messages(record["messages"], f"{where}: 'messages'")
    elif "conversations" in record:
        messages = _with_system(record, _messages(record["conversations"], f"{where}: 'conversations'"), where)
    elif "instruction" in record and "output" in record:
        if not isinstance(record["output"], str):
            raise ValueError(f"{where}: 'output' must be a string")
        messages = _with_system(record, _alpaca_prompt(record, where), where)
        messages.append({"role": "assistant", "content": record["output"]})
    else:
        raise ValueError(
            f"{where}: an SFT record needs 'messages', 'conversations' or 'instruction'+'output'; "
            f"got keys {sorted(record)}"
        )
    _check_roles(messages, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: the conversation has no assistant turn to train on")
    return messages


def _response(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"{where}: expected one assistant message, got a list of {len(value)}")
        value = value[0]
    message = _message(value, where)
    if message["role"] != "assistant":
        raise ValueError(f"{where}: the response must be an assistant message, got role {message['role']!r}")
    return message["content"]


def dpo_triple(record: dict, where: str) -> tuple[Messages, str, str]:
    """(prompt messages ending with a user turn, chosen text, rejected text) of a preference record."""
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        raise ValueError(f"{where}: a DPO record needs {missing}; got keys {sorted(record)}")
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = _messages(prompt, f"{where}: 'prompt'")
        messages = _with_system(record, messages, where)
    elif "conversations" in record:
        messages = _with_system(record, _messages(record["conversations"], f"{where}: 'conversations'"), where)
    elif "instruction" in record:
        messages = _with_system(record, _alpaca_prompt(record, where), where)
    else:
        raise ValueError(
            f"{where}: a DPO record needs 'prompt', 'conversations' or 'instruction'; got keys {sorted(record)}"
        )
    _check_roles(messages, where)
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the DPO prompt must end with a user turn")
    return (
        messages,
        _response(record["chosen"], f"{where}: 'chosen'"),
        _response(record["rejected"], f"{where}: 'rejected'"),
    )
