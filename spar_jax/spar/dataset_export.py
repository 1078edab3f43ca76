"""Training data others can load: a Parquet copy of every training JSONL and a LLaMA-Factory ``dataset_info.json``.

For each ``NAME.jsonl`` of a data directory (``iter_N/data``, ``iter_0/bootstrap``) this writes

- ``NAME.parquet``: the same records (``datasets.load_dataset("parquet", data_files=...)`` reads it); preference
  files (records with ``chosen``/``rejected`` message lists) get two more columns, ``chosen_message`` and
  ``rejected_message``: the single assistant message, as LLaMA-Factory's ranking format wants it;
- an entry ``NAME`` in ``dataset_info.json`` in LLaMA-Factory's layout (``formatting: sharegpt`` with OpenAI-style
  ``role``/``content`` tags, ``ranking: true`` for preference data) pointing at the Parquet file, so the directory
  can be passed to LLaMA-Factory as ``dataset_dir`` with ``dataset: NAME``.

Empty JSONL files (e.g. no DPO pair in an iteration) get neither.
"""

from __future__ import annotations

import os
from typing import Any

from spar_jax import files

_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def is_preference(record: dict[str, Any]) -> bool:
    return isinstance(record.get("chosen"), list) and isinstance(record.get("rejected"), list)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    if not is_preference(record):
        return record
    return {**record, "chosen_message": record["chosen"][-1], "rejected_message": record["rejected"][-1]}


def dataset_info_entry(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's description of ``NAME.parquet`` (sharegpt formatting, OpenAI-style message tags)."""
    entry: dict[str, Any] = {"file_name": f"{name}.parquet", "formatting": "sharegpt"}
    if is_preference(record):
        entry["ranking"] = True
        entry["columns"] = {"messages": "prompt", "chosen": "chosen_message", "rejected": "rejected_message"}
    else:
        entry["columns"] = {"messages": "messages"}
    entry["tags"] = dict(_TAGS)
    return entry


def _write_parquet(path: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path + ".tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def export_directory(directory: str) -> dict[str, dict[str, Any]]:
    """Write the Parquet copies and ``dataset_info.json`` of every JSONL in ``directory``; Parquet files newer than
    their JSONL are kept. Returns the dataset_info entries."""
    if not os.path.isdir(directory) or not files.is_writer():
        return {}
    info: dict[str, dict[str, Any]] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".jsonl"):
            continue
        stem, source = name[: -len(".jsonl")], os.path.join(directory, name)
        records = list(files.read_jsonl(source))
        if not records:
            continue
        target = os.path.join(directory, f"{stem}.parquet")
        if not (os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(source)):
            _write_parquet(target, [_row(r) for r in records])
        info[stem] = dataset_info_entry(stem, records[0])
    if info:
        files.write_json(os.path.join(directory, "dataset_info.json"), info)
    return info
