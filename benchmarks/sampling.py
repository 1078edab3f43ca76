"""Greedy generation throughput: spar_jax's Engine vs transformers' PyTorch ``generate``, in one process run.

Usage: python benchmarks/sampling.py [--repeats 5] [--configs 1x64x64,8x128x64,32x128x32] [--checkpoint demo]

SmolLM2-135M-Instruct (the demo model), fp32, greedy, the same random prompts for both, every row generating
exactly N tokens (no EOS), all CPU cores for both (XLA's default; torch set to os.cpu_count()). Runs alternate
between the two engines and the medians are reported. One JSON line per configuration (batch, prompt, new):

  ours_tok_s / hf_tok_s / ratio   generated tokens per second of wall time (prefill included) and ours / HF
  ratio_paired_median / _range    the same ratio per alternation (HF's run over ours just before it): median, range
  ours_step_ms                    our decode step: (time for N tokens - time for 1 token) / (N - 1)
  roofline_step_ms                bytes a decode step must read (all weights + the K/V of the average context)
                                  divided by the copy bandwidth measured in this run (bytes read + written per s,
                                  so this is an optimistic bound: a read-only stream rarely beats a copy's total)
  compiles                        our compilations over the whole configuration (warm-up + every timed run)
  load_avg_1min                   the machine's load before / after (other tenants distort absolute numbers)
  cpu, simd, matmul_gflops        the CPU, its widest SIMD, and a 2048^3 fp32 matmul's GFLOP/s in jax and torch in
                                  this run (the prefill is matmul-bound: batch 32's ratio follows these rates)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from machine import cpu_info, matmul_peak  # noqa: E402  (benchmarks/machine.py)


def copy_bandwidth(megabytes: int = 256, repeats: int = 9) -> float:
    """Bytes read + written per second copying a large float32 buffer into a preallocated one (the better of numpy
    and torch; a fresh XLA output buffer would mostly time page faults)."""
    import torch

    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    t_src, t_dst = torch.from_numpy(src), torch.from_numpy(dst)
    best = 0.0
    for copy in (lambda: np.copyto(dst, src), lambda: t_dst.copy_(t_src)):
        copy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            copy()
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * src.nbytes / statistics.median(times))
    return best


def step_bytes(cfg, batch: int, context: float) -> float:
    """Bytes one decode step must read: every parameter once plus K and V of ``context`` tokens per row."""
    kv = 2 * cfg.num_hidden_layers * batch * context * cfg.num_key_value_heads * cfg.head_dim * 4
    return cfg.num_params() * 4 + kv


def run_config(engine, hf, tokenizer, batch, prompt, new, repeats, seed):
    import torch

    rng = np.random.default_rng(seed)
    prompts = rng.integers(100, engine.model.config.vocab_size, size=(batch, prompt)).tolist()
    t_ids = torch.tensor(prompts)
    t_mask = torch.ones_like(t_ids)

    def ours(n_new):
        t0 = time.perf_counter()
        results = engine.generate(prompts, max_new_tokens=n_new)
        elapsed = time.perf_counter() - t0
        assert all(len(r.completions[0].token_ids) == n_new for r in results)
        return elapsed, [r.completions[0].token_ids for r in results]

    def theirs():
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                input_ids=t_ids,
                attention_mask=t_mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - t0
        assert out.shape == (batch, prompt + new)
        return elapsed, out[:, prompt:].tolist()

    ours(new), ours(1), theirs()  # warm-up (compiles)
    t_ours, t_one, t_hf = [], [], []
    agree = 0
    for _ in range(repeats):
        a, our_tokens = ours(new)
        b, hf_tokens = theirs()
        c, _ = ours(1)
        t_ours.append(a), t_hf.append(b), t_one.append(c)
        agree = sum(x == y for x, y in zip(our_tokens, hf_tokens))
    m_ours, m_hf, m_one = map(statistics.median, (t_ours, t_hf, t_one))
    step = (m_ours - m_one) / max(new - 1, 1)
    # Each HF run over the run of ours just before it: slow drifts of the shared machine cancel within a pair.
    pairs = [h / o for h, o in zip(t_hf, t_ours)]
    return {
        "ours_tok_s": batch * new / m_ours,
        "hf_tok_s": batch * new / m_hf,
        "ratio": m_hf / m_ours,
        "ratio_paired_median": statistics.median(pairs),
        "ratio_paired_range": [round(min(pairs), 3), round(max(pairs), 3)],
        "ours_s": m_ours,
        "hf_s": m_hf,
        "ours_prefill_s": m_one,
        "ours_step_ms": 1e3 * step,
        "rows_identical_to_hf": agree,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--configs", default="1x64x64,8x128x64,32x128x32", help="batch x prompt x new, comma list")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    import transformers

    from spar_jax.models import from_pretrained, load_tokenizer, resolve_checkpoint
    from spar_jax.sampling import Engine

    torch.set_num_threads(os.cpu_count())
    directory = resolve_checkpoint(args.checkpoint)
    model = from_pretrained(directory, dtype="float32")
    tokenizer = load_tokenizer(directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    for spec in args.configs.split(","):
        batch, prompt, new = (int(v) for v in spec.lower().split("x"))
        engine = Engine(model, tokenizer, batch_size=batch, eos_token_ids=(), progress=False)
        load_before = os.getloadavg()[0]
        result = run_config(engine, hf, tokenizer, batch, prompt, new, args.repeats, args.seed)
        bandwidth = copy_bandwidth()
        matmul = matmul_peak()
        roofline = step_bytes(model.config, batch, prompt + new / 2) / bandwidth
        line = {
            "batch": batch,
            "prompt": prompt,
            "new": new,
            "repeats": args.repeats,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
            "roofline_step_ms": round(1e3 * roofline, 3),
            "step_vs_roofline": round(result["ours_step_ms"] / (1e3 * roofline), 3),
            "copy_rw_gb_s": round(bandwidth / 1e9, 2),
            "compiles": engine.compiles,
            "threads": os.cpu_count(),
            **cpu_info(),
            "matmul_gflops": {k.removesuffix("_gflops"): round(v, 1) for k, v in matmul.items()},
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # the machine is shared
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
