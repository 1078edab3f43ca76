"""Per-iteration evaluation of the actor: held-out generated prompts and (when reachable) IFEval proper, both scored
by our IFEval rule checker."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil

from spar_jax import files, fingerprint, ifeval
from spar_jax.judge import generation as gen
from spar_jax.judge.answers import generate_responses
from spar_jax.judge.templates import actor_messages
from spar_jax.resumable import sharded

_log = logging.getLogger(__name__)


def answer(engine, prompts: list[dict], *, max_new_tokens: int, seed: int) -> list[str]:
    """Greedy answers of the actor (one user turn, no system prompt), in prompt order."""
    requests = [actor_messages(p["prompt"]) for p in prompts]
    with gen.naming_prompts(requests):
        results = engine.generate(requests, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    return [r.completions[0].text for r in results]


def sample_responses(engine, prompts: list[dict], *, n: int, sampling, seed: int) -> list[list[str]]:
    """``n`` sampled answers per prompt (one engine call), for Stage-0 data from the actor's own outputs."""
    requests = [actor_messages(p["prompt"]) for p in prompts]
    with gen.naming_prompts(requests):
        results = engine.generate(
            requests,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            n=n,
            seed=seed,
        )
    return [[c.text for c in r.completions] for r in results]


def score(prompts: list[dict], responses: list[str], directory: str, title: str) -> dict:
    report = ifeval.score_responses(prompts, responses)
    ifeval.write_report(report, directory, title=title)
    files.write_jsonl(
        os.path.join(directory, "responses.jsonl"),
        [{"prompt": p["prompt"], "response": r} for p, r in zip(prompts, responses)],
    )
    return dict(report.metrics)


def ifeval_responses(engine, prompts: list, directory: str, *, max_new_tokens: int) -> list[str]:
    """Greedy IFEval answers generated in resumable shards of 64 prompts under ``directory/shards`` (greedy: the
    seed is fixed at 0, so the shards match those of the ``ifeval`` stage for the same model and settings)."""
    records = sharded(
        os.path.join(directory, "shards"),
        prompts,
        64,
        lambda shard, _: generate_responses(engine, shard, max_new_tokens=max_new_tokens, seed=0),
        keys=[(p.key, p.prompt, max_new_tokens, 0) for p in prompts],
    )
    return [r["response"] for r in records]


def evaluate_actor(engine, heldout: list[dict], cfg, directory: str, *, seed: int, with_ifeval: bool = True) -> dict:
    """Scores the actor on the held-out prompts and, if ``with_ifeval`` and ``cfg.eval.ifeval_source`` is set and
    reachable, on IFEval (whose responses.jsonl is Google's ``input_response_data`` layout).

    Returns {"heldout": metrics, "ifeval": metrics | None, "ifeval_note": str | None}.
    """
    out = {"heldout": None, "ifeval": None, "ifeval_note": None}
    if heldout:
        responses = answer(engine, heldout, max_new_tokens=cfg.eval.max_new_tokens, seed=seed)
        out["heldout"] = score(heldout, responses, os.path.join(directory, "heldout"), "held-out generated prompts")
    if cfg.eval.ifeval_source and with_ifeval:
        try:
            prompts = ifeval.load_ifeval_prompts(cfg.eval.ifeval_source)
        except (ValueError, OSError, files.SourceUnavailableError) as e:
            out["ifeval_note"] = f"IFEval not evaluated: {e}"
            _log.warning(out["ifeval_note"])
            return out
        if cfg.eval.ifeval_limit:
            prompts = prompts[: cfg.eval.ifeval_limit]
        records = [
            {
                "key": p.key,
                "prompt": p.prompt,
                "instruction_id_list": list(p.instruction_id_list),
                "kwargs": [dict(k) for k in p.kwargs],
            }
            for p in prompts
        ]
        target = os.path.join(directory, "ifeval")
        with gen.prompt_source([(p.key, p.prompt) for p in prompts], cfg.eval.ifeval_source):
            responses = ifeval_responses(engine, prompts, target, max_new_tokens=cfg.eval.max_new_tokens)
        out["ifeval"] = score(records, responses, target, "IFEval")
    return out


def finished_twin(workdir: str, inputs: dict, *, with_ifeval: bool) -> str | None:
    """A finished evaluation under ``workdir`` made from the same recorded ``inputs`` (the same actor checkpoint and
    evaluation settings), with IFEval scored if ``with_ifeval``; None if there is none. Answers are greedy, so its
    results are this evaluation's: an iteration that yields no DPO pairs leaves the actor unchanged, and its
    evaluation need not decode the same answers again."""
    root = glob.escape(workdir)
    found = glob.glob(os.path.join(root, "iter_*", "eval", "DONE.json"))
    found += glob.glob(os.path.join(root, "iter_*", "ablation_*", "eval", "DONE.json"))
    for done in sorted(found):
        with open(done) as f:
            info = json.load(f)
        # The inputs record, not DONE.json's copy: a step adopted from before fingerprints has only the record.
        record = fingerprint.read_record(os.path.join(os.path.dirname(done), fingerprint.RECORD)) or {}
        if record.get("values") == inputs and (info.get("ifeval") or not with_ifeval) and not info.get("reused_from"):
            return os.path.dirname(done)
    return None


def reuse(twin: str, directory: str, workdir: str) -> dict:
    """Copy the twin's results into ``directory`` (not its step records) and return its statistics, marked with
    ``reused_from`` (the twin, relative to ``workdir``)."""
    with open(os.path.join(twin, "DONE.json")) as f:
        info = json.load(f)
    if files.is_writer():
        shutil.copytree(
            twin,
            directory,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("DONE.json", "inputs.json", ".tmp*", "*.timing"),
        )
    kept = {k: v for k, v in info.items() if k not in ("seconds", "seconds_earlier_attempts", "inputs", "sampling")}
    return {**kept, "reused_from": os.path.relpath(twin, workdir)}
