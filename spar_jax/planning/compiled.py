"""Plans from compiled programs: the run's training steps and sampling program compiled for the slice, with XLA's
own memory analysis per device next to the planner's analytic estimate.

Devices: with ``libtpu`` installed (``pip install "jax[tpu]"``; no TPU needed) the programs are compiled ahead of
time for the slice's real TPU topology (``jax.experimental.topologies``, e.g. "v5p:2x2x1" for v5p-8), so the
numbers are the TPU compiler's buffer assignment. Without it they are compiled for as many fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which ``python -m spar_jax.plan --compile`` sets): the same
SPMD partitioning and shapes, but XLA:CPU's buffer assignment and fusion decisions, so temporaries differ from a TPU
compile. Nothing is allocated either way: every argument is a ``jax.ShapeDtypeStruct`` with its ``NamedSharding``.

Programs (``lowering.py``): one optimizer step of actor DPO and of refiner SFT exactly as ``Trainer`` jits it, and
the static sampling program (prefill + KV-cache decode loop) for the sampling stage with the largest cache, in
``engine.dtype``. Per device: arguments + outputs + temporaries - aliased (donated) bytes.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import jax
import numpy as np
from jax.sharding import Mesh

from spar_jax.parallel import MESH_AXES
from spar_jax.planning import lowering
from spar_jax.planning.hardware import Topology

# Canonical slice shapes (chips) of the TPU generations: 3-D tori for v4/v5p, 2-D for v5e/v6e.
_SHAPES_3D = {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    256: "4x8x8",
    512: "8x8x8",
    1024: "8x8x16",
    2048: "8x16x16",
}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


def tpu_topology_name(topology: Topology) -> str | None:
    """The ``jax.experimental.topologies`` name of the slice (e.g. "v5p:2x2x1"), None when it has no standard
    shape."""
    gen = topology.chip.generation
    shape = (_SHAPES_3D if gen in ("v4", "v5p") else _SHAPES_2D).get(topology.chips)
    return f"{gen}:{shape}" if shape else None


def compile_devices(topology: Topology) -> tuple[list, str]:
    """(devices, description): the slice's TPU devices for ahead-of-time compilation when libtpu is installed and
    knows the topology, else the first ``topology.chips`` CPU devices. Raises ValueError when there are too few."""
    name = tpu_topology_name(topology)
    why = "libtpu is not installed"
    if name and importlib.util.find_spec("libtpu") is not None:
        from jax.experimental import topologies

        try:
            devices = list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
        except Exception as e:  # an unknown topology or a libtpu that cannot describe it: fall back to CPU
            devices, why = [], f"libtpu could not describe {name}: {str(e).splitlines()[0]}"
        if len(devices) == topology.chips:
            return devices, f"{devices[0].device_kind} x {len(devices)} (ahead-of-time for {name})"
        if devices:
            why = f"libtpu describes {name} as {len(devices)} devices, not {topology.chips} chips"
    cpu = jax.devices("cpu")
    if len(cpu) < topology.chips:
        raise ValueError(
            f"--compile: {topology.name} has {topology.chips} chips but this process has {len(cpu)} CPU "
            f"devices and {why}; set XLA_FLAGS=--xla_force_host_platform_device_count={topology.chips} "
            "before JAX starts (python -m spar_jax.plan does) or install libtpu (pip install 'jax[tpu]')"
        )
    return cpu[: topology.chips], f"{topology.chips} fake CPU devices ({why}: XLA:CPU buffer assignment)"


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    """XLA's memory analysis of one compiled program, bytes per device, and the planner's estimate for it."""

    name: str
    arguments: int
    outputs: int
    temp: int
    aliased: int
    analytic: int

    @property
    def total(self) -> int:
        return self.arguments + self.outputs + self.temp - self.aliased


def _measure(name: str, lowered, analytic: int, options: dict | None) -> CompiledProgram:
    m = lowered.compile(options).memory_analysis()
    return CompiledProgram(
        name, m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes, m.alias_size_in_bytes, analytic
    )


def compile_programs(
    cfg, model_cfg, plan, devices, *, sampling_stage: dict, only: tuple[str, ...] = (), options: dict | None = None
) -> list[CompiledProgram]:
    """Compile the run's programs (``cfg`` parsed by ``spar_jax.config.parse``) on ``devices`` laid out as the
    plan's mesh. ``sampling_stage``: the planner's shape dict of the sampling stage to compile (its ``prompt``,
    ``new``, ``n``). ``only``: names to compile ("dpo", "sft", "sampling"; default all). ``options``: XLA compiler
    options (tests lower the CPU optimization level)."""
    mesh = Mesh(np.asarray(devices).reshape(plan.mesh_shape), MESH_AXES)
    rules = cfg.mesh.rules
    phases = {p.name: p for p in plan.phases}
    out = []
    for key, kind, spec, settings, phase in (
        ("dpo", "dpo", cfg.actor, cfg.dpo, "train actor (DPO)"),
        ("sft", "sft", cfg.refiner, cfg.sft, "train refiner (SFT)"),
    ):
        if only and key not in only:
            continue
        packed = kind == "dpo" and settings["share_prompt"]
        lowered = lowering.lower_train_step(
            model_cfg,
            mesh,
            rules,
            kind=kind,
            examples=settings["batch_size"],
            length=settings["max_length"] * (2 if packed else 1),
            accum=settings["grad_accum_steps"],
            dtype=spec.dtype,
            param_dtype=spec.param_dtype,
            remat=spec.remat,
            chunk_size=settings["logits_chunk_size"],
            share_prompt=settings["share_prompt"],
        )
        out.append(_measure(f"{phase} step", lowered, phases[phase].total, options))
    if not only or "sampling" in only:
        st = sampling_stage
        dtype = "bfloat16" if cfg.engine.dtype == "auto" else cfg.engine.dtype
        prompts = max(cfg.engine.batch_size // st["n"], 1)
        prompt = max(16, 1 << max(st["prompt"] - 1, 0).bit_length())
        new = 1 << max(st["new"] - 1, 0).bit_length()
        lowered = lowering.lower_decode(
            model_cfg, mesh, rules, prompts=prompts, prompt_len=prompt, n=st["n"], max_new=new, dtype=dtype
        )
        items = dict(phases["sampling"].items)
        other = next(b for what, b in items.items() if what.startswith("params: refiner engine"))
        out.append(
            _measure(
                f"sampling: {st['name']} ({prompts * st['n']} rows, prefill + decode)",
                lowered,
                phases["sampling"].total - other,
                options,
            )
        )  # one engine per program
    return out


def render(programs: list[CompiledProgram], devices: str, markdown: bool = False) -> str:
    """The compiled programs' memory per device beside the analytic estimate."""
    big = any(max(p.total, p.analytic) >= 1 << 30 for p in programs)
    unit, scale = ("GiB", float(1 << 30)) if big else ("MiB", float(1 << 20))
    header = ["program", "arguments", "outputs", "temporaries", "aliased", "total", "analytic"]
    rows = [
        [p.name, *(f"{x / scale:.2f}" for x in (p.arguments, p.outputs, p.temp, p.aliased, p.total, p.analytic))]
        for p in programs
    ]
    lines = [f"compiled programs on {devices}: {unit} per device", ""]
    if markdown:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        lines += [
            "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
            for r in [header, ["-" * w for w in widths], *rows]
        ]
    lines += [
        "",
        "analytic: the planner's phase total for the same program (sampling: one engine's weights); "
        "the compiled programs run the model's own attention code.",
    ]
    return "\n".join(lines) + "\n"


def largest_sampling_stage(shapes: list[dict], batch_size: int) -> dict:
    """The sampling stage whose engine batch needs the largest KV cache (rows x (prompt + new))."""
    return max(shapes, key=lambda st: max(batch_size // st["n"], 1) * st["n"] * (st["prompt"] + st["new"]))
