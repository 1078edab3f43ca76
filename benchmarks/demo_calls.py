"""The demo's own judging and refinement calls, continuous vs static batching, tokens/s and slot utilization in one run.

Usage: python benchmarks/demo_calls.py [--prompts 8] [--slots 32] [--repeats 2]

The SmolLM2 demo model (``from_pretrained("demo")``) with the demo config's sampling settings (configs/demo.py):
the actor answers ``--prompts`` generated constraint prompts once (setup, not timed; 96 new tokens); then two calls
are timed per mode, as mining and tree search make them: judging (``judge_messages`` of each answer, k = 3 votes at
temperature 0.7, 128 new tokens) and refinement (``refine_messages`` with the first vote as critique, 2 children at
temperature 0.7, 200 new tokens). One run per mode compiles, then the modes alternate ``repeats`` times (medians).
One JSON line per (call, mode), then one with the continuous / static ratios:

  utilization   generated_tokens / decode_slot_steps over the call
  tok_s         generated tokens per second of wall time (median)
  mean_length   mean generated tokens per sample; identical: samples equal in both modes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from spar_jax.judge.templates import actor_messages, judge_messages, refine_messages
    from spar_jax.models import from_pretrained, load_tokenizer
    from spar_jax.sampling import Engine
    from spar_jax.spar.constraint_prompts import generate_constraint_prompts

    model, tokenizer = from_pretrained("demo"), load_tokenizer("demo")
    engines = {
        mode: Engine(model, tokenizer, batch_size=args.slots, batching=mode, progress=False)
        for mode in ("continuous", "static")
    }
    instructions = [p["prompt"] for p in generate_constraint_prompts(args.prompts, seed=0)]
    answers = [
        r.completions[0].text
        for r in engines["static"].generate(
            [actor_messages(i) for i in instructions], max_new_tokens=96, temperature=0.9, top_p=0.9, seed=1
        )
    ]
    judge = [judge_messages(i, a) for i, a in zip(instructions, answers)]
    votes = [
        r.completions[0].text for r in engines["static"].generate(judge, max_new_tokens=128, temperature=0.7, seed=2)
    ]
    refine = [refine_messages(i, a, v) for i, a, v in zip(instructions, answers, votes)]
    calls = {
        "judge": (judge, dict(max_new_tokens=128, temperature=0.7, n=3, seed=3)),
        "refine": (refine, dict(max_new_tokens=200, temperature=0.7, n=2, seed=4)),
    }
    load_before = os.getloadavg()[0]
    summary = {}
    for call, (requests, kwargs) in calls.items():
        texts, times, counts = {}, {m: [] for m in engines}, {}
        for mode, engine in engines.items():  # compile
            texts[mode] = [[c.token_ids for c in r.completions] for r in engine.generate(requests, **kwargs)]
        for _ in range(args.repeats):
            for mode, engine in engines.items():
                before = dict(vars(engine.stats))
                t0 = time.perf_counter()
                engine.generate(requests, **kwargs)
                times[mode].append(time.perf_counter() - t0)
                counts[mode] = {
                    k: engine.stats.__dict__[k] - before[k] for k in ("generated_tokens", "decode_slot_steps")
                }
        same = sum(a == b for ra, rb in zip(texts["continuous"], texts["static"]) for a, b in zip(ra, rb))
        samples = sum(len(r) for r in texts["static"])
        for mode in engines:
            c, seconds = counts[mode], statistics.median(times[mode])
            row = {
                "call": call,
                "mode": mode,
                "requests": len(requests),
                "samples": samples,
                "slots": args.slots,
                "max_new": kwargs["max_new_tokens"],
                "mean_length": round(c["generated_tokens"] / samples, 1),
                "utilization": round(c["generated_tokens"] / c["decode_slot_steps"], 3),
                "tok_s": round(c["generated_tokens"] / seconds, 1),
                "seconds": round(seconds, 2),
                "seconds_all": [round(t, 2) for t in times[mode]],
                "identical": f"{same}/{samples}",
                "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            summary[(call, mode)] = row
            print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                f"{call}_tok_s_continuous_over_static": round(
                    summary[(call, "continuous")]["tok_s"] / summary[(call, "static")]["tok_s"], 2
                )
                for call in calls
            }
        )
    )


if __name__ == "__main__":
    main()
