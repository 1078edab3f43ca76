"""The study stage end to end with scripted engines and a scripted trainer: every row kind (model-judged loop,
its two ablations, the rules-judged loop), fresh prompts per iteration, truncated samples never roots, pairs with
equal texts dropped, the results writer; and the judge kinds on their own."""

import json
import os

import pytest

from spar_jax import files
from spar_jax.config import default_config, parse
from spar_jax.spar import results
from spar_jax.spar.constraint_prompts import generate_constraint_prompts
from spar_jax.spar.judges import HybridJudge, ModelJudge, RulesJudge, make_judge
from spar_jax.spar.runtime import Runtime
from spar_jax.stages.study import run as run_study

from spar_fakes import TEMPLATES, ScriptedEngine, vote_text

TYPES = ("change_case:english_lowercase", "punctuation:no_comma")


def _follows(text: str) -> bool:
    return text == text.lower() and "," not in text


def actor_script(path: str):
    """The starting actor answers with capitals and commas (failing both constraints), and its second sample of
    every prompt is cut by the length limit; an actor trained by the loop (its checkpoint path has an iteration in
    it) follows both. A prompt about "cat" gets an answer that passes but starts with a space."""
    trained = "/iter_" in path

    def answer(instruction, n):
        if trained:
            return ["a fine answer with no commas at all."] * n
        if "cat" in instruction:
            return ["  hello world."] + [("Hello, cut", "length")] * (n - 1)
        return [f"Hello, World {i}." if i != 1 else ("Hello, cut off", "length") for i in range(n)]

    return answer


def judge_script(instruction, response, n):
    """A noisy checker: mostly right, one dissenting vote, and it calls any text starting with a space a No."""
    ok = _follows(response) and not response.startswith(" ")
    pattern = ("yyn" if ok else "nny") * n
    return [vote_text(pattern[i], f"{response[:12]}#{i}") for i in range(n)]


def refine_script(instruction, parent, critique, n):
    fixed = parent.strip().lower().replace(",", "")
    return [f"reflection\n[[start]]\n{fixed}\n[[end]]"] * n


class ScriptedRuntime(Runtime):
    """Engines by (role, checkpoint path) from the scripts; training records its call instead of running."""

    def __init__(self, cfg):
        self.refiners: dict[str, ScriptedEngine] = {}
        self.trained: list[tuple] = []

        def factory(role, path, spec):
            if role == "refiner":
                return self.refiners.setdefault(path, ScriptedEngine(judge=judge_script, refine=refine_script))
            return ScriptedEngine(actor=actor_script(path))

        super().__init__(cfg, engine_factory=factory)

    def train(self, kind, data_path, init_path, out_dir, *, role, seed, initial=False):
        self.trained.append((kind, role, init_path, out_dir, len(list(files.read_jsonl(data_path)))))
        return {"steps": 1, "examples": self.trained[-1][-1], "loss": 0.0}


def study_config(tmp_path):
    ifeval_path = tmp_path / "ifeval.jsonl"
    prompts = generate_constraint_prompts(5, seed=77, instruction_ids=TYPES, max_constraints=2)
    prompts.append(
        {
            "key": 99,
            "prompt": "Write about a cat, in lowercase.",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": [{}],
        }
    )
    files.write_jsonl(ifeval_path, prompts)
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(TEMPLATES.to_dict()))
    c = default_config()
    c.workdir = str(tmp_path / "study")
    c.stages = ("study",)
    c.spar.templates_file = str(templates)
    c.prompts.constraint_types = ",".join(TYPES)
    c.prompts.max_constraints = 2
    c.prompts.num_train = 8
    c.prompts.per_iteration = 4
    c.prompts.num_heldout = 3
    c.spar.iterations = 2
    c.spar.shard_size = 3
    c.spar.ablations = ("no_tree", "no_refine")
    c.spar.bootstrap_prompts = 4
    c.mining.n_samples = 3
    c.mining.k_votes = 3
    c.search.k_votes = 3
    c.search.branch = 2
    c.eval.ifeval_source = str(ifeval_path)
    c.study.results_dir = str(tmp_path / "results")
    return parse(c)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("study")
    cfg = study_config(tmp_path)
    runtime = ScriptedRuntime(cfg)
    summary = run_study(cfg, runtime)
    return cfg, runtime, summary


def _shard_records(directory):
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("shard_") and name.endswith(".jsonl"):
            out.extend(files.read_jsonl(os.path.join(directory, name)))
    return out


def test_every_row_is_written_and_the_trained_actor_improves(study):
    cfg, _, summary = study
    rows = summary["rows"]
    assert set(rows) == {"base", "iter1", "iter2", "no_tree_iter1", "no_refine_iter1", "rules_iter1", "rules_iter2"}
    assert rows["base"]["prompt_level_strict"] == pytest.approx(1 / 6)  # capitals and commas fail all but "cat"
    assert rows["iter2"]["prompt_level_strict"] == 1.0
    results = cfg.study.results_dir
    for row in rows:
        lines = list(files.read_jsonl(os.path.join(results, row, "responses.jsonl")))
        assert len(lines) == 6 and set(lines[0]) == {"prompt", "response"}
        s = json.load(open(os.path.join(results, row, "summary.json")))
        assert s["metrics"]["average"] == pytest.approx(rows[row]["average"])
        if row != "base":
            d = s["vs_base"]["average"]
            assert d["low"] <= d["delta"] <= d["high"] and d["delta"] == pytest.approx(
                rows[row]["average"] - rows["base"]["average"]
            )
    iter2 = json.load(open(os.path.join(results, "iter2", "summary.json")))
    assert 0.0 < iter2["changed_vs_base"] <= 1.0 and iter2["mean_words"] > 0
    assert "changed_vs_base" not in json.load(open(os.path.join(results, "base", "summary.json")))
    md = open(os.path.join(results, "summary.md")).read()
    assert "answers changed vs base" in md and "judge Yes rate, answers the checker passes" in md
    assert "| iter2 |" in md and "judge agrees with checker" in md and "wall time: mine" in md
    assert os.path.getsize(os.path.join(results, "ifeval.png")) > 0


def test_fresh_prompts_and_truncated_samples(study):
    cfg, _, _ = study
    wd = os.path.join(cfg.workdir, "spar")
    pool = [str(p["key"]) for p in files.read_jsonl(os.path.join(wd, "prompts", "train.jsonl"))]
    it1 = [r["prompt_id"] for r in _shard_records(os.path.join(wd, "iter_1", "mine"))]
    it2 = [r["prompt_id"] for r in _shard_records(os.path.join(wd, "iter_2", "mine"))]
    assert it1 == pool[:4] and it2 == pool[4:8]  # disjoint slices of the pool
    for r in _shard_records(os.path.join(wd, "iter_1", "mine")):
        assert r["root_index"] is None or r["samples"][r["root_index"]]["finish_reason"] == "stop"
    done = json.load(open(os.path.join(wd, "iter_1", "mine", "DONE.json")))
    assert done["truncated"] == 4 and done["truncated_negatives"] == 4  # sample 1 of each of 4 prompts: cut, No
    assert done["checker"]["checked"] == 12 and done["checker"]["checker_agreement"] is not None


def test_pairs_with_equal_texts_are_dropped_and_ablations_differ(study):
    cfg, _, _ = study
    wd = os.path.join(cfg.workdir, "spar", "iter_1")
    data = json.load(open(os.path.join(wd, "data", "DONE.json")))
    trees = _shard_records(os.path.join(wd, "search"))
    assert all(len(t["nodes"]) > 1 for t in trees)
    no_tree = _shard_records(os.path.join(wd, "ablation_no_tree", "search"))
    assert [t["prompt_id"] for t in no_tree] == [t["prompt_id"] for t in trees]
    assert all(len(t["nodes"]) <= 2 and all(n["depth"] <= 1 for n in t["nodes"]) for t in no_tree)
    pairs = list(files.read_jsonl(os.path.join(wd, "ablation_no_refine", "data", "dpo.jsonl")))
    assert not os.path.exists(os.path.join(wd, "ablation_no_refine", "search"))
    mined = {r["prompt_id"]: r for r in _shard_records(os.path.join(wd, "mine"))}
    for p in pairs:  # independent samples of the same prompt, Yes over No
        texts = [s["response"] for s in mined[p["prompt_id"]]["samples"]]
        assert p["chosen"][0]["content"] in texts and p["rejected"][0]["content"] in texts
    assert data["pairs"] + data["equal_pairs_dropped"] == sum(t["success_index"] is not None for t in trees)
    eval_done = json.load(open(os.path.join(wd, "ablation_no_tree", "eval", "DONE.json")))
    assert eval_done["ifeval"] is not None


def test_rules_run_uses_the_checker_and_the_stage0_refiner(study):
    cfg, runtime, _ = study
    wd = os.path.join(cfg.workdir, "rules")
    for r in _shard_records(os.path.join(wd, "iter_1", "mine")):
        for s in r["samples"]:
            assert len(s["judgement"]["votes"]) == 1
            assert s["judgement"]["texts"][0].startswith("Checking each requirement")
    stage0 = os.path.join(cfg.workdir, "spar", "iter_0", "sft_refiner", "hf")
    assert json.load(open(os.path.join(wd, "config.json")))["refiner"]["path"] == stage0
    calls = json.load(open(os.path.join(wd, "iter_1", "search", "shard_00000.calls.json")))
    assert calls and {c["kind"] for c in calls} == {"refine"}  # the refiner refines; the checker judges
    for it in (1, 2):  # every iteration of the rules run is a row
        assert os.path.exists(os.path.join(wd, f"iter_{it}", "eval", "ifeval", "responses.jsonl"))


def test_rerun_of_a_finished_study_changes_nothing(study):
    cfg, _, summary = study
    path = os.path.join(cfg.study.results_dir, "iter2", "responses.jsonl")
    before = open(path).read()
    runtime = ScriptedRuntime(cfg)
    again = run_study(cfg, runtime)
    assert again["rows"] == summary["rows"] and open(path).read() == before
    assert runtime.trained == []  # every stage was finished


def test_an_unchanged_actor_is_not_evaluated_again(tmp_path):
    """A judge that says No to everything (as an untrained small refiner does) yields no pairs: the actor stays the
    starting checkpoint, so each later evaluation reuses the base evaluation's results instead of decoding again."""
    import dataclasses

    from spar_jax.spar.pipeline import Pipeline
    from spar_jax.stages.study import variant

    def always_no(instruction, response, n):
        return [vote_text("n", f"{response[:12]}#{i}") for i in range(n)]

    asked: list[str] = []  # every instruction the actor was asked to answer

    def actor(path):
        script = actor_script(path)

        def answer(instruction, n):
            asked.append(instruction)
            return script(instruction, n)

        return answer

    class NoRuntime(ScriptedRuntime):
        def __init__(self, cfg):
            self.trained = []

            def factory(role, path, spec):
                if role == "refiner":
                    return ScriptedEngine(judge=always_no, refine=refine_script)
                return ScriptedEngine(actor=actor(path))

            Runtime.__init__(self, cfg, engine_factory=factory)

    cfg = variant(study_config(tmp_path), **{"spar.ablations": ("no_refine",), "spar.iterations": 2})
    cfg = dataclasses.replace(cfg, workdir=str(tmp_path / "loop"))
    runtime = NoRuntime(cfg)
    Pipeline(cfg, runtime).run()
    wd = cfg.workdir
    base = json.load(open(os.path.join(wd, "iter_0", "eval", "DONE.json")))
    for it, sub in ((1, ""), (2, ""), (1, "ablation_no_refine")):
        d = os.path.join(wd, f"iter_{it}", sub, "eval")
        done = json.load(open(os.path.join(d, "DONE.json")))
        assert done["reused_from"] == os.path.join("iter_0", "eval")
        assert done["heldout"] == base["heldout"] and done["ifeval"] == base["ifeval"]
        for rel in ("heldout/responses.jsonl", "ifeval/responses.jsonl"):
            assert open(os.path.join(d, rel)).read() == open(os.path.join(wd, "iter_0", "eval", rel)).read()
    assert runtime.trained and all(t[0] != "dpo" for t in runtime.trained)  # no pairs: the actor never trained
    heldout = [p["prompt"] for p in files.read_jsonl(os.path.join(wd, "prompts", "heldout.jsonl"))]
    assert all(asked.count(p) == 1 for p in heldout)  # answered once, by iteration 0's evaluation
    # A twin adopted from before fingerprints has an inputs record but no inputs in its DONE.json: still found.
    done_path = os.path.join(wd, "iter_0", "eval", "DONE.json")
    json.dump({k: v for k, v in base.items() if k != "inputs"}, open(done_path, "w"))
    import shutil

    shutil.rmtree(os.path.join(wd, "iter_2", "eval"))
    Pipeline(cfg, NoRuntime(cfg)).run()
    assert all(asked.count(p) == 1 for p in heldout)
    again = json.load(open(os.path.join(wd, "iter_2", "eval", "DONE.json")))
    assert again["reused_from"] == os.path.join("iter_0", "eval")


def test_judge_kinds():
    prompts = [
        {"prompt": "be lowercase", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
        {"prompt": "be nice"},
    ]  # no checkable constraint
    engine = ScriptedEngine(judge=lambda i, r, n: [vote_text("y")] * n)
    from spar_jax.judge.generation import SamplingParams

    sp = SamplingParams(max_new_tokens=8)
    rules = make_judge("rules", None, prompts)
    assert isinstance(rules, RulesJudge)
    (j,) = rules.judge([("be lowercase", "Not Lowercase")], k=3, sampling=sp, seed=0)
    assert j.votes == ("no",) and j.value == 0.0 and "not met" in j.critique
    (j,) = rules.judge(
        [("be lowercase", "this answer is written in lowercase english words")], k=3, sampling=sp, seed=0
    )
    assert j.label == "yes"
    with pytest.raises(ValueError, match="hybrid"):
        rules.judge([("be nice", "ok")], k=3, sampling=sp, seed=0)
    hybrid = make_judge("hybrid", engine, prompts, TEMPLATES)
    assert isinstance(hybrid, HybridJudge)
    out = hybrid.judge(
        [
            ("be lowercase", "Upper"),
            ("be nice", "ok"),
            ("be lowercase", "this answer is written in lowercase english words"),
        ],
        k=3,
        sampling=sp,
        seed=0,
    )
    assert [o.label for o in out] == ["no", "yes", "yes"] and len(out[1].votes) == 3 and len(out[0].votes) == 1
    assert engine.count("judge") == 1 and ScriptedEngine.judged(engine.calls[0]) == ["ok"]  # only the uncheckable one
    assert isinstance(make_judge("model", engine, prompts), ModelJudge)
    with pytest.raises(ValueError, match="judge kind"):
        make_judge("oracle", engine)


def test_answers_changed_counts_stripped_differences():
    assert results.answers_changed(["a", "b ", "c", "d"], ["a ", "b", "x", "y"]) == 0.5
    with pytest.raises(ValueError, match="2 base answers but 1"):
        results.answers_changed(["a", "b"], ["a"])


def test_judge_yes_rates_split_by_the_checker():
    confusion = {"yes_pass": 1, "no_pass": 3, "yes_fail": 0, "no_fail": 6}  # agreement 0.7, yet it finds 1 pass in 4
    assert results._yes_given_checker("judge", confusion) == {"judge_yes_on_pass": 0.25, "judge_yes_on_fail": 0.0}
    assert results._yes_given_checker("judge", None) == {}
