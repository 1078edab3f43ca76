"""Render a Plan as plain text (terminal) or Markdown (README tables)."""

from __future__ import annotations

from spar_jax.planning.estimate import Plan

GIB = float(1 << 30)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(r):
        return "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))

    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def render(plan: Plan, *, markdown: bool = False) -> str:
    """The plan as text: slice and mesh, per-chip memory per phase, flags, stage times, assumptions."""
    t, c, m = plan.topology, plan.topology.chip, plan.model
    bullet = "- " if markdown else ""
    hosts = f"{t.hosts} host" + ("s" if t.hosts > 1 else "")
    lines = [
        f"{bullet}model: {m.model_type}, {plan.param_count / 1e9:.2f}B parameters, {m.num_hidden_layers} layers, width "
        f"{m.hidden_size}, {m.num_attention_heads} heads / {m.num_key_value_heads} kv heads, vocab {m.vocab_size}",
        f"{bullet}slice: {t.name} (gcloud --accelerator-type={t.accelerator_type}): {t.chips} chips on {hosts}; per "
        f"chip {c.hbm_bytes / GIB:.0f} GiB HBM, {c.hbm_bandwidth / 1e9:.0f} GB/s, "
        f"{c.peak_flops / 1e12:.0f} TFLOP/s bf16",
        f"{bullet}mesh (data, fsdp, tensor): "
        + (str(plan.mesh_shape) if plan.mesh_shape else "does not fit this slice"),
        "",
    ]
    blank = [""]
    for phase in plan.phases:
        rows = [[what, _gib(b)] for what, b in phase.items]
        rows.append([("**total**" if markdown else "total") + f" (of {c.hbm_bytes / GIB:.0f} GiB)", _gib(phase.total)])
        lines += [f"{phase.name}: GiB per chip" if not markdown else f"**{phase.name}** (GiB per chip)", ""]
        lines += _table(["", "GiB"], rows, markdown) + blank
    lines.append("flags:" if plan.flags else "flags: none (every phase fits; every sharded dimension divides)")
    lines += [f"- {f}" for f in plan.flags] + [""]
    if plan.stages:
        rows = [
            [
                s.name,
                f"{s.sequences:,}",
                str(s.prompt_len),
                str(s.new_tokens or "-"),
                f"{s.mean_new:.0f}" if s.utilization is not None else "-",
                f"{s.utilization:.2f}" if s.utilization is not None else "-",
                f"{s.decode_steps:,}" if s.utilization is not None else f"{s.batches:,}",
                _duration(s.seconds),
            ]
            for s in plan.stages
        ]
        blank_cols = [""] * 6
        rows.append(["one iteration", *blank_cols, _duration(plan.iteration_seconds)])
        total = _duration(plan.iteration_seconds * plan.iterations)
        rows.append([f"{plan.iterations} iterations", *blank_cols, total])
        lines += [f"time per SPaR stage (one iteration; engine.batching={plan.batching}):", ""]
        lines += (
            _table(
                [
                    "stage",
                    "sequences",
                    "prompt/len",
                    "max new",
                    "mean new",
                    "utilization",
                    "decode steps / train steps",
                    "time",
                ],
                rows,
                markdown,
            )
            + blank
        )
    w = plan.workload
    lines.append(
        f"assumptions: MFU {w.mfu:.0%} (prefill, training), HBM efficiency {w.hbm_efficiency:.0%} (decode), "
        f"instruction {w.instruction_tokens} tokens, template {w.template_tokens} tokens, "
        f"{w.fail_fraction:.0%} of prompts become trees, worst-case tree size; "
        f"{w.lengths.describe()}; utilization from those lengths on the engine's decode rows."
    )
    return "\n".join(lines) + "\n"
