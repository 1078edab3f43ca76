"""Prompt sources for the SPaR loop: generated, JSONL, `datasets`, TFDS, or the authors' LLaMA-Factory release.

Every prompt becomes a record ``{"key", "prompt", ...}``; generated prompts also carry IFEval's
``instruction_id_list`` / ``kwargs`` so they can be scored by the rule checker.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from spar_jax import files
from spar_jax.judge.generation import derive_seed
from spar_jax.spar.constraint_prompts import (  # noqa: F401
    HELDOUT_TASKS,
    MAKERS,
    TASKS,
    generate_constraint_prompts,
    parse_constraint_types,
)
from spar_jax.spar.instruction_evolution import evolve_instructions

HELDOUT_KEY_OFFSET = 1_000_000  # held-out keys never collide with generated training keys
IN_DISTRIBUTION, OUT_OF_DISTRIBUTION = "in_distribution", "out_of_distribution"  # held-out "split" labels


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
        raise ValueError(
            f"prompts source {source!r} could not be loaded with datasets ({type(e).__name__}: {e}); "
            "pass a local JSONL path or use prompts.source='generated'"
        ) from None
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


def training_types(cfg) -> tuple[str, ...]:
    """Constraint types training (and bootstrap) prompts may use: ``prompts.constraint_types`` (every type when
    empty) minus the types reserved by ``prompts.heldout_types``; () = every type (nothing reserved)."""
    types = parse_constraint_types(cfg.prompts.constraint_types)
    reserved = set(parse_constraint_types(cfg.prompts.heldout_types))
    if not reserved:
        return types
    return tuple(t for t in (types or sorted(MAKERS)) if t not in reserved)


def training_tasks(cfg) -> tuple[str, ...]:
    """Task stems of training prompts: all of them, or all but ``HELDOUT_TASKS`` when types are reserved."""
    return tuple(t for t in TASKS if t not in HELDOUT_TASKS) if cfg.prompts.heldout_types.strip() else TASKS


def generated(cfg, n: int, *, seed: int) -> list[dict]:
    """``n`` generated training-side constraint prompts: ``training_types`` on ``training_tasks``, at most
    ``prompts.max_constraints`` constraints each."""
    return generate_constraint_prompts(
        n,
        seed=seed,
        tasks=training_tasks(cfg),
        instruction_ids=training_types(cfg),
        max_constraints=cfg.prompts.max_constraints,
    )


def generate_excluding(cfg, n: int, *, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """``n`` generated constraint prompts (see ``generated``) none of whose text is in ``exclude``."""
    seen = set(exclude)
    return [p for p in generated(cfg, n + len(seen), seed=seed) if p["prompt"] not in seen][:n]


def out_of_distribution(cfg, n: int, *, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """``n`` prompts whose main constraint is a reserved type (``prompts.heldout_types``), on ``HELDOUT_TASKS``
    stems; their other constraints may be of any type."""
    seen = set(exclude)
    reserved = parse_constraint_types(cfg.prompts.heldout_types)
    every = sorted(set(training_types(cfg) or MAKERS) | set(reserved))
    made = generate_constraint_prompts(
        n + len(seen),
        seed=seed,
        tasks=HELDOUT_TASKS,
        instruction_ids=every,
        main_ids=reserved,
        max_constraints=cfg.prompts.max_constraints,
    )
    return [p for p in made if p["prompt"] not in seen][:n]


def heldout_prompts(cfg, exclude: Iterable[str] = ()) -> list[dict]:
    """The run's ``prompts.num_heldout`` generated held-out prompts (keys offset by ``HELDOUT_KEY_OFFSET``).

    Without ``prompts.heldout_types`` they come from the training generator (in distribution). With it, half
    (rounded up) are in distribution and the rest out of distribution (``out_of_distribution``); every record then
    carries ``split`` = "in_distribution" | "out_of_distribution", which the run report scores separately."""
    n, seed, exclude = cfg.prompts.num_heldout, derive_seed(cfg.seed, "heldout-prompts"), list(exclude)
    if not cfg.prompts.heldout_types.strip():
        made = generate_excluding(cfg, n, seed=seed, exclude=exclude)
        return [{**h, "key": HELDOUT_KEY_OFFSET + h["key"]} for h in made]
    n_out = n // 2
    inside = generate_excluding(cfg, n - n_out, seed=seed, exclude=exclude)
    outside = out_of_distribution(cfg, n_out, seed=derive_seed(seed, "ood"), exclude=exclude)
    return [{**h, "key": HELDOUT_KEY_OFFSET + i, "split": IN_DISTRIBUTION} for i, h in enumerate(inside)] + [
        {**h, "key": HELDOUT_KEY_OFFSET + len(inside) + i, "split": OUT_OF_DISTRIBUTION} for i, h in enumerate(outside)
    ]


def prepare(cfg, runtime, directory: str) -> dict:
    """Write ``train.jsonl`` and ``heldout.jsonl`` for the run; returns their statistics."""
    p = cfg.prompts
    if p.source == "generated":
        train = generated(cfg, p.num_train, seed=derive_seed(cfg.seed, "train-prompts"))
    else:
        train = load_prompts(p.source, p.field, p.num_train)
    evolved = 0
    if p.evolve:
        kept = evolve_instructions(
            runtime.engine("actor", p.evolve_model or cfg.actor.path),
            [t["prompt"] for t in train],
            seed=derive_seed(cfg.seed, "evolve"),
            max_new_tokens=p.evolve_max_new_tokens,
        )
        train = [
            {
                "key": train[k["seed_index"]]["key"],
                "prompt": k["instruction"],
                "seed_prompt": k["seed"],
                "main_constraint": k["main_constraint"],
            }
            for k in kept
        ]
        evolved = len(train)
    heldout = heldout_prompts(cfg, exclude=[t["prompt"] for t in train])
    files.write_jsonl(os.path.join(directory, "train.jsonl"), train)
    files.write_jsonl(os.path.join(directory, "heldout.jsonl"), heldout)
    return {"train": len(train), "heldout": len(heldout), "source": p.source, "evolved": evolved}
