"""Prompt sources for the SPaR loop: generated, JSONL, `datasets`, TFDS, or the authors' LLaMA-Factory release.

Every prompt becomes a record ``{"key", "prompt", ...}``; generated prompts also carry IFEval's
``instruction_id_list`` / ``kwargs`` so they can be scored by the rule checker.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from spar_jax import io
from spar_jax.spar.engine_protocol import derive_seed
from spar_jax.spar.evolve import evolve_instructions, generate_constraint_prompts, parse_constraint_types  # noqa: F401


HELDOUT_KEY_OFFSET = 1_000_000  # held-out keys never collide with generated training keys


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: the instruction must be a non-empty string, got {value!r:.80}")
    return value


def _instruction(record: dict, field: str, where: str) -> str:
    if field in record and isinstance(record[field], str):
        return _text(record[field], f"{where}: {field!r}")
    for key in ("messages", "conversations"):  # chat / LLaMA-Factory ShareGPT layouts: the first user turn
        turns = record.get(key)
        if isinstance(turns, list):
            for i, t in enumerate(turns):
                if not isinstance(t, dict):
                    raise ValueError(f"{where}: {key}[{i}] must be an object with role/content, got {t!r:.80}")
                role = t.get("role", t.get("from"))
                if role in ("user", "human"):
                    return _text(t.get("content", t.get("value")), f"{where}: {key}[{i}]")
    if "instruction" in record and isinstance(record["instruction"], str):  # alpaca layout
        return (record["instruction"] + ("\n" + record["input"] if record.get("input") else "")).strip()
    raise ValueError(f"{where}: no instruction field {field!r} (nor messages/conversations/instruction)")


def _records(source: str, field: str) -> Iterable[tuple[str, dict]]:
    if os.path.isfile(source):
        from spar_jax.training.records import iter_records

        yield from iter_records(source)
        return
    if source.endswith((".jsonl", ".json")):
        raise FileNotFoundError(f"{source}: prompt file not found")
    if source.startswith("tfds:"):
        import tensorflow_datasets as tfds  # the optional `tfds` extra; array_record data sources need no TensorFlow

        name, _, split = source[5:].partition("/")
        ds = tfds.data_source(name, split=split or "train")
        for i in range(len(ds)):
            r = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in ds[i].items()}
            yield f"{source}[{i}]", r
        return
    import datasets

    try:
        ds = datasets.load_dataset(source, split="train")
    except Exception as e:
        raise ValueError(f"prompts source {source!r} could not be loaded with datasets ({type(e).__name__}: {e}); "
                         "pass a local JSONL path or use prompts.source='generated'") from None  # fmt: skip
    for i, r in enumerate(ds):
        yield f"{source}[{i}]", dict(r)


def load_prompts(source: str, field: str = "prompt", limit: int = 0) -> list[dict[str, Any]]:
    """Prompt records from a JSONL/JSON file, `datasets` name or ``tfds:NAME[/split]``; first ``limit`` (0 = all)."""
    out = []
    for i, (where, r) in enumerate(_records(source, field)):
        if limit and len(out) >= limit:
            break
        rec = {k: v for k, v in r.items() if k in ("instruction_id_list", "kwargs")}
        out.append({"key": r.get("key", r.get("id", i)), "prompt": _instruction(r, field, where), **rec})
    if not out:
        raise ValueError(f"prompts source {source!r}: no prompts (an empty file or dataset)")
    keys = [str(p["key"]) for p in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"prompts source {source!r}: keys are not unique")
    return out


def generated(cfg, n: int, *, seed: int) -> list[dict]:
    """``n`` generated constraint prompts with the run's ``prompts.constraint_types`` / ``max_constraints``."""
    types = parse_constraint_types(cfg.prompts.constraint_types)
    return generate_constraint_prompts(n, seed=seed, instruction_ids=types, max_constraints=cfg.prompts.max_constraints)


def generate_excluding(cfg, n: int, *, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """``n`` generated constraint prompts (see ``generated``) none of whose text is in ``exclude``."""
    seen = set(exclude)
    return [p for p in generated(cfg, n + len(seen), seed=seed) if p["prompt"] not in seen][:n]


def heldout_prompts(cfg, exclude: Iterable[str] = ()) -> list[dict]:
    """The run's ``prompts.num_heldout`` generated held-out prompts (keys offset by ``HELDOUT_KEY_OFFSET``)."""
    return [{**h, "key": HELDOUT_KEY_OFFSET + h["key"]}
            for h in generate_excluding(cfg, cfg.prompts.num_heldout, seed=derive_seed(cfg.seed, "heldout-prompts"),
                                        exclude=exclude)]  # fmt: skip


def prepare(cfg, runtime, directory: str) -> dict:
    """Write ``train.jsonl`` and ``heldout.jsonl`` for the run; returns their statistics."""
    p = cfg.prompts
    if p.source == "generated":
        train = generated(cfg, p.num_train, seed=derive_seed(cfg.seed, "train-prompts"))
    else:
        train = load_prompts(p.source, p.field, p.num_train)
    evolved = 0
    if p.evolve:
        kept = evolve_instructions(runtime.engine("actor", cfg.actor.path), [t["prompt"] for t in train],
                                   seed=derive_seed(cfg.seed, "evolve"), max_new_tokens=p.evolve_max_new_tokens)  # fmt: skip
        train = [{"key": train[k["seed_index"]]["key"], "prompt": k["instruction"], "seed_prompt": k["seed"],
                  "main_constraint": k["main_constraint"]} for k in kept]  # fmt: skip
        evolved = len(train)
    heldout = heldout_prompts(cfg, exclude=[t["prompt"] for t in train])
    io.write_jsonl(os.path.join(directory, "train.jsonl"), train)
    io.write_jsonl(os.path.join(directory, "heldout.jsonl"), heldout)
    return {"train": len(train), "heldout": len(heldout), "source": p.source, "evolved": evolved}
