"""Judge calibration: how well a model, used as the SPaR judge, agrees with IFEval's rule checker.

Items are IFEval prompts × responses (from a file, or sampled from an actor). The truth of an item is "Yes" when the
response passes every one of its instructions strictly, else "No". The judge uses the SPaR loop's judgment prompt
and k-vote rules (``spar_jax.judge.votes``). "No" is the positive class: those are the negatives SPaR mines.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from spar_jax import files, ifeval
from spar_jax.eval.summary import base_summary, markdown_table, pct, ratio, write_summary
from spar_jax.judge import generation as gen
from spar_jax.judge.settings import JudgeConfig, run_judge, vote_counts
from spar_jax.judge.templates import actor_messages
from spar_jax.judge.votes import Judgement

JUDGEMENTS_FILE = "judgements.jsonl"


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """``responses_file``: "" = sample ``samples_per_prompt`` responses per prompt from the actor engine (SPaR's
    mining temperature by default); else a JSONL of ``prompt``/``response`` lines (several per prompt allowed;
    responses to prompts outside the selected set are ignored and counted). ``prompts_source``: IFEval prompts, a
    local JSONL or a ``datasets`` name. ``split``: the ``datasets`` split of a named source. ``limit``: the first N
    prompts only (0 = all). ``samples_per_prompt``: actor responses sampled per prompt. ``actor_temperature``: actor
    sampling temperature. ``actor_top_p``: actor nucleus sampling top-p. ``actor_max_new_tokens``: actor token budget
    per response. ``judge``: how the judge is sampled. ``seed``: the sampling seed. ``label``: names the judge in
    summaries and plots."""

    prompts_source: str = ifeval.DEFAULT_SOURCE
    split: str = "train"
    limit: int = 0
    responses_file: str = ""
    samples_per_prompt: int = 2
    actor_temperature: float = 0.9
    actor_top_p: float = 0.9
    actor_max_new_tokens: int = 1024
    judge: JudgeConfig = JudgeConfig()
    seed: int = 0
    label: str = ""

    def __post_init__(self):
        for name in ("limit", "samples_per_prompt"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "samples_per_prompt" else 0):
                raise ValueError(
                    f"CalibrationConfig.{name} must be an int >= "
                    f"{1 if name == 'samples_per_prompt' else 0}, got {value!r}"
                )
        self.actor_sampling()

    def actor_sampling(self) -> gen.SamplingParams:
        return gen.SamplingParams(
            max_new_tokens=self.actor_max_new_tokens, temperature=self.actor_temperature, top_p=self.actor_top_p
        )


def calibration_metrics(truth: Sequence[bool], judgements: Sequence[Judgement]) -> dict[str, Any]:
    """Confusion matrix and rates of judge labels against the truth (True = the response follows all instructions).

    "No" is the positive class: tp = truth No & judged No, fp = truth Yes & judged No, fn = truth No & judged Yes,
    tn = truth Yes & judged Yes. Ties (no majority) are left out of the matrix and counted; ``accuracy`` is over
    decided items, ``accuracy_all`` counts ties as wrong. Single votes: ``vote_accuracy`` = valid votes equal to the
    truth / valid votes; ``vote_majority_agreement`` = valid votes equal to their item's majority / valid votes of
    items with a majority. Rates with an empty denominator are None.
    """
    if len(truth) != len(judgements):
        raise ValueError(f"calibration_metrics: {len(truth)} truths but {len(judgements)} judgements")
    cm = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    vote_right = valid = agree = with_majority = 0
    for follows, j in zip(truth, judgements):
        want = "yes" if follows else "no"
        if j.label is not None:  # judged No = predicted positive ("p"); right or wrong = "t" / "f"
            cm[("t" if j.label == want else "f") + ("n" if j.label == "yes" else "p")] += 1
            agree += j.votes.count(j.label)
            with_majority += j.n_valid
        vote_right += j.votes.count(want)
        valid += j.n_valid
    n, decided = len(truth), sum(cm.values())
    precision, recall = ratio(cm["tp"], cm["tp"] + cm["fp"]), ratio(cm["tp"], cm["tp"] + cm["fn"])
    f1 = (
        None
        if precision is None or recall is None or precision + recall == 0
        else (2 * precision * recall / (precision + recall))
    )
    counts = vote_counts(judgements)
    metrics = {
        "accuracy": ratio(cm["tp"] + cm["tn"], decided),
        "accuracy_all": ratio(cm["tp"] + cm["tn"], n),
        "no_precision": precision,
        "no_recall": recall,
        "no_f1": f1,
        "vote_accuracy": ratio(vote_right, valid),
        "vote_majority_agreement": ratio(agree, with_majority),
        "coverage": ratio(decided, n),
        "invalid_vote_rate": ratio(counts["invalid_votes"], counts["votes"]),
        "truth_no_rate": ratio(sum(not t for t in truth), n),
    }
    return {
        "metrics": metrics,
        "confusion": cm,
        "items": n,
        "truth_yes": sum(map(bool, truth)),
        "truth_no": n - sum(map(bool, truth)),
        **counts,
    }


def read_responses(path: str, prompts: Sequence[ifeval.IFEvalPrompt]) -> tuple[list[tuple[int, str]], int]:
    """(prompt index, response) pairs from a JSONL, in file order, and the number of lines ignored (unknown prompt)."""
    index = {p.prompt: i for i, p in enumerate(prompts)}
    out, ignored = [], 0
    if not os.path.isfile(path):
        raise ValueError(f"calibration responses file not found: {path}")
    for lineno, record in enumerate(files.read_jsonl(path, required=("prompt", "response")), 1):
        if not isinstance(record["prompt"], str) or not isinstance(record["response"], str):
            raise ValueError(f"{path}: record {lineno}: fields 'prompt' and 'response' must be strings")
        if record["prompt"] in index:
            out.append((index[record["prompt"]], record["response"]))
        else:
            ignored += 1
    if not out:
        raise ValueError(f"{path}: no response matches any of the {len(prompts)} selected IFEval prompts")
    return out, ignored


def sample_responses(
    engine: gen.Generator, prompts: Sequence[ifeval.IFEvalPrompt], settings: CalibrationConfig
) -> list[tuple[int, str]]:
    """``samples_per_prompt`` actor samples per prompt (one engine call), as (prompt index, response) pairs."""
    outputs = gen.generate(
        engine,
        [actor_messages(p.prompt) for p in prompts],
        n=settings.samples_per_prompt,
        sampling=settings.actor_sampling(),
        seed=gen.derive_seed(settings.seed, "calibration-actor"),
    )
    return [(i, c.text) for i, completions in enumerate(outputs) for c in completions]


def render_markdown(summary: dict[str, Any]) -> str:
    m, cm = summary["metrics"], summary["confusion"]
    judge = summary["settings"]["judge"]
    title = "Judge calibration on IFEval" + (f" — {summary['label']}" if summary["label"] else "")
    lines = [
        f"# {title}",
        "",
        f"{summary['items']} (prompt, response) items from {summary['prompts']} prompts; truth from the IFEval rule "
        f"checker (strict, all instructions): {summary['truth_yes']} Yes, {summary['truth_no']} No. Judge: SPaR "
        f"judgment prompt, k = {judge['k']} votes at temperature {judge['temperature']}, majority of valid votes, "
        f"ties dropped. Positive class: No.",
        "",
        *markdown_table(
            ["metric", "%"],
            [
                ["accuracy (decided items)", pct(m["accuracy"])],
                ["accuracy (ties count wrong)", pct(m["accuracy_all"])],
                ["precision of No", pct(m["no_precision"])],
                ["recall of No", pct(m["no_recall"])],
                ["F1 of No", pct(m["no_f1"])],
                ["single-vote accuracy", pct(m["vote_accuracy"])],
                ["single vote = k-vote majority", pct(m["vote_majority_agreement"])],
                ["coverage (items with a majority)", pct(m["coverage"])],
                ["invalid votes", pct(m["invalid_vote_rate"])],
            ],
        ),
        "",
        "## Confusion matrix (decided items)",
        "",
        *markdown_table(["truth \\ judge", "No", "Yes"], [["No", cm["tp"], cm["fn"]], ["Yes", cm["fp"], cm["tn"]]]),
        "",
        f"Votes: {summary['votes']}, invalid: {summary['invalid_votes']}; ties: {summary['ties']}.",
    ]
    return "\n".join(lines) + "\n"


def run(
    engine: gen.Generator,
    settings: CalibrationConfig,
    out_dir: str | os.PathLike,
    *,
    actor_engine: gen.Generator | None = None,
) -> dict[str, Any]:
    """Judges IFEval items with ``engine``; responses come from ``settings.responses_file`` or are sampled from
    ``actor_engine`` (default: ``engine``). Writes judgements.jsonl, summary.json and report.md; returns the summary."""
    prompts = ifeval.load_ifeval_prompts(settings.prompts_source, split=settings.split)
    prompts = prompts[: settings.limit] if settings.limit else prompts
    ignored = 0
    with gen.prompt_source([(p.key, p.prompt) for p in prompts], settings.prompts_source):
        if settings.responses_file:
            items, ignored = read_responses(settings.responses_file, prompts)
        else:
            items = sample_responses(actor_engine or engine, prompts, settings)
        judgements = run_judge(engine, [(prompts[i].prompt, r) for i, r in items], settings.judge, "calibration")
    truth = []
    for i, response in items:
        strict, _ = ifeval.check(prompts[i].instruction_id_list, prompts[i].kwargs, prompts[i].prompt, response)
        truth.append(all(strict))
    files.write_jsonl(
        os.path.join(out_dir, JUDGEMENTS_FILE),
        [
            {
                "key": prompts[i].key,
                "prompt": prompts[i].prompt,
                "response": r,
                "truth": "yes" if t else "no",
                "judgement": j.to_dict(),
            }
            for (i, r), t, j in zip(items, truth, judgements)
        ],
    )
    stats = calibration_metrics(truth, judgements)
    summary = base_summary(
        "judge_calibration",
        settings.label,
        stats.pop("metrics"),
        settings,
        prompts=len({i for i, _ in items}),
        responses_ignored=ignored,
        **stats,
    )
    write_summary(out_dir, summary, render_markdown(summary))
    return summary
