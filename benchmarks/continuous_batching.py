"""Slot utilization and tokens/s of continuous vs static batching on a mixed-length sampled workload, in one run.

Usage: python benchmarks/continuous_batching.py [--prompts 96] [--n 1] [--slots 16] [--max-new 256] [--mean 64]
                                                [--repeats 3] [--refill 1] [--hidden 256] [--layers 4]
                                                [--prompt-min 8] [--prompt-max 120]

The model is a random LLaMA-architecture checkpoint (tests/support/tiny_checkpoints.py; sizes from the flags, vocabulary
8192) whose next-token distribution is close to uniform, so at temperature 1 with ``V / mean`` stop ids a sample's
length is geometric with the given mean and capped at ``max_new`` (top-k 64 of a near-uniform distribution keeps
that): most answers are short, some run to the cap, as judgements and refinements mix. Both modes sample with the
same per-sample keys (``identical_samples`` counts equal samples); each mode runs once to compile, then
the modes alternate ``repeats`` times and medians are reported. One JSON line per mode, then one comparing them:

  utilization        generated_tokens / decode_slot_steps (decode rows x token positions run)
  utilization_model  the same from the samples' lengths alone (spar_jax/planning/slot_model.py: static batches in
                     the engine's batch order; continuous as greedy list scheduling in the engine's queue order,
                     the best any refill policy can do without knowing lengths in advance)
  tok_s              generated tokens per second of wall time (prefill, inserts and host work included)
  decode_slot_steps, generated_tokens, prefill_rows, compiles, seconds (median), load_avg_1min (before, after)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--mean", type=int, default=64, help="mean answer length (tokens) before the cap")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refill", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompt-min", type=int, default=8)
    ap.add_argument("--prompt-max", type=int, default=120, help="prompt lengths are uniform in [min, max)")
    args = ap.parse_args()

    from spar_jax.models import from_pretrained
    from spar_jax.sampling import Engine

    from tiny_checkpoints import write_checkpoint

    vocab = 8192
    directory = write_checkpoint(
        Path(tempfile.mkdtemp()) / "model",
        "llama",
        seed=0,
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )
    model = from_pretrained(directory)
    stops = list(range(vocab - vocab // args.mean, vocab))
    rng = np.random.default_rng(0)
    prompt_lengths = rng.integers(args.prompt_min, args.prompt_max, args.prompts)
    prompts = [rng.integers(3, vocab - len(stops), int(n)).tolist() for n in prompt_lengths]
    kwargs = dict(max_new_tokens=args.max_new, temperature=1.0, top_k=64, n=args.n, seed=0)
    engines = {
        mode: Engine(
            model,
            None,
            batch_size=args.slots,
            batching=mode,
            refill=args.refill,
            eos_token_ids=stops,
            max_length=1024,
            progress=False,
        )
        for mode in ("continuous", "static")
    }
    load_before = os.getloadavg()[0]
    tokens = {}
    for mode, engine in engines.items():  # compile
        tokens[mode] = [[c.token_ids for c in r.completions] for r in engine.generate(prompts, **kwargs)]
    same = sum(a == b for ra, rb in zip(tokens["continuous"], tokens["static"]) for a, b in zip(ra, rb))
    times: dict[str, list[float]] = {mode: [] for mode in engines}
    counters = {}
    for _ in range(args.repeats):
        for mode, engine in engines.items():
            before = dict(vars(engine.stats))
            t0 = time.perf_counter()
            engine.generate(prompts, **kwargs)
            times[mode].append(time.perf_counter() - t0)
            counters[mode] = {
                k: engine.stats.__dict__[k] - before[k]
                for k in ("generated_tokens", "decode_slot_steps", "prefill_rows")
            }
    lengths = [len(t) for sample in tokens["static"] for t in sample]
    modelled = _modelled(engines, prompts, tokens["static"], args)
    out = {}
    for mode, engine in engines.items():
        c = counters[mode]
        seconds = statistics.median(times[mode])
        out[mode] = {
            "mode": mode,
            "slots": args.slots,
            "samples": args.prompts * args.n,
            "max_new": args.max_new,
            "mean_length": round(float(np.mean(lengths)), 1),
            "median_length": float(np.median(lengths)),
            "utilization": round(c["generated_tokens"] / c["decode_slot_steps"], 3),
            "utilization_model": modelled[mode],
            "tok_s": round(c["generated_tokens"] / seconds, 1),
            "seconds": round(seconds, 3),
            "seconds_all": [round(t, 3) for t in times[mode]],
            **c,
            "compiles": engine.compiles,
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        print(json.dumps(out[mode]))
    print(
        json.dumps(
            {
                "utilization_continuous_over_static": round(
                    out["continuous"]["utilization"] / out["static"]["utilization"], 2
                ),
                "tok_s_continuous_over_static": round(out["continuous"]["tok_s"] / out["static"]["tok_s"], 2),
                "identical_samples": f"{same}/{len(lengths)}",
            }
        )
    )


def _modelled(engines, prompts, samples, args) -> dict[str, float]:
    """Utilization of each mode predicted from the samples' lengths (``slot_model``), in the engine's own order."""
    from spar_jax.planning import slot_model
    from spar_jax.sampling import buckets

    lengths = {i: [len(t) for t in sample] for i, sample in enumerate(samples)}
    engine = engines["continuous"]
    queue = buckets.plan_batches([len(p) for p in prompts], length_buckets=engine.length_buckets, max_rows=len(prompts))
    order = [x for i in (i for b in queue for i in b.indices) for x in lengths[i]]
    out = {"continuous": slot_model.continuous_slot_steps(order, args.slots)}
    rows = max(args.slots // args.n, 1)
    static = 0
    for b in buckets.plan_batches([len(p) for p in prompts], length_buckets=engine.length_buckets, max_rows=rows):
        static += slot_model.static_slot_steps([x for i in b.indices for x in lengths[i]], b.rows, args.n)
    out["static"] = static
    flat = [x for v in lengths.values() for x in v]
    return {mode: round(slot_model.utilization(flat, steps), 3) for mode, steps in out.items()}


if __name__ == "__main__":
    main()
