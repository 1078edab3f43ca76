"""Stage 3, training data: DPO pairs for the actor and the five-pool SFT mixture for the refiner; JSONL I/O.

Record formats (all JSON-serializable, loadable with `datasets.load_dataset("json", data_files=path)`):
- DPO pair: {"prompt": [user msg], "chosen": [assistant msg], "rejected": [assistant msg], "prompt_id", "depth"}
  (TRL-style conversational prompt/chosen/rejected; the prompt is the bare instruction as one user turn).
- Refiner SFT example: {"messages": [...chat ending with the assistant target...], "pool", "prompt_id"}.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from spar_jax import files
from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates, actor_messages, judge_messages, refine_messages
from spar_jax.spar.mining import PromptRecord
from spar_jax.spar.tree_search import TreeRecord

POOLS = ("refine", "tree_judge_yes", "tree_judge_no", "actor_judge_no", "actor_judge_yes")


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """Caps per pool (method defaults) and how many nodes per tree the tree-judgment pools may take
    (None = all qualifying nodes). As in the authors' code, both tree-judgment pools take one random node per tree,
    and examples are de-duplicated by their first user message across all pools together."""

    cap_refine: int = 4000
    cap_tree_judge_yes: int = 1500
    cap_tree_judge_no: int = 1000
    cap_actor_judge_no: int = 500
    cap_actor_judge_yes: int = 2500
    tree_judge_yes_per_tree: int | None = 1
    tree_judge_no_per_tree: int | None = 1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            optional = f.name.endswith("_per_tree")
            if (value is None and optional) or (isinstance(value, int) and value >= (1 if optional else 0)):
                continue
            raise ValueError(
                f"MixtureConfig.{f.name} must be an int >= {1 if optional else 0}"
                f"{' or None' if optional else ''}, got {value!r}"
            )

    def cap(self, pool: str) -> int:
        return getattr(self, f"cap_{pool}")


def _pair(instruction: str, chosen: str, rejected: str, prompt_id: str, **extra) -> dict[str, Any]:
    return {
        "prompt": actor_messages(instruction),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "prompt_id": prompt_id,
        **extra,
    }


def same_text(a: str, b: str) -> bool:
    """Equal after stripping surrounding whitespace: such a pair teaches nothing (DPO's margin is ~0)."""
    return a.strip() == b.strip()


def dpo_pairs(trees: Sequence[TreeRecord]) -> list[dict[str, Any]]:
    """One pair per successful tree: prompt = instruction, chosen = the passing refinement, rejected = the root;
    pairs whose two texts are equal after stripping whitespace are left out."""
    return [
        _pair(t.instruction, t.nodes[t.success_index].response, t.root.response, t.prompt_id, depth=t.success_depth)
        for t in trees
        if t.success and not same_text(t.nodes[t.success_index].response, t.root.response)
    ]


def sample_pairs(records: Sequence[PromptRecord], *, seed: int) -> list[dict[str, Any]]:
    """The "without refinement" ablation's pairs, as self-rewarding methods build them: per prompt, one sample
    judged Yes (chosen) against one judged No (rejected), both drawn at random (seeded by prompt id) among the
    independent samples; samples cut by the length limit are not rejected ones (as they are not tree roots)."""
    out = []
    for r in records:
        yes = [s.response for s in r.samples if s.judgement.label == "yes"]
        no = [s.response for s in r.samples if s.judgement.label == "no" and s.finish_reason != "length"]
        if not yes or not no:
            continue
        rng = random.Random(gen.derive_seed(seed, "sample-pair", r.prompt_id))
        chosen, rejected = rng.choice(yes), rng.choice(no)
        if not same_text(chosen, rejected):
            out.append(_pair(r.instruction, chosen, rejected, r.prompt_id, depth=0))
    return out


def _example(messages: list[dict[str, str]], target: str, pool: str, prompt_id: str) -> dict[str, Any]:
    return {"messages": [*messages, {"role": "assistant", "content": target}], "pool": pool, "prompt_id": prompt_id}


def refine_examples(trees: Sequence[TreeRecord], templates: Templates = DEFAULT_TEMPLATES) -> list[dict[str, Any]]:
    """Pool 1: the last step of each successful path — judge prompt on the parent's response, the parent's
    critique, the refine request, and the full refiner output (reflection + marked refined response)."""
    out = []
    for t in trees:
        if not t.success:
            continue
        node = t.nodes[t.success_index]
        parent = t.nodes[node.parent]
        messages = refine_messages(t.instruction, parent.response, parent.critique, templates)
        out.append(_example(messages, node.output, "refine", t.prompt_id))
    return out


def tree_judgement_examples(
    trees: Sequence[TreeRecord],
    *,
    pool: str,
    low: float,
    high: float,
    per_tree: int | None,
    seed: int,
    templates: Templates = DEFAULT_TEMPLATES,
) -> list[dict[str, Any]]:
    """Pools 2 and 3: judgments of judged tree nodes (root excluded) with low < V < high, target = the
    majority-agreeing critique; `per_tree` nodes drawn at random per tree (seeded by prompt id), None = all."""
    out = []
    for t in trees:
        nodes = [n for n in t.nodes[1:] if n.status == "ok" and low < n.value < high]
        if per_tree is not None and len(nodes) > per_tree:
            nodes = random.Random(gen.derive_seed(seed, pool, t.prompt_id)).sample(nodes, per_tree)
        for n in nodes:
            out.append(_example(judge_messages(t.instruction, n.response, templates), n.critique, pool, t.prompt_id))
    return out


def actor_judgement_examples(
    records: Sequence[PromptRecord], *, label: str, templates: Templates = DEFAULT_TEMPLATES
) -> list[dict[str, Any]]:
    """Pool 4: judgments of actor samples whose valid votes were mixed (both Yes and No) with majority `label`."""
    pool = f"actor_judge_{label}"
    return [
        _example(judge_messages(r.instruction, s.response, templates), s.judgement.critique, pool, r.prompt_id)
        for r in records
        for s in r.samples
        if s.judgement.mixed and s.judgement.label == label
    ]


def first_user_message(example: dict[str, Any]) -> str:
    return next(m["content"] for m in example["messages"] if m["role"] == "user")


def finalize_pool(
    examples: Sequence[dict[str, Any]], *, cap: int, seed: int, seen: set[str] | None = None
) -> list[dict[str, Any]]:
    """Shuffle (seeded), drop examples whose first user message was already seen, keep the first `cap`.

    ``seen`` is shared across pools (and updated) to de-duplicate across all of them."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    seen = set() if seen is None else seen
    out = []
    for ex in shuffled:
        if len(out) >= cap:
            break
        key = first_user_message(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def refiner_mixture(
    trees: Sequence[TreeRecord],
    mined: Sequence[PromptRecord],
    *,
    config: MixtureConfig = MixtureConfig(),
    seed: int = 0,
    templates: Templates = DEFAULT_TEMPLATES,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The refiner's SFT data: the five pools, each shuffled and capped, de-duplicated by first user message across
    all pools (in `POOLS` order), then concatenated and shuffled. Returns (examples, examples per pool)."""
    raw = {
        "refine": refine_examples(trees, templates),
        "tree_judge_yes": tree_judgement_examples(
            trees,
            pool="tree_judge_yes",
            low=0.5,
            high=1.0,
            per_tree=config.tree_judge_yes_per_tree,
            seed=seed,
            templates=templates,
        ),
        "tree_judge_no": tree_judgement_examples(
            trees,
            pool="tree_judge_no",
            low=0.0,
            high=0.5,
            per_tree=config.tree_judge_no_per_tree,
            seed=seed,
            templates=templates,
        ),
        "actor_judge_no": actor_judgement_examples(mined, label="no", templates=templates),
        "actor_judge_yes": actor_judgement_examples(mined, label="yes", templates=templates),
    }
    seen: set[str] = set()
    pools = {
        p: finalize_pool(raw[p], cap=config.cap(p), seed=gen.derive_seed(seed, "pool", p), seen=seen) for p in POOLS
    }
    mixture = [ex for p in POOLS for ex in pools[p]]
    random.Random(gen.derive_seed(seed, "mixture")).shuffle(mixture)
    return mixture, {p: len(pools[p]) for p in POOLS}


def save_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Writes one JSON object per line, atomically (`spar_jax.files.write_jsonl`)."""
    files.write_jsonl(path, records)


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Reads a JSONL file of objects; bad lines raise ValueError naming file and line (`spar_jax.files.read_jsonl`)."""
    return list(files.read_jsonl(path))
