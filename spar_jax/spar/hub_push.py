"""Each iteration's models (and data) to the Hugging Face Hub (``hub.push_to``; off by default).

With ``hub.push_to = "org/run"`` the HF exports of iteration N go to the model repos ``org/run-actor`` and
``org/run-refiner`` (one commit each, "SPaR iteration N", tagged ``iter-N``), with a model card ``README.md``: the base
model, the iteration, the run's metrics table and its config. ``hub.push_data`` adds the iteration's DPO and refiner
SFT data (JSONL, Parquet, LLaMA-Factory ``dataset_info.json``) under ``iter_N/`` of the dataset repo ``org/run-data``.
``WORKDIR/hub_state.json`` records what was pushed, so a resumed loop pushes each iteration once. The token comes
from ``HF_TOKEN`` or the CLI login; only process 0 pushes.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from spar_jax import files, progress

if TYPE_CHECKING:  # the loop is driven by the run config; config.py builds on spar, not the reverse
    from spar_jax.config import RunConfig

STATE = "hub_state.json"


def model_card(cfg: RunConfig, role: str, it: int, rows: list[dict]) -> str:
    """README.md of a pushed checkpoint: front matter, what it is, the metrics table, the config."""
    from spar_jax.spar.report import render

    base = cfg.actor.path if role == "actor" else cfg.refiner.path or cfg.actor.path
    trained = "DPO on tree-search refinement pairs" if role == "actor" else "SFT on the five-pool judge/refine mixture"
    table = render(rows).split("\n", 2)[2]  # without the report's title
    front = ["---", "library_name: transformers", "tags:", "- spar", "- self-play", "- instruction-following"]
    if "/" in base and not os.path.exists(base):
        front.append(f"base_model: {base.partition('@')[0]}")
    front.append("---")
    return "\n".join(
        [
            *front,
            "",
            f"# SPaR {role}, iteration {it}",
            "",
            f"The {role} of a SPaR run (Self-Play with Tree-Search Refinement, Cheng et al. 2024) "
            f"after iteration {it} of {cfg.spar.iterations}, trained with spar_jax: {trained}.",
            "",
            f"- base model: `{base}`",
            f"- iteration: {it}",
            "",
            "## Metrics",
            "",
            table,
            "",
            "## Config",
            "",
            "```json",
            json.dumps(cfg.raw, indent=2, sort_keys=True, default=str),
            "```",
            "",
        ]
    )


def data_card(cfg: RunConfig, it: int) -> str:
    return "\n".join(
        [
            "---",
            "tags:",
            "- spar",
            "- dpo",
            "---",
            "",
            "# SPaR training data",
            "",
            f"Per iteration `iter_N/`: `dpo.jsonl` (actor DPO pairs) and `refiner_sft.jsonl` (refiner SFT "
            "mixture), their Parquet copies and a LLaMA-Factory `dataset_info.json`. Latest: iteration "
            f"{it}; base model `{cfg.actor.path}`.",
            "",
        ]
    )


def push_iteration(cfg: RunConfig, it: int, rows: list[dict], api: Any = None) -> list[str]:
    """Push iteration ``it`` unless done before; returns the repo ids pushed to now."""
    if not cfg.hub.push_to or not files.is_writer():
        return []
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    path = os.path.join(cfg.workdir, STATE)
    state = json.load(open(path)) if os.path.exists(path) else {}
    pushed = []
    message = f"SPaR iteration {it}"
    for role in ("actor", "refiner"):
        repo, key = f"{cfg.hub.push_to}-{role}", f"{role}:{it}"
        folder = os.path.join(cfg.workdir, f"iter_{it}", role, "hf")
        if key in state or not os.path.isdir(folder):  # no export: the role had no training data this iteration
            continue
        files.write_text(os.path.join(folder, "README.md"), model_card(cfg, role, it, rows))
        api.create_repo(repo, repo_type="model", private=cfg.hub.private, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="model", folder_path=folder, commit_message=message)
        api.create_tag(repo, tag=f"iter-{it}", repo_type="model", exist_ok=True)
        state[key] = repo
        pushed.append(repo)
        files.write_json(path, state)
    data = os.path.join(cfg.workdir, f"iter_{it}", "data")
    if cfg.hub.push_data and f"data:{it}" not in state and os.path.isdir(data):
        repo = f"{cfg.hub.push_to}-data"
        api.create_repo(repo, repo_type="dataset", private=cfg.hub.private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=data,
            path_in_repo=f"iter_{it}",
            commit_message=message,
            allow_patterns=["*.jsonl", "*.parquet", "dataset_info.json"],
        )
        api.upload_file(
            repo_id=repo,
            repo_type="dataset",
            path_or_fileobj=data_card(cfg, it).encode(),
            path_in_repo="README.md",
            commit_message=message,
        )
        state[f"data:{it}"] = repo
        pushed.append(repo)
        files.write_json(path, state)
    for repo in pushed:
        progress.line(f"iteration {it}: pushed to the hub repo {repo}")
    return pushed
