"""The study stage: does the loop improve a model, measured the way the paper measures it?

One command runs, in one workdir, everything the results table needs, each part resumable like the loop:

    workdir/spar/    the faithful loop (``judge.kind`` as configured, normally "model"), Stage 0 included, with
                     the paper's ablations at iteration 1 (``spar.ablations``)
    workdir/rules/   the same iterations with the IFEval checker as the judge (``study.rules_run``), starting from
                     the same Stage-0 refiner and the same prompts: the upper bound that isolates the judge's quality

After every evaluation the results (`results.write_results`) are regenerated into ``study.results_dir``, so each
row can be committed as soon as it exists. The study is deterministic for its seed: a lost iteration reruns to the
same result.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from spar_jax.config import RunConfig, parse
from spar_jax.spar import results
from spar_jax.spar.pipeline import Pipeline, step_info


def variant(cfg: RunConfig, **changes: Any) -> RunConfig:
    """``cfg`` with dotted keys changed (e.g. ``{"judge.kind": "rules"}``), run as the "spar" stage."""
    raw = ml_collections.ConfigDict(cfg.raw)
    raw.stages = ("spar",)
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        target = raw
        for part in filter(None, section.split(".")):
            target = target[part]
        target[leaf] = value
    return parse(raw)


def run(cfg: RunConfig, runtime) -> dict[str, Any]:
    """Runs the loop, its ablations and (optionally) the rules-judged loop; returns the results summary."""
    if not cfg.eval.ifeval_source:
        raise ValueError(
            "config key 'eval.ifeval_source' must name the IFEval prompts for the study (a JSONL path or google/IFEval)"
        )
    wd = cfg.workdir

    def publish(*_):
        results.write_results(
            wd, cfg.study.results_dir, cfg.eval.ifeval_source, iterations=cfg.spar.iterations, title="SPaR study"
        )

    main = variant(cfg, workdir=os.path.join(wd, "spar"), **{"eval.ifeval_final_only": False})
    Pipeline(main, runtime).run(on_eval=publish)
    if cfg.study.rules_run:
        stage0 = step_info(os.path.join(wd, "spar", "iter_0", "sft_refiner"))  # the same Stage-0 refiner
        rules = variant(
            cfg,
            workdir=os.path.join(wd, "rules"),
            **{
                "judge.kind": "rules",
                "spar.eval_base": False,
                "spar.ablations": (),
                "spar.bootstrap_prompts": 0,
                "spar.bootstrap_actor": False,
                "spar.initial_sft_refiner": "",
                "eval.ifeval_final_only": False,
                "refiner.path": stage0["checkpoint"] if stage0 else cfg.refiner.path,
            },
        )
        Pipeline(rules, runtime).run(on_eval=publish)
    summary = results.write_results(wd, cfg.study.results_dir, cfg.eval.ifeval_source, iterations=cfg.spar.iterations)
    return {"rows": {k: v["metrics"] for k, v in summary["rows"].items()}, "results_dir": cfg.study.results_dir}
