"""Entry point: ``python -m spar_jax.main --config=configs/NAME.py [--config.key=value ...] [--print_config]``.

``--config`` also takes a JSON or YAML file, e.g. a past run's ``WORKDIR/config.json`` to rerun it with exactly its
settings. ``--print_config`` prints every key with its value and description, then exits.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from absl import app, flags
from absl import logging as absl_logging

from spar_jax import config_io, progress

_CONFIG = config_io.define_config_flag(
    "config", "Path to a config: an ml-collections Python file (get_config()), or a JSON/YAML file such as a past "
    "run's WORKDIR/config.json. Override keys with --config.SECTION.KEY=VALUE; list them with --print_config.")
_PRINT = flags.DEFINE_bool("print_config", False, "Print every config key with its value and description, then exit.")


def _stage_evaluate(cfg, runtime) -> dict:
    from spar_jax import io
    from spar_jax.spar import evaluation, sources

    # The held-out prompts of a SPaR run in this workdir, so the numbers compare with the run's own evaluations.
    path = os.path.join(cfg.workdir, "prompts", "heldout.jsonl")
    heldout = list(io.read_jsonl(path)) if os.path.exists(path) else sources.heldout_prompts(cfg)
    from spar_jax.spar import engine_protocol as ep

    directory = os.path.join(cfg.workdir, "evaluate")
    source = path if os.path.exists(path) else "the generated held-out prompts"
    with ep.prompt_source([(p["key"], p["prompt"]) for p in heldout], source):
        return evaluation.evaluate_actor(runtime.engine("actor", cfg.actor.path), heldout, cfg, directory,
                                         seed=cfg.seed)


def _stage_refine_inference(cfg, runtime) -> dict:
    from spar_jax.eval import ifeval
    from spar_jax.spar import inference, sources

    if cfg.eval.ifeval_source:
        prompts = [{"key": p.key, "prompt": p.prompt, "instruction_id_list": list(p.instruction_id_list),
                    "kwargs": [dict(k) for k in p.kwargs]} for p in ifeval.load_ifeval_prompts(cfg.eval.ifeval_source)]
        prompts = prompts[: cfg.eval.ifeval_limit] if cfg.eval.ifeval_limit else prompts
    else:
        prompts = sources.generated(cfg, cfg.prompts.num_heldout, seed=cfg.seed)
    refiner_path = cfg.refiner.path or cfg.actor.path
    engines = (runtime.engine("actor", cfg.actor.path), runtime.engine("refiner", refiner_path))
    return inference.run(engines, prompts, cfg, os.path.join(cfg.workdir, "refine_inference"), seed=cfg.seed)


def _stage_eval(name: str, cfg, runtime) -> dict:
    """IFEval (actor), judge calibration and LLMBar (refiner as judge), FollowBench (actor + a judge model)."""
    import dataclasses

    from spar_jax.eval import calibration, followbench, llmbar, run_ifeval

    deferred = runtime.deferred_engine  # each loaded on first use, after the stage has read its inputs
    settings = cfg.evals[name]
    if not settings.label:
        settings = dataclasses.replace(settings, label=cfg.actor.path if name in ("ifeval", "followbench")
                                       else cfg.refiner.path or cfg.actor.path)  # fmt: skip
    out = os.path.join(cfg.workdir, name)
    refiner_path = cfg.refiner.path or cfg.actor.path
    if name == "ifeval":
        engine = None if settings.responses_file else deferred("actor", cfg.actor.path)
        return run_ifeval.run(engine, settings, out, inputs=stage_inputs(cfg, name))
    if name == "calibration":
        actor = None if settings.responses_file else deferred("actor", cfg.actor.path)
        return calibration.run(deferred("refiner", refiner_path), settings, out, actor_engine=actor)
    if name == "llmbar":
        return llmbar.run(deferred("refiner", refiner_path), settings, out)
    judge_path = cfg.judge_paths.get(name) or refiner_path
    actor = None if settings.responses_file else deferred("actor", cfg.actor.path)
    if not settings.judge_name:
        settings = dataclasses.replace(settings, judge_name=judge_path)
    return followbench.run(actor, settings, out, judge_engine=deferred("refiner", judge_path))


def _resolve_hub_data(cfg):
    """Initial SFT data named by a hub dataset id -> the local file of its snapshot (models resolve on load)."""
    import dataclasses

    from spar_jax.models import hub

    paths = {k: getattr(cfg.spar, k) for k in ("initial_sft_actor", "initial_sft_refiner")}
    resolved = {k: hub.data_file(v) for k, v in paths.items() if v and hub.is_hub_id(v)}
    return dataclasses.replace(cfg, spar=dataclasses.replace(cfg.spar, **resolved)) if resolved else cfg


def stage_inputs(cfg, stage: str):
    """The fingerprint of a stage run from the entry point: the models it reads, and the files it scores."""
    refiner = cfg.refiner.path or cfg.actor.path
    models, data = {"actor": cfg.actor.path}, ""
    if stage in cfg.evals:
        settings = cfg.evals[stage]
        data = getattr(settings, "responses_file", "")
        if data:
            models = {}
        if stage in ("calibration", "llmbar"):
            models["refiner"] = refiner
        if stage == "followbench":
            models["judge"] = cfg.judge_paths.get(stage) or refiner
    elif stage == "refine_inference":
        models["refiner"] = refiner
    from spar_jax import fingerprint

    return fingerprint.stage_inputs(cfg, stage, models=models, data=data, cascade=False)


def run(config, *, runtime=None) -> dict:
    """Run the configured stages; returns a summary dict. ``config`` is a ConfigDict."""
    from spar_jax import config as config_lib
    from spar_jax import bucket, fingerprint, mesh_check, parallel
    from spar_jax.spar.runtime import Runtime

    cfg = config_lib.parse(config)
    bucket.check_workdir(cfg.workdir)
    parallel.maybe_initialize_distributed()
    import jax

    # After the distributed start-up (the device count initializes the backend), before any model is loaded.
    mesh_check.validate_against_devices(cfg, jax.device_count())
    cfg = _resolve_hub_data(cfg)
    os.makedirs(cfg.workdir, exist_ok=True)
    runtime = runtime or Runtime(cfg)
    summary = {}
    for i, stage in enumerate(cfg.stages):
        start = time.time()
        progress.line(f"stage {stage} ({i + 1}/{len(cfg.stages)}): start")
        if stage not in ("spar", "study"):  # the SPaR pipelines check each of their own stages
            fingerprint.decide(os.path.join(cfg.workdir, stage), stage_inputs(cfg, stage))
        if stage == "answer":
            from spar_jax.stages import answer

            summary[stage] = answer.run(cfg)
        elif stage == "spar":
            from spar_jax.spar.pipeline import Pipeline

            summary[stage] = Pipeline(cfg, runtime).run()
        elif stage == "study":
            from spar_jax.spar import study

            summary[stage] = study.run(cfg, runtime)
        elif stage == "evaluate":
            summary[stage] = _stage_evaluate(cfg, runtime)
        elif stage == "refine_inference":
            summary[stage] = _stage_refine_inference(cfg, runtime)
        else:
            summary[stage] = _stage_eval(stage, cfg, runtime)
        summary[stage]["seconds"] = round(time.time() - start, 2)
        progress.line(f"stage {stage} ({i + 1}/{len(cfg.stages)}): done in {progress.duration(time.time() - start)}")
    return summary


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/NAME.py is required")
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every checkpoint at INFO; progress bars tell the story
        absl_logging.set_verbosity(absl_logging.WARNING)
    from spar_jax.io import SourceUnavailableError

    try:
        if _PRINT.value:
            from spar_jax import config as config_lib

            print(config_io.listing(config_lib.parse(_CONFIG.value).raw))
            return
        summary = run(_CONFIG.value)
    except (ValueError, FileNotFoundError, SourceUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if "spar" in summary:
        with open(summary["spar"]["report"]) as f:
            print(f.read())
    else:
        print(json.dumps(summary, indent=2, default=str))


def _parse_flags(argv):
    """absl's parser, with config-override errors (unknown key, bad type) reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        message = str(e).strip()
        while len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError/AttributeError repr
            message = message[1:-1]
        message = message.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        if message.isidentifier():  # a bare key name: an override of a key the config does not have
            flag = next((a.split("=")[0] for a in argv if message in a.split("=")[0].split(".")[1:]), None)
            message = f"unknown config key {message!r}" + (f" in {flag}" if flag else "")
        print(f"error: bad command line: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    logging.getLogger("jax").setLevel(logging.WARNING)
    app.run(_main, flags_parser=_parse_flags)
