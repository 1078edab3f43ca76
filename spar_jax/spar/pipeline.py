"""SPaR iterations as resumable steps under one workdir. Knows steps and files, not math.

Layout::

    workdir/prompts/{train,heldout}.jsonl             the training pool (iteration t mines its t-th disjoint slice) and
                                                       held-out prompts (IFEval's schema)
    workdir/iter_0/{sft_actor,sft_refiner,eval}/      optional initial SFT; evaluation of the starting actor
    workdir/iter_N/mine/shard_00000.jsonl ...          actor samples + refiner votes + tree roots, per prompt shard
    workdir/iter_N/search/shard_00000.jsonl ...        refinement trees, per root shard (+ .calls.json)
    workdir/iter_N/data/{dpo,refiner_sft}.jsonl        training data
    workdir/iter_N/{actor,refiner}/{checkpoints,hf}/   DPO'd actor and SFT'd refiner (Orbax checkpoints, HF export)
    workdir/iter_N/eval/                               IFEval-checker evaluation of the new actor
    workdir/iter_1/ablation_{no_tree,no_refine}/       the paper's ablations: {search,} data, actor, eval
    workdir/report.md, metrics.jsonl, tensorboard/, metrics.png

Every step writes its artifacts atomically and ends with ``DONE.json`` (its statistics and wall time). A rerun skips
finished steps, resumes sampling steps from the next unwritten shard (each shard has its own derived seed, so the
result does not depend on where a run was interrupted) and training from its last Orbax checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Callable

from spar_jax import files, fingerprint, progress
from spar_jax.judge import generation as gen
from spar_jax.judge.generation import derive_seed
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates
from spar_jax.parallel import sync_processes
from spar_jax.resumable import seconds_before, sharded
from spar_jax.spar import stats as S
from spar_jax.spar.data import dpo_pairs, refiner_mixture, same_text, sample_pairs
from spar_jax.spar.judges import checker_verdicts, constraints_by_instruction, make_judge
from spar_jax.spar.mining import PromptRecord, mine, roots
from spar_jax.spar.runtime import Runtime
from spar_jax.spar.tree_search import TreeRecord, search

if TYPE_CHECKING:  # the loop is driven by the run config; config.py builds on spar, not the reverse
    from spar_jax.config import RunConfig

DONE = "DONE.json"
_log = logging.getLogger(__name__)


def step_info(directory: str) -> dict | None:
    """The DONE record of a finished step, or None."""
    path = os.path.join(directory, DONE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_step(directory: str, fn: Callable[[], dict], inputs: fingerprint.StageInputs | None = None) -> dict:
    """Run ``fn`` unless ``directory`` holds a DONE record made from the same ``inputs``; record its statistics,
    inputs and wall time. Changed inputs stop the run or rerun the step (see ``spar_jax.fingerprint``).

    ``seconds`` is the step's wall time over all attempts: this attempt's plus the shards earlier (killed) attempts
    finished (also given alone as ``seconds_earlier_attempts``); work lost with a kill is not counted."""
    if fingerprint.decide(directory, inputs):
        _log.info("skip finished step %s", directory)
        return step_info(directory)
    os.makedirs(directory, exist_ok=True)
    progress.line(f"{progress.label(directory)}: start")
    start = time.time()
    info = fn()
    elapsed, earlier = time.time() - start, seconds_before(directory, start)
    info["seconds"] = round(elapsed + earlier, 2)
    resumed = ""
    if earlier:
        info["seconds_earlier_attempts"] = round(earlier, 2)
        resumed = f" ({progress.duration(elapsed + earlier)} with earlier attempts)"
    progress.line(f"{progress.label(directory)}: done in {progress.duration(elapsed)}{resumed}")
    if inputs is not None:
        info["inputs"] = inputs.values
    files.write_json(os.path.join(directory, DONE), info)
    sync_processes(f"done:{directory}")  # process 0 wrote the step's files; the next step reads them everywhere
    return info


class Pipeline:
    """The SPaR loop over ``cfg.spar.iterations`` iterations (see the module docstring for the layout)."""

    def __init__(self, cfg: RunConfig, runtime: Runtime | None = None):
        self.cfg = cfg
        self.runtime = runtime or Runtime(cfg)
        self.templates = Templates.from_file(cfg.spar.templates_file) if cfg.spar.templates_file else DEFAULT_TEMPLATES
        self.wd = cfg.workdir
        self.constraints: dict = {}  # prompt text -> (IFEval ids, kwargs), for rule judging and checker statistics

    def path(self, *parts) -> str:
        return os.path.join(self.wd, *[str(p) for p in parts])

    # -- steps --------------------------------------------------------------------------------------------------

    def prompts(self) -> tuple[list[dict], list[dict]]:
        from spar_jax.spar import sources

        directory = self.path("prompts")
        run_step(
            directory,
            lambda: sources.prepare(self.cfg, self.runtime, directory),
            fingerprint.stage_inputs(self.cfg, "prompts"),
        )
        train = list(files.read_jsonl(os.path.join(directory, "train.jsonl")))
        heldout_path = os.path.join(directory, "heldout.jsonl")
        heldout = list(files.read_jsonl(heldout_path)) if os.path.exists(heldout_path) else []
        self.constraints = constraints_by_instruction(train + heldout)
        return train, heldout

    def iteration_prompts(self, it: int, pool: list[dict]) -> list[dict]:
        """Iteration ``it``'s fresh prompts: the ``it``-th disjoint slice of the pool."""
        iterations = self.cfg.spar.iterations
        per = self.cfg.prompts.per_iteration or len(pool) // iterations
        if per < 1 or per * iterations > len(pool):
            raise ValueError(
                f"prompts: the pool has {len(pool)} prompts; {iterations} iterations of "
                f"{per or 'at least 1'} fresh prompts need {max(per, 1) * iterations} "
                "(raise prompts.num_train or lower prompts.per_iteration)"
            )
        return pool[(it - 1) * per : it * per]

    def judge(self, refiner: str):
        """The configured judge (`judges.make_judge`); the refiner's engine is loaded only if it is used."""
        kind = self.cfg.judge_kind
        engine = None if kind == "rules" else self.runtime.deferred_engine("refiner", refiner)
        return (
            make_judge(kind, engine, [], self.templates)
            if kind == "model"
            else make_judge(
                kind,
                engine,
                [{"prompt": k, "instruction_id_list": v[0], "kwargs": v[1]} for k, v in self.constraints.items()],
                self.templates,
            )
        )

    def sampling(self, fn: Callable[[], dict]) -> Callable[[], dict]:
        """``fn`` (a sampling step) whose record also gets ``sampling``: the engines' counters over the step and
        their slot utilization (``stats.sampling_use``). A resumed step counts the shards sampled by this process."""

        def counted():
            before = self.runtime.engine_counters()
            info = fn()
            use = S.sampling_use(before, self.runtime.engine_counters())
            return {**info, "sampling": use} if use else info

        return counted

    def verdict(self, instruction: str, response: str) -> bool | None:
        """The checker's strict verdict, None for prompts without checkable constraints."""
        return checker_verdicts([(instruction, response)], self.constraints)[0]

    def mine(self, it: int, prompts: list[dict], actor: str, refiner: str) -> list[PromptRecord]:
        directory = self.path(f"iter_{it}", "mine")

        def shard(items, s):
            recs = mine(
                self.runtime.engine("actor", actor),
                None,
                [p["prompt"] for p in items],
                ids=[str(p["key"]) for p in items],
                config=self.cfg.mining,
                seed=derive_seed(self.cfg.seed, it, "mine", s),
                templates=self.templates,
                judge=self.judge(refiner),
            )
            return [r.to_dict() for r in recs]

        def step():
            recs = [
                PromptRecord.from_dict(r)
                for r in sharded(directory, prompts, self.cfg.spar.shard_size, shard, [p["key"] for p in prompts])
            ]
            verdicts = [[self.verdict(r.instruction, s.response) for s in r.samples] for r in recs]
            return S.mining_stats(recs, verdicts)

        inputs = fingerprint.stage_inputs(self.cfg, "mine", models={"actor": actor, "refiner": refiner})
        run_step(directory, self.sampling(step), inputs)
        return [PromptRecord.from_dict(r) for r in _read_shards(directory)]

    def search(
        self, it: int, mined: list[PromptRecord], refiner: str, *, sub: str = "", config=None
    ) -> list[TreeRecord]:
        """Tree search over the iteration's roots (``sub``/``config``: an ablation's directory and search budget)."""
        directory = self.path(f"iter_{it}", sub, "search")
        tree_roots = roots(mined)
        config = config or self.cfg.search

        def shard(items, s):
            outcome = search(
                self.runtime.engine("refiner", refiner),
                items,
                config=config,
                seed=derive_seed(self.cfg.seed, it, "search", s),
                templates=self.templates,
                judge=self.judge(refiner),
            )
            calls = [
                dict(kind=c.kind, step=c.step, attempt=c.attempt, n_requests=c.n_requests, n=c.n) for c in outcome.calls
            ]
            files.write_json(os.path.join(directory, f"shard_{s:05d}.calls.json"), calls)
            return [t.to_dict() for t in outcome.trees]

        def step():
            recs = sharded(directory, tree_roots, self.cfg.spar.shard_size, shard, [r.prompt_id for r in tree_roots])
            calls = []
            for s in range(math.ceil(len(tree_roots) / self.cfg.spar.shard_size)):
                with open(os.path.join(directory, f"shard_{s:05d}.calls.json")) as f:
                    calls.append(json.load(f))
            trees = [TreeRecord.from_dict(r) for r in recs]
            return {**S.search_stats(trees, calls), "checker": S.tree_checker_stats(trees, self.verdict)}

        inputs = fingerprint.stage_inputs(self.cfg, "search", models={"refiner": refiner})
        run_step(directory, self.sampling(step), inputs)
        return [TreeRecord.from_dict(r) for r in _read_shards(directory)]

    def data(self, it: int, trees: list[TreeRecord], mined: list[PromptRecord], *, sub: str = "") -> dict:
        """DPO pairs (from the trees; ``sub="ablation_no_refine"``: from independent samples) and the refiner mix."""
        directory = self.path(f"iter_{it}", sub, "data")

        def step():
            if sub.endswith("no_refine"):
                pairs, equal = sample_pairs(mined, seed=derive_seed(self.cfg.seed, it, "sample-pairs")), None
            else:
                pairs = dpo_pairs(trees)
                equal = sum(t.success and same_text(t.nodes[t.success_index].response, t.root.response) for t in trees)
            mixture, per_pool = refiner_mixture(
                trees,
                mined,
                config=self.cfg.mixture,
                seed=derive_seed(self.cfg.seed, it, "mixture"),
                templates=self.templates,
            )
            files.write_jsonl(os.path.join(directory, "dpo.jsonl"), pairs)
            files.write_jsonl(os.path.join(directory, "refiner_sft.jsonl"), mixture)
            return {
                "pairs": len(pairs),
                "equal_pairs_dropped": equal,
                "refiner_examples": len(mixture),
                "per_pool": per_pool,
                "edit_similarity": S.mean_edit_similarity(pairs),
                "checker": S.pair_checker_stats(pairs, self.verdict),
            }

        return run_step(directory, step, fingerprint.stage_inputs(self.cfg, "data"))

    def train(
        self,
        it: int | str,
        name: str,
        kind: str,
        data_path: str,
        init: str,
        role: str,
        n_examples: int,
        initial: bool = False,
        sub: str = "",
    ) -> str:
        """Train and return the new checkpoint path (``init`` unchanged when there is no data)."""
        directory = self.path(f"iter_{it}", sub, name)

        def step():
            if n_examples == 0:
                return {"skipped": "no training examples", "checkpoint": init}
            out = self.runtime.train(
                kind, data_path, init, directory, role=role, seed=derive_seed(self.cfg.seed, it, name), initial=initial
            )
            return {**out, "checkpoint": os.path.join(directory, "hf")}

        section = "dpo" if kind == "dpo" else "sft0" if initial else "sft"
        inputs = fingerprint.stage_inputs(self.cfg, section, models={role: init}, data=data_path)
        return run_step(directory, step, inputs)["checkpoint"]

    def evaluate(self, it: int, actor: str, heldout: list[dict], *, sub: str = "", ifeval: bool = True) -> dict:
        from spar_jax.spar import evaluation

        directory = self.path(f"iter_{it}", sub, "eval")
        inputs = fingerprint.stage_inputs(self.cfg, "eval", models={"actor": actor})
        measure = self.sampling(
            lambda: evaluation.evaluate_actor(
                self.runtime.engine("actor", actor),
                heldout,
                self.cfg,
                directory,
                seed=derive_seed(self.cfg.seed, it, "eval"),
                with_ifeval=ifeval,
            )
        )

        def step():
            twin = evaluation.finished_twin(self.wd, inputs.values, with_ifeval=ifeval)
            if twin and os.path.abspath(twin) != os.path.abspath(directory):  # the same actor, evaluated already
                return evaluation.reuse(twin, directory, self.wd)
            return measure()

        return run_step(directory, step, inputs)

    def ablation(self, name: str, mined: list[PromptRecord], actor: str, refiner: str, heldout: list[dict]) -> str:
        """One of the paper's ablations at iteration 1, from the iteration's own mined samples and starting models:
        "no_tree" refines each root once (kept only if judged a pass), "no_refine" pairs independent samples.
        Returns the ablation actor's checkpoint."""
        import dataclasses

        sub = f"ablation_{name}"
        trees = []
        if name == "no_tree":
            single = dataclasses.replace(self.cfg.search, branch=1, keep=1, max_depth=1)
            trees = self.search(1, mined, refiner, sub=sub, config=single)
        data = self.data(1, trees, mined, sub=sub)
        d = self.path("iter_1", sub, "data")
        new_actor = self.train(1, "actor", "dpo", os.path.join(d, "dpo.jsonl"), actor, "actor", data["pairs"], sub=sub)
        self.evaluate(1, new_actor, heldout, sub=sub)
        return new_actor

    def bootstrap(self, avoid: list[dict], actor: str) -> dict:
        """Stage-0 SFT data from generated prompts judged by the IFEval checker and fixed by rule."""
        from spar_jax.spar import bootstrap, sources
        from spar_jax.spar.evaluation import sample_responses

        directory = self.path("iter_0", "bootstrap")
        cfg = self.cfg.spar

        def step():
            prompts = sources.generate_excluding(
                self.cfg,
                cfg.bootstrap_prompts,
                seed=derive_seed(self.cfg.seed, "bootstrap-prompts"),
                exclude=[p["prompt"] for p in avoid],
            )
            seed = derive_seed(self.cfg.seed, "bootstrap")
            if cfg.bootstrap_responses == "actor":
                responses = sample_responses(
                    self.runtime.engine("actor", actor),
                    prompts,
                    n=cfg.bootstrap_per_prompt,
                    sampling=self.cfg.mining.actor_sampling,
                    seed=seed,
                )
            else:
                responses = [bootstrap.synthetic_responses(p, cfg.bootstrap_per_prompt, seed=seed) for p in prompts]
            pools, counts = bootstrap.bootstrap_examples(prompts, responses, self.templates, seed=seed)
            refiner = bootstrap.refiner_mixture(pools, cfg.bootstrap_refine_share, seed=seed)
            files.write_jsonl(os.path.join(directory, "refiner_sft.jsonl"), refiner)
            files.write_jsonl(os.path.join(directory, "actor_sft.jsonl"), pools["actor"])
            return {**counts, "refiner_examples": len(refiner), "actor_examples": len(pools["actor"])}

        return run_step(
            directory, self.sampling(step), fingerprint.stage_inputs(self.cfg, "bootstrap", models={"actor": actor})
        )

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self, on_eval: Callable[[str, str], None] | None = None) -> dict:
        """The loop; ``on_eval(name, eval_dir)`` is called after each evaluation ("iter_N" or "iter_1/ablation_X").
        An engine error about an over-long prompt names the prompt's key and file
        (``judge.generation.prompt_source``)."""
        fingerprint.check_config(self.wd, self.cfg.raw)
        pool, heldout = self.prompts()
        train_file, heldout_file = self.path("prompts", "train.jsonl"), self.path("prompts", "heldout.jsonl")
        with (
            gen.prompt_source([(p["key"], p["prompt"]) for p in pool], train_file),
            gen.prompt_source([(p["key"], p["prompt"]) for p in heldout], heldout_file),
        ):
            return self._loop(pool, heldout, on_eval)

    def _loop(self, pool: list[dict], heldout: list[dict], on_eval) -> dict:
        from spar_jax.spar import publish, report

        cfg = self.cfg
        notify = on_eval or (lambda name, directory: None)
        actor, refiner = cfg.actor.path, cfg.refiner.path or cfg.actor.path
        actor_sft, refiner_sft = cfg.spar.initial_sft_actor, cfg.spar.initial_sft_refiner
        counts = {"actor": -1, "refiner": -1}
        if cfg.spar.bootstrap_prompts:
            info = self.bootstrap(pool + heldout, actor)
            refiner_sft = self.path("iter_0", "bootstrap", "refiner_sft.jsonl")
            counts["refiner"] = info["refiner_examples"]
            if cfg.spar.bootstrap_actor:
                actor_sft, counts["actor"] = self.path("iter_0", "bootstrap", "actor_sft.jsonl"), info["actor_examples"]
        if actor_sft:
            actor = self.train(0, "sft_actor", "sft", actor_sft, actor, "actor", counts["actor"], initial=True)
        if refiner_sft:
            refiner = self.train(
                0, "sft_refiner", "sft", refiner_sft, refiner, "refiner", counts["refiner"], initial=True
            )
        if cfg.spar.eval_base:
            self.evaluate(0, actor, heldout)
            notify("iter_0", self.path("iter_0", "eval"))
        for it in range(1, cfg.spar.iterations + 1):
            mined = self.mine(it, self.iteration_prompts(it, pool), actor, refiner)
            trees = self.search(it, mined, refiner)
            data = self.data(it, trees, mined)
            d = self.path(f"iter_{it}", "data")
            start_refiner = refiner
            new_actor = self.train(it, "actor", "dpo", os.path.join(d, "dpo.jsonl"), actor, "actor", data["pairs"])
            refiner = self.train(
                it, "refiner", "sft", os.path.join(d, "refiner_sft.jsonl"), refiner, "refiner", data["refiner_examples"]
            )
            final = it == cfg.spar.iterations
            self.evaluate(it, new_actor, heldout, ifeval=final or not cfg.eval.ifeval_final_only)
            notify(f"iter_{it}", self.path(f"iter_{it}", "eval"))
            if it == 1:
                for name in cfg.spar.ablations:
                    self.ablation(name, mined, actor, start_refiner, heldout)
                    notify(f"iter_1/ablation_{name}", self.path("iter_1", f"ablation_{name}", "eval"))
            actor = new_actor
            publish.after_iteration(cfg, it)
        self.runtime.release()
        return report.write_report(self.wd, cfg.spar.iterations)


def _read_shards(directory: str) -> list[dict]:
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("shard_") and name.endswith(".jsonl"):
            out.extend(files.read_jsonl(os.path.join(directory, name)))
    return out
