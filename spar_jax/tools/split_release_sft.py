"""Split the authors' released SFT file into the actor's and the refiner's Stage-0 data.

Usage::

    python -m spar_jax.tools.split_release_sft data/SPaR/sft/data.json --templates templates.json \\
        [--actor data/SPaR/sft/actor.jsonl] [--refiner data/SPaR/sft/refiner.jsonl]

The release (``CCCCCC/SPaR`` on the HF hub, ``sft/data.json``) is one LLaMA-Factory file of strong-model samples.
A record whose first user turn is a judgment prompt (it starts with the judge template's text before
``{instruction}``, from the ``templates_file`` that ``spar_jax.tools.import_templates`` wrote) is refiner data
(judgments, and refinements, whose first turn is the same judgment prompt); every other record is actor data (an
instruction and its response). The method trains the two on separate data: the refiner's examples in the actor's
SFT hurt the actor. Both outputs are JSONL in the input's own record layout, written atomically; the counts are
printed, so an empty side (a release holding only one kind) is visible before a run points at it.
"""

from __future__ import annotations

import argparse
import os
import string
import sys
from typing import Any, Iterable

from spar_jax import files
from spar_jax.judge.templates import Templates
from spar_jax.training.records import iter_records

USER_ROLES = ("user", "human")


def judge_prefix(templates: Templates) -> str:
    """The judge template's literal text before its first field (what every judgment prompt starts with)."""
    literal, field, _, _ = next(iter(string.Formatter().parse(templates.judge)))
    prefix = literal.strip()
    if not prefix:
        raise ValueError("the judge template starts with a field: no fixed text to recognise judgment prompts by")
    return prefix


def first_user_turn(record: dict, where: str) -> str:
    """The first user message of a LLaMA-Factory ShareGPT (``conversations``), chat (``messages``) or Alpaca record."""
    for key in ("conversations", "messages"):
        turns = record.get(key)
        if isinstance(turns, list):
            for t in turns:
                if isinstance(t, dict) and t.get("from", t.get("role")) in USER_ROLES:
                    return str(t.get("value", t.get("content", "")))
    if isinstance(record.get("instruction"), str):
        return record["instruction"]
    raise ValueError(f"{where}: no user turn (expected conversations, messages or instruction)")


def split_records(records: Iterable[tuple[str, dict]], prefix: str) -> tuple[list[Any], list[Any]]:
    """(actor records, refiner records) by whether the first user turn starts with ``prefix``."""
    actor, refiner = [], []
    for where, record in records:
        (refiner if first_user_turn(record, where).lstrip().startswith(prefix) else actor).append(record)
    return actor, refiner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spar_jax.tools.split_release_sft", description=__doc__.split("\n")[0]
    )
    parser.add_argument("data", help="the release's sft/data.json (or any LLaMA-Factory .json / .jsonl)")
    parser.add_argument("--templates", required=True, help="templates JSON from spar_jax.tools.import_templates")
    parser.add_argument("--actor", default="", help="actor output (default: actor.jsonl next to DATA)")
    parser.add_argument("--refiner", default="", help="refiner output (default: refiner.jsonl next to DATA)")
    args = parser.parse_args(argv)
    base = os.path.dirname(args.data)
    try:
        prefix = judge_prefix(Templates.from_file(args.templates))
        actor, refiner = split_records(iter_records(args.data), prefix)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = (args.actor or os.path.join(base, "actor.jsonl"), args.refiner or os.path.join(base, "refiner.jsonl"))
    for path, records in zip(paths, (actor, refiner)):
        files.write_jsonl(path, records)
    print(f"{args.data}: {len(actor)} actor records -> {paths[0]}; {len(refiner)} refiner records -> {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
