"""The ``answer`` stage: load a model, answer prompts with the engine, write ``answers.jsonl``."""

from __future__ import annotations

import os

from spar_jax import files, parallel
from spar_jax.config import RunConfig
from spar_jax.judge import generation as gen


def load_prompts(cfg: RunConfig) -> list[str]:
    if cfg.answer.prompts_file:
        return [r["prompt"] for r in files.read_jsonl(cfg.answer.prompts_file, required=("prompt",))]
    return list(cfg.answer.prompts)


def run(cfg: RunConfig, runtime) -> dict:
    del runtime  # the stage loads its own model and engine on the run's mesh
    from spar_jax.models import from_pretrained, load_tokenizer
    from spar_jax.sampling import Engine

    prompts = load_prompts(cfg)
    mesh = parallel.make_mesh(cfg.mesh.shape)
    model = from_pretrained(
        cfg.actor.path,
        dtype=cfg.actor.dtype,
        param_dtype=cfg.actor.param_dtype,
        mesh=mesh,
        rules=cfg.mesh.rules,
        attention_impl=cfg.actor.attention_impl,
    )
    tokenizer = load_tokenizer(cfg.actor.path)
    e = cfg.engine
    engine = Engine(
        model,
        tokenizer,
        mesh=mesh,
        batch_size=e.batch_size,
        batching=e.batching,
        dtype=e.dtype,
        max_length=e.max_length or None,
        truncate=e.truncate,
        progress=e.progress,
    )
    requests = [[{"role": "user", "content": p}] for p in prompts]
    source = cfg.answer.prompts_file or "config key answer.prompts"
    with gen.prompt_source([(str(i), p) for i, p in enumerate(prompts)], source), gen.naming_prompts(requests):
        results = engine.generate(requests, max_new_tokens=cfg.answer.max_new_tokens, seed=cfg.seed)
    records = [
        {"prompt": p, "response": r.completions[0].text, "finish_reason": r.completions[0].finish_reason}
        for p, r in zip(prompts, results)
    ]
    path = os.path.join(cfg.workdir, "answers.jsonl")
    files.write_jsonl(path, records)
    for rec in records:
        print(f"\n>>> {rec['prompt']}\n{rec['response']}")
    return {"answers": len(records), "path": path}
