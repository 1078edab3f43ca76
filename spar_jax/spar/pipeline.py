"""SPaR iterations as resumable stages under one workdir. Knows stages and files, not math.

Layout::

    workdir/prompts/{train,heldout}.jsonl             prompt sets (IFEval schema: key, prompt, instruction_id_list, kwargs)
    workdir/iter_0/{sft_actor,sft_refiner,eval}/      optional initial SFT; evaluation of the starting actor
    workdir/iter_N/mine/shard_00000.jsonl ...          actor samples + refiner votes + tree roots, per prompt shard
    workdir/iter_N/search/shard_00000.jsonl ...        refinement trees, per root shard (+ .calls.json)
    workdir/iter_N/data/{dpo,refiner_sft}.jsonl        training data
    workdir/iter_N/{actor,refiner}/{checkpoints,hf}/   DPO'd actor and SFT'd refiner (Orbax checkpoints, HF export)
    workdir/iter_N/eval/                               IFEval-checker evaluation of the new actor
    workdir/report.md, metrics.jsonl, tensorboard/, metrics.png

Every stage writes its artifacts atomically and ends with ``DONE.json`` (its statistics and wall time). A rerun skips
finished stages, resumes sampling stages from the next unwritten shard (each shard has its own derived seed, so the
result does not depend on where a run was interrupted) and training from its last Orbax checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

from spar_jax import fingerprint, io
from spar_jax.config import RunConfig
from spar_jax.parallel import sync_processes
from spar_jax.shards import sharded
from spar_jax.spar import stats as S
from spar_jax.spar.data import dpo_pairs, refiner_mixture
from spar_jax.spar.engine_protocol import derive_seed
from spar_jax.spar.mining import PromptRecord, mine, roots
from spar_jax.spar.prompts import DEFAULT_TEMPLATES, Templates
from spar_jax.spar.runtime import Runtime
from spar_jax.spar.tree_search import TreeRecord, search

DONE = "DONE.json"
_log = logging.getLogger(__name__)


def stage_info(directory: str) -> dict | None:
    """The DONE record of a finished stage, or None."""
    path = os.path.join(directory, DONE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_stage(directory: str, fn: Callable[[], dict], inputs: fingerprint.StageInputs | None = None) -> dict:
    """Run ``fn`` unless ``directory`` holds a DONE record made from the same ``inputs``; record its statistics,
    inputs and wall time. Changed inputs stop the run or rerun the stage (see ``spar_jax.fingerprint``)."""
    if fingerprint.decide(directory, inputs):
        _log.info("skip finished stage %s", directory)
        return stage_info(directory)
    os.makedirs(directory, exist_ok=True)
    start = time.time()
    info = fn()
    info["seconds"] = round(time.time() - start, 2)
    if inputs is not None:
        info["inputs"] = inputs.values
    io.write_json(os.path.join(directory, DONE), info)
    sync_processes(f"done:{directory}")  # process 0 wrote the stage's files; the next stage reads them everywhere
    return info


class Pipeline:
    """The SPaR loop over ``cfg.spar.iterations`` iterations (see the module docstring for the layout)."""

    def __init__(self, cfg: RunConfig, runtime: Runtime | None = None):
        self.cfg = cfg
        self.runtime = runtime or Runtime(cfg)
        self.templates = Templates.from_file(cfg.spar.templates_file) if cfg.spar.templates_file else DEFAULT_TEMPLATES
        self.wd = cfg.workdir

    def path(self, *parts) -> str:
        return os.path.join(self.wd, *[str(p) for p in parts])

    # -- stages -------------------------------------------------------------------------------------------------

    def prompts(self) -> tuple[list[dict], list[dict]]:
        from spar_jax.spar import sources

        directory = self.path("prompts")
        run_stage(directory, lambda: sources.prepare(self.cfg, self.runtime, directory),
                  fingerprint.stage_inputs(self.cfg, "prompts"))
        train = list(io.read_jsonl(os.path.join(directory, "train.jsonl")))
        heldout_path = os.path.join(directory, "heldout.jsonl")
        heldout = list(io.read_jsonl(heldout_path)) if os.path.exists(heldout_path) else []
        return train, heldout

    def mine(self, it: int, prompts: list[dict], actor: str, refiner: str) -> list[PromptRecord]:
        directory = self.path(f"iter_{it}", "mine")

        def shard(items, s):
            recs = mine(
                self.runtime.engine("actor", actor), self.runtime.engine("refiner", refiner),
                [p["prompt"] for p in items], ids=[str(p["key"]) for p in items], config=self.cfg.mining,
                seed=derive_seed(self.cfg.seed, it, "mine", s), templates=self.templates,
            )  # fmt: skip
            return [r.to_dict() for r in recs]

        def stage():
            recs = sharded(directory, prompts, self.cfg.spar.shard_size, shard, [p["key"] for p in prompts])
            return S.mining_stats([PromptRecord.from_dict(r) for r in recs])

        inputs = fingerprint.stage_inputs(self.cfg, "mine", models={"actor": actor, "refiner": refiner})
        run_stage(directory, stage, inputs)
        return [PromptRecord.from_dict(r) for r in _read_shards(directory)]

    def search(self, it: int, mined: list[PromptRecord], refiner: str) -> list[TreeRecord]:
        directory = self.path(f"iter_{it}", "search")
        tree_roots = roots(mined)

        def shard(items, s):
            outcome = search(self.runtime.engine("refiner", refiner), items, config=self.cfg.search,
                             seed=derive_seed(self.cfg.seed, it, "search", s), templates=self.templates)  # fmt: skip
            calls = [dict(kind=c.kind, step=c.step, attempt=c.attempt, n_requests=c.n_requests, n=c.n)
                     for c in outcome.calls]  # fmt: skip
            io.write_json(os.path.join(directory, f"shard_{s:05d}.calls.json"), calls)
            return [t.to_dict() for t in outcome.trees]

        def stage():
            recs = sharded(directory, tree_roots, self.cfg.spar.shard_size, shard, [r.prompt_id for r in tree_roots])
            calls = []
            for s in range(math.ceil(len(tree_roots) / self.cfg.spar.shard_size)):
                with open(os.path.join(directory, f"shard_{s:05d}.calls.json")) as f:
                    calls.append(json.load(f))
            return S.search_stats([TreeRecord.from_dict(r) for r in recs], calls)

        run_stage(directory, stage, fingerprint.stage_inputs(self.cfg, "search", models={"refiner": refiner}))
        return [TreeRecord.from_dict(r) for r in _read_shards(directory)]

    def data(self, it: int, trees: list[TreeRecord], mined: list[PromptRecord]) -> dict:
        directory = self.path(f"iter_{it}", "data")

        def stage():
            pairs = dpo_pairs(trees)
            mixture, per_pool = refiner_mixture(trees, mined, config=self.cfg.mixture,
                                                seed=derive_seed(self.cfg.seed, it, "mixture"), templates=self.templates)
            io.write_jsonl(os.path.join(directory, "dpo.jsonl"), pairs)
            io.write_jsonl(os.path.join(directory, "refiner_sft.jsonl"), mixture)
            return {"pairs": len(pairs), "refiner_examples": len(mixture), "per_pool": per_pool,
                    "edit_similarity": S.mean_edit_similarity(pairs)}  # fmt: skip

        return run_stage(directory, stage, fingerprint.stage_inputs(self.cfg, "data"))

    def train(self, it: int | str, name: str, kind: str, data_path: str, init: str, role: str, n_examples: int,
              initial: bool = False) -> str:
        """Train and return the new checkpoint path (``init`` unchanged when there is no data)."""
        directory = self.path(f"iter_{it}", name)

        def stage():
            if n_examples == 0:
                return {"skipped": "no training examples", "checkpoint": init}
            out = self.runtime.train(kind, data_path, init, directory, role=role,
                                     seed=derive_seed(self.cfg.seed, it, name), initial=initial)  # fmt: skip
            return {**out, "checkpoint": os.path.join(directory, "hf")}

        section = "dpo" if kind == "dpo" else "sft0" if initial else "sft"
        inputs = fingerprint.stage_inputs(self.cfg, section, models={role: init}, data=data_path)
        return run_stage(directory, stage, inputs)["checkpoint"]

    def evaluate(self, it: int, actor: str, heldout: list[dict]) -> dict:
        from spar_jax.spar import evaluation

        directory = self.path(f"iter_{it}", "eval")
        return run_stage(directory, lambda: evaluation.evaluate_actor(
            self.runtime.engine("actor", actor), heldout, self.cfg, directory, seed=derive_seed(self.cfg.seed, it, "eval")),
            fingerprint.stage_inputs(self.cfg, "eval", models={"actor": actor}))

    def bootstrap(self, avoid: list[dict], actor: str) -> dict:
        """Stage-0 SFT data from generated prompts judged by the IFEval checker and fixed by rule."""
        from spar_jax.spar import bootstrap, sources
        from spar_jax.spar.evaluation import sample_responses

        directory = self.path("iter_0", "bootstrap")
        cfg = self.cfg.spar

        def stage():
            prompts = sources.generate_excluding(
                self.cfg, cfg.bootstrap_prompts, seed=derive_seed(self.cfg.seed, "bootstrap-prompts"),
                exclude=[p["prompt"] for p in avoid])  # fmt: skip
            seed = derive_seed(self.cfg.seed, "bootstrap")
            if cfg.bootstrap_responses == "actor":
                responses = sample_responses(self.runtime.engine("actor", actor), prompts, n=cfg.bootstrap_per_prompt,
                                             sampling=self.cfg.mining.actor_sampling, seed=seed)  # fmt: skip
            else:
                responses = [bootstrap.synthetic_responses(p, cfg.bootstrap_per_prompt, seed=seed) for p in prompts]
            pools, counts = bootstrap.bootstrap_examples(prompts, responses, self.templates, seed=seed)
            refiner = bootstrap.refiner_mixture(pools, cfg.bootstrap_refine_share, seed=seed)
            io.write_jsonl(os.path.join(directory, "refiner_sft.jsonl"), refiner)
            io.write_jsonl(os.path.join(directory, "actor_sft.jsonl"), pools["actor"])
            return {**counts, "refiner_examples": len(refiner), "actor_examples": len(pools["actor"])}

        return run_stage(directory, stage, fingerprint.stage_inputs(self.cfg, "bootstrap", models={"actor": actor}))

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> dict:
        from spar_jax.spar import report

        cfg = self.cfg
        fingerprint.check_config(self.wd, cfg.raw)
        train_prompts, heldout = self.prompts()
        actor, refiner = cfg.actor.path, cfg.refiner.path or cfg.actor.path
        actor_sft, refiner_sft = cfg.spar.initial_sft_actor, cfg.spar.initial_sft_refiner
        counts = {"actor": -1, "refiner": -1}
        if cfg.spar.bootstrap_prompts:
            info = self.bootstrap(train_prompts + heldout, actor)
            refiner_sft = self.path("iter_0", "bootstrap", "refiner_sft.jsonl")
            counts["refiner"] = info["refiner_examples"]
            if cfg.spar.bootstrap_actor:
                actor_sft, counts["actor"] = self.path("iter_0", "bootstrap", "actor_sft.jsonl"), info["actor_examples"]
        if actor_sft:
            actor = self.train(0, "sft_actor", "sft", actor_sft, actor, "actor", counts["actor"], initial=True)
        if refiner_sft:
            refiner = self.train(0, "sft_refiner", "sft", refiner_sft, refiner, "refiner", counts["refiner"], initial=True)
        if cfg.spar.eval_base:
            self.evaluate(0, actor, heldout)
        for it in range(1, cfg.spar.iterations + 1):
            mined = self.mine(it, train_prompts, actor, refiner)
            trees = self.search(it, mined, refiner)
            data = self.data(it, trees, mined)
            d = self.path(f"iter_{it}", "data")
            new_actor = self.train(it, "actor", "dpo", os.path.join(d, "dpo.jsonl"), actor, "actor", data["pairs"])
            refiner = self.train(it, "refiner", "sft", os.path.join(d, "refiner_sft.jsonl"), refiner, "refiner",
                                 data["refiner_examples"])  # fmt: skip
            actor = new_actor
            self.evaluate(it, actor, heldout)
        self.runtime.release()
        return report.write_report(self.wd, cfg.spar.iterations)


def _read_shards(directory: str) -> list[dict]:
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("shard_") and name.endswith(".jsonl"):
            out.extend(io.read_jsonl(os.path.join(directory, name)))
    return out
