"""Benchmark: one full DPO step (policy forward + backward on chosen and rejected, precomputed reference log-probs,
sigmoid DPO + 0.1 × NLL of chosen, grad clipping, AdamW) on SmolLM2-135M-Instruct, fp32, CPU.

spar_jax's jitted step (``Trainer.train_step``) against the same step written in plain PyTorch on the HF model
(TRL's math: full logits, log-softmax, gathered and summed over response tokens), timed in the same process,
alternating, medians. Also measures a large fp32 matmul (jax and torch) as the machine's practical peak.

    python benchmarks/train_step.py [--shapes 2x256,4x512] [--repeats 5] [--remat none] [--unroll-layers]
                                    [--layouts packed,rows] [--out result.json]

Each pair is a prompt of length / 2 tokens shared by a chosen and a rejected response of length / 2 tokens (as in
DPO data). ``spar_jax`` is the trainer's default layout (``share_prompt``: one row per pair, the prompt computed
once); ``spar_jax_rows`` the two-row layout, the same computation as PyTorch's. Tokens/s counts the tokens of the
two full sequences, 2 × batch × length, for every contender (the same work done); achieved FLOP/s counts the
FLOPs each layout actually computes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from spar_jax.models import from_pretrained, resolve_checkpoint  # noqa: E402
from spar_jax.training.batches import TokenizedData, TruncationStats, collate  # noqa: E402
from spar_jax.training.trainer import TrainConfig, Trainer  # noqa: E402

from machine import cpu_info, matmul_peak, timed  # noqa: E402  (benchmarks/machine.py)

BETA, SFT_WEIGHT, LR = 0.1, 0.1, 1e-7


def synthetic_pairs(batch: int, length: int, vocab: int, seed: int = 0) -> TokenizedData:
    """``batch`` pairs of full-length sequences: the first half is the prompt (shared), the second half the response."""
    rng = np.random.default_rng(seed)
    ids, masks = [], []
    for _ in range(batch):
        prompt = rng.integers(3, vocab, size=length // 2)
        seqs = tuple(
            np.concatenate([prompt, rng.integers(3, vocab, size=length - length // 2)]).astype(np.int32)
            for _ in range(2)
        )
        ids.append(seqs)
        masks.append(tuple(np.arange(length) >= length // 2 for _ in range(2)))
    ref = rng.normal(-3.0 * length / 2, 10.0, size=(batch, 2)).astype(np.float32)
    return TokenizedData("dpo", ids, masks, TruncationStats(batch), ref_logps=ref)


def model_flops(cfg, rows: int, length: int) -> float:
    """Model FLOPs of one training step (3 × forward; remat recomputation not counted) on ``rows`` sequences of
    ``length`` tokens."""
    e, m, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    h, k, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    per_token_params = layers * (e * (h + 2 * k) * d + h * d * e + 3 * e * m) + e * cfg.vocab_size
    dense = 2 * per_token_params * rows * length
    attention = layers * rows * 2 * 2 * length * length * h * d  # QK^T and PV over the full square
    return 3.0 * (dense + attention)


class JaxStep:
    def __init__(self, model, batch: int, length: int, chunk: int, packed: bool):
        data = synthetic_pairs(batch, length, model.config.vocab_size)
        cfg = TrainConfig(
            kind="dpo",
            learning_rate=LR,
            schedule="constant",
            warmup_ratio=0.0,
            batch_size=batch,
            max_steps=10_000,
            max_length=length,
            max_prompt_length=length // 2,
            beta=BETA,
            sft_weight=SFT_WEIGHT,
            logits_chunk_size=chunk,
            progress_bar=False,
            group_by_length=False,
            share_prompt=packed,
        )
        self.trainer = Trainer(model, data, cfg)
        self.rows, self.length = (batch, int(data.packed_lengths().max())) if packed else (2 * batch, length)
        self.batch = collate(data, np.arange(batch), batch, self.length, packed=packed)

    def __call__(self) -> float:
        return self.trainer.train_step(self.batch)["loss"]


class TorchStep:
    def __init__(self, directory: str, data: TokenizedData):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.0)
        b = collate(data, np.arange(len(data)), len(data), max(len(s) for x in data.ids for s in x))
        self.ids = torch.from_numpy(b["input_ids"].astype(np.int64))
        self.attn = torch.from_numpy(b["attention_mask"].astype(np.int64))
        labels = b["input_ids"].astype(np.int64).copy()
        labels[~b["loss_mask"]] = -100
        self.labels = torch.from_numpy(labels)
        self.ref = torch.from_numpy(b["ref_logps"])

    def __call__(self) -> float:
        torch = self.torch
        logits = self.model(input_ids=self.ids, attention_mask=self.attn).logits[:, :-1]
        labels = self.labels[:, 1:].clone()
        mask = labels != -100
        labels[~mask] = 0
        token_logps = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2) * mask
        seq = token_logps.sum(-1).view(-1, 2)
        logits_d = (seq[:, 0] - seq[:, 1]) - (self.ref[:, 0] - self.ref[:, 1])
        dpo = -torch.nn.functional.logsigmoid(BETA * logits_d).mean()
        chosen = token_logps.view(-1, 2, token_logps.shape[-1])[:, 0]
        nll = -chosen.sum() / mask.view(-1, 2, mask.shape[-1])[:, 0].sum()
        loss = dpo + SFT_WEIGHT * nll
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def timed_with_faults(fn, faults: list[int]) -> float:
    """``timed``, appending the minor page faults the call took (first touches of freshly mapped memory: XLA:CPU
    maps each run's temporary buffer anew, and glibc malloc maps large tensors anew)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    elapsed = timed(fn)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return elapsed


LAYOUT_NAMES = {"packed": "spar_jax", "rows": "spar_jax_rows"}


def run_shape(
    directory: str, batch: int, length: int, repeats: int, remat: str, chunk: int, scan_layers: bool, layouts: list[str]
) -> dict:
    steps, flops = {}, {}
    for layout in layouts:
        model = from_pretrained(directory, dtype="float32", remat=remat, scan_layers=scan_layers)
        step = JaxStep(model, batch, length, chunk, packed=layout == "packed")
        steps[LAYOUT_NAMES[layout]] = step
        flops[LAYOUT_NAMES[layout]] = model_flops(model.config, step.rows, step.length)
    steps["pytorch"] = TorchStep(directory, next(iter(steps.values())).trainer.data)
    flops["pytorch"] = model_flops(model.config, 2 * batch, length)
    first_loss = {name: fn() for name, fn in steps.items()}  # warm-up (compile), and a loss check on identical weights
    for fn in steps.values():
        fn()
    times = {name: [] for name in steps}
    faults = {name: [] for name in steps}
    for _ in range(repeats):  # alternating
        for name, fn in steps.items():
            times[name].append(timed_with_faults(fn, faults[name]))
    tokens = 2 * batch * length
    med = {name: statistics.median(t) for name, t in times.items()}
    out = {
        "batch": batch,
        "length": length,
        "tokens_per_step": tokens,
        "remat": remat,
        "scan_layers": scan_layers,
        "logits_chunk": chunk,
        "first_loss": first_loss,
        "step_s": med,
        "min_step_s": {name: min(t) for name, t in times.items()},
        "minor_page_faults_per_step": {name: statistics.median(f) for name, f in faults.items()},
        "tokens_per_s": {name: tokens / m for name, m in med.items()},
        "computed_tflop_per_step": {name: f / 1e12 for name, f in flops.items()},
        "gflops": {name: flops[name] / m / 1e9 for name, m in med.items()},
        "all_step_s": times,
    }
    for name in steps:
        if name != "pytorch":
            out[f"speedup_vs_pytorch{name[len('spar_jax') :]}"] = med["pytorch"] / med[name]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--shapes", default="2x256,4x512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--remat", default="dots_no_batch", help="model remat policy (none, dots, dots_no_batch, full)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument(
        "--unroll-layers", action="store_true", help="model scan_layers=False (the layer loop unrolled)"
    )
    parser.add_argument("--layouts", default="packed,rows", help="our DPO layouts: packed (share_prompt), rows")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    if not layouts or any(x not in LAYOUT_NAMES for x in layouts):
        parser.error(f"--layouts: a comma-separated subset of {sorted(LAYOUT_NAMES)}, got {args.layouts!r}")
    directory = resolve_checkpoint(args.checkpoint)
    import torch

    result = {
        "device": str(jax.devices()[0]),
        **cpu_info(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "load_average_before": os.getloadavg(),
        "shapes": [],
    }
    result["matmul_peak"] = matmul_peak()
    for shape in args.shapes.split(","):
        b, t = (int(x) for x in shape.split("x"))
        r = run_shape(directory, b, t, args.repeats, args.remat, args.chunk, not args.unroll_layers, layouts)
        result["shapes"].append(r)
        print(json.dumps(r), flush=True)
    result["matmul_peak_after"] = matmul_peak()
    result["load_average_after"] = os.getloadavg()
    # The larger of the matmul rates measured before and after is the peak (the conservative choice).
    peak = max(*result["matmul_peak"].values(), *result["matmul_peak_after"].values())
    result["matmul_peak_gflops"] = peak
    for r in result["shapes"]:
        r["fraction_of_matmul_peak"] = {name: g / peak for name, g in r["gflops"].items()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from spar_jax.files import write_text

        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
