"""Prompt sources: the offline verifiable-constraint generator and LLM instruction evolution."""

import json
from collections import Counter

import pytest

from spar_jax import ifeval
from spar_jax.spar import constraint_prompts, instruction_evolution

from spar_fakes import Completion, Result


def test_generated_prompts_are_verifiable_deterministic_and_consistent():
    prompts = constraint_prompts.generate_constraint_prompts(200, seed=3)
    assert prompts == constraint_prompts.generate_constraint_prompts(200, seed=3)
    assert prompts != constraint_prompts.generate_constraint_prompts(200, seed=4)
    for p in prompts:
        ids = p["instruction_id_list"]
        assert 2 <= len(ids) <= 4 and len(set(ids)) == len(ids)
        for a in ids:
            for b in ids:
                assert frozenset({a, b}) not in constraint_prompts.CONFLICTS
        strict, loose = ifeval.check(ids, p["kwargs"], p["prompt"], "some response")  # checkers build
        assert len(strict) == len(ids)
    mains = Counter(p["instruction_id_list"][0] for p in prompts)
    assert set(mains) == set(constraint_prompts.MAKERS)  # every type can be the main constraint


def test_generated_prompts_restricted_to_types_and_constraint_count():
    types = ("punctuation:no_comma", "startend:quotation", "detectable_content:postscript")
    prompts = constraint_prompts.generate_constraint_prompts(60, seed=5, instruction_ids=types, max_constraints=2)
    counts = Counter(len(p["instruction_id_list"]) for p in prompts)
    assert set(counts) == {2}  # a main constraint plus at least one more, capped at 2
    assert {i for p in prompts for i in p["instruction_id_list"]} == set(types)
    single = constraint_prompts.generate_constraint_prompts(10, seed=5, max_constraints=1)
    assert all(len(p["instruction_id_list"]) == 1 for p in single)
    # The default is unchanged by the options: the same prompts as before for the same seed.
    assert (
        constraint_prompts.generate_constraint_prompts(5, seed=3)
        == constraint_prompts.generate_constraint_prompts(200, seed=3)[:5]
    )
    with pytest.raises(ValueError, match="cannot be generated"):
        constraint_prompts.generate_constraint_prompts(1, instruction_ids=("language:response_language",))
    with pytest.raises(ValueError, match="max_constraints must be >= 1"):
        constraint_prompts.generate_constraint_prompts(1, max_constraints=0)


def test_a_compliant_response_passes_and_a_violating_one_fails():
    prompt = {
        "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma", "startend:end_checker"],
        "kwargs": [{}, {}, {"end_phrase": "until next time."}],
    }
    good = "the river starts in the hills and runs to the sea. until next time."
    bad = "The river starts in the hills, and runs to the sea."
    assert all(ifeval.check(prompt["instruction_id_list"], prompt["kwargs"], "", good)[0])
    assert ifeval.check(prompt["instruction_id_list"], prompt["kwargs"], "", bad)[0] == [False, False, False]


def test_generated_prompts_are_disjoint_from_ifeval(shared_data):
    path = shared_data / "ifeval" / "input_data.jsonl"
    ifeval_prompts = {json.loads(line)["prompt"] for line in path.open()}
    ours = constraint_prompts.generate_constraint_prompts(500, seed=0)
    assert not {p["prompt"] for p in ours} & ifeval_prompts
    tasks = {t.lower() for t in constraint_prompts.TASKS}
    assert not any(t in p.lower() for p in ifeval_prompts for t in tasks)


class _EvolveEngine:
    def __init__(self):
        self.calls = []

    def generate(self, requests, *, max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, n=1, seed=0, stop=None):
        self.calls.append((len(requests), temperature, top_p, seed))
        outs = []
        for r in requests:
            seed_text = r[0]["content"].rsplit("Instruction: ", 1)[1].split("\n\n")[0]
            text = (
                "[[start]]None[[end]]"
                if "integral" in seed_text
                else f"Sure.\n[[start]]\n{seed_text} Answer in exactly three sentences.\n[[end]]"
            )
            outs.append(Result((Completion(text),)))
        return outs


def test_evolve_drops_math_and_draws_main_type_uniformly():
    seeds = ["Describe a forest.", "Compute the integral of x^2.", "Write a poem about rain."]
    engine = _EvolveEngine()
    kept = instruction_evolution.evolve_instructions(engine, seeds, seed=1)
    assert len(engine.calls) == 1 and engine.calls[0][0] == 3  # one batched call
    assert [k["seed_index"] for k in kept] == [0, 2]
    assert kept[0]["instruction"] == "Describe a forest. Answer in exactly three sentences."
    requests = instruction_evolution.evolve_requests(seeds, seed=1)
    for k in kept:  # each record keeps the type and count it was asked for
        _, main, extra = requests[k["seed_index"]]
        assert (k["main_constraint"], k["extra_constraints"]) == (main, extra) and 1 <= extra <= 3
        assert (
            k["constraint_group"] in instruction_evolution.TAXONOMY
            and main in instruction_evolution.TAXONOMY[k["constraint_group"]]
        )
        assert (
            f"Main constraint type (must be used unless it contradicts the instruction): {main}."
            in requests[k["seed_index"]][0][0]["content"]
        )
    assert all(
        t in requests[0][0][0]["content"] for t in instruction_evolution.CONSTRAINT_TYPES
    )  # the whole taxonomy is shown
    mains = Counter(m for _, m, _ in instruction_evolution.evolve_requests(["x"] * 1400, seed=0))
    assert (
        set(mains) == set(instruction_evolution.CONSTRAINT_TYPES) and len(instruction_evolution.CONSTRAINT_TYPES) == 14
    )
    assert max(mains.values()) < 2 * min(mains.values())


@pytest.mark.parametrize(
    "text,expected",
    [
        ("None", None),
        (" none. ", None),
        ("", None),
        ("Rewritten instruction: Do X.", "Do X."),
        ("Do Y", "Do Y"),
        ("ok [[start]] Do Z. [[end]] bye", "Do Z."),
        ("[[start]]None[[end]]", None),
        ("[[start]] cut off", None),
        ("a [[start]] x [[end]] [[start]] y [[end]]", "y"),
    ],
)
def test_parse_evolved(text, expected):
    assert instruction_evolution.parse_evolved(text) == expected


def test_prepare_evolves_with_a_separate_tiny_model(tmp_path):
    """prompts.evolve_model is loaded through the run's Runtime; the actor (a path that does not exist) never is."""
    from spar_jax import config as config_lib
    from spar_jax.spar import sources
    from spar_jax.spar.runtime import Runtime

    from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

    model = write_checkpoint(
        tmp_path / "evolver", "llama", seed=7, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2
    )
    copy_demo_tokenizer(model)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"id": i, "prompt": p}) + "\n"
            for i, p in enumerate(["Describe a forest.", "Name three rivers.", "Write a poem about rain."])
        )
    )
    c = config_lib.default_config()
    c.actor.path = str(tmp_path / "no-such-actor")
    c.engine.batch_size = 4
    c.engine.progress = False
    c.prompts.update(
        source=str(seeds), num_train=0, num_heldout=2, evolve=True, evolve_model=model, evolve_max_new_tokens=6
    )
    cfg = config_lib.parse(c)
    runtime = Runtime(cfg)
    out = tmp_path / "prompts"
    info = sources.prepare(cfg, runtime, str(out))
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert info["evolved"] == len(train) == 3  # a random model's 6 tokens are never "None"
    assert [k[0] for k in runtime._engines] == [model]  # only the evolving model was loaded
    again = instruction_evolution.evolve_instructions(
        runtime.engine("actor", model),
        [json.loads(s)["prompt"] for s in seeds.read_text().splitlines()],
        seed=constraint_prompts.derive_seed(cfg.seed, "evolve"),
        max_new_tokens=6,
    )
    assert [t["prompt"] for t in train] == [k["instruction"] for k in again]  # the evolving model wrote them
    assert [t["main_constraint"] for t in train] == [k["main_constraint"] for k in again]
    assert all(t["main_constraint"] in instruction_evolution.CONSTRAINT_TYPES and t["seed_prompt"] for t in train)
