"""``python -m spar_jax.plan --config=configs/llama3_70b.py --topology=v5p-128``: will this run fit, and how long?

Prints per-chip memory (parameters, optimizer state, gradients, activations under the remat policy, KV cache at the
configured sampling batch and lengths) for each phase of a SPaR iteration, flags what does not fit HBM or does not
divide the mesh, and estimates the time of every SPaR stage from FLOPs and HBM bandwidth. Everything is measured on
the real model built with ``jax.eval_shape`` and laid out by the run's own sharding rules on an abstract mesh of the
slice (see ``spar_jax/planning``); nothing is allocated, so it runs on a laptop.

``--compile`` also compiles the run's training steps and sampling program for the slice and prints XLA's memory
analysis per device next to the estimate (``spar_jax/planning/compiled.py``); ``--lengths_from=WORKDIR`` takes the
sampling stages' output lengths from a run's shards (``spar_jax/planning/lengths.py``).

The architecture comes from the config module's ``HF_CONFIG`` dict (the paper configs carry one), else from
``config.json`` at ``actor.path``. Config overrides work as for ``spar_jax.main`` (``--config.engine.batch_size=64``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml-collections config file (get_config()).")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, e.g. v5p-128, v4-64, v5e-32 (v5litepod-32), v6e-64.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "markdown"], "Output format.")
_MFU = flags.DEFINE_float("mfu", 0.4, "Achieved fraction of peak FLOP/s (prefill, training).")
_HBM = flags.DEFINE_float("hbm_efficiency", 0.7, "Achieved fraction of HBM bandwidth (decode).")
_INSTR = flags.DEFINE_integer("instruction_tokens", 256, "Tokens of a chat-templated instruction.")
_TEMPLATE = flags.DEFINE_integer("template_tokens", 320, "Tokens of the judge/refine template text.")
_FAIL = flags.DEFINE_float("fail_fraction", 0.5, "Share of prompts that become refinement trees.")
_LENGTHS = flags.DEFINE_string(
    "lengths_from",
    "",
    "A run's workdir: output lengths measured from its mining and "
    "search shards (default: stated exponential defaults).",
)
_COMPILE = flags.DEFINE_bool(
    "compile",
    False,
    "Also compile the training steps and the sampling program for the "
    "slice (TPU ahead-of-time with libtpu, else fake CPU devices) and print XLA's memory "
    "analysis next to the estimate.",
)
_ONLY = flags.DEFINE_list("compile_only", [], "With --compile: only these programs (dpo, sft, sampling).")


def model_config_for(config_path: str, config):
    """The ModelConfig of the actor: ``HF_CONFIG`` of the config module, else ``actor.path``'s config.json."""
    from spar_jax.models.config import config_from_hf_dict, load_model_config
    from spar_jax.models.tokenizer import resolve_checkpoint

    base, sep, _ = config_path.rpartition(":")  # "configs/x.py:variant" passes "variant" to get_config()
    config_path = base if sep and base.endswith(".py") else config_path
    spec = importlib.util.spec_from_file_location("_plan_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hf = getattr(module, "HF_CONFIG", None)
    if hf is not None:
        return config_from_hf_dict(dict(hf), source=f"{config_path}: HF_CONFIG")
    path = config.actor.path
    if path != "demo" and not path.endswith(".gguf") and not os.path.isdir(path):
        raise ValueError(f"{config_path}: no HF_CONFIG dict and actor.path {path!r} is not a checkpoint directory")
    return load_model_config(resolve_checkpoint(path))


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _TOPOLOGY.value:
        raise app.UsageError("usage: python -m spar_jax.plan --config=configs/NAME.py --topology=v5p-128")
    from spar_jax.planning import lengths
    from spar_jax.planning.estimate import Workload, make_plan
    from spar_jax.planning.hardware import parse_topology
    from spar_jax.planning.report import render

    try:
        topology = parse_topology(_TOPOLOGY.value)
        model_cfg = model_config_for(config_flags.get_config_filename(flags.FLAGS["config"]), _CONFIG.value)
        profile = lengths.from_run(_LENGTHS.value) if _LENGTHS.value else lengths.DEFAULTS
        workload = Workload(
            instruction_tokens=_INSTR.value,
            template_tokens=_TEMPLATE.value,
            fail_fraction=_FAIL.value,
            mfu=_MFU.value,
            hbm_efficiency=_HBM.value,
            lengths=profile,
        )
        plan = make_plan(_CONFIG.value, model_cfg, topology, workload)
        unknown = set(_ONLY.value) - {"dpo", "sft", "sampling"}
        if unknown:
            raise ValueError(f"--compile_only: unknown program(s) {sorted(unknown)}; choose from dpo, sft, sampling")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    markdown = _FORMAT.value == "markdown"
    print(render(plan, markdown=markdown), end="")
    if _COMPILE.value:
        _compiled(plan, model_cfg, topology, workload, markdown)


def _compiled(plan, model_cfg, topology, workload, markdown: bool) -> None:
    from spar_jax import config as config_lib
    from spar_jax.planning import compiled
    from spar_jax.planning.estimate import sampling_shapes

    if plan.mesh_shape is None:
        print("error: --compile: the mesh does not fit this slice (see the flags above)", file=sys.stderr)
        sys.exit(2)
    cfg = config_lib.parse(_CONFIG.value)
    try:
        devices, what = compiled.compile_devices(topology)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    stage = compiled.largest_sampling_stage(sampling_shapes(cfg, workload), cfg.engine.batch_size)
    programs = compiled.compile_programs(cfg, model_cfg, plan, devices, sampling_stage=stage, only=tuple(_ONLY.value))
    print("\n" + compiled.render(programs, what, markdown=markdown), end="")


def _compile_devices_from_argv(argv: list[str]) -> None:
    """Before JAX starts: with --compile, as many fake CPU devices as the slice has chips (XLA reads XLA_FLAGS once)."""
    if not any(a in ("--compile", "--compile=true", "--compile=True") for a in argv):
        return
    name = next((a.split("=", 1)[1] for a in argv if a.startswith("--topology=")), None)
    if name is None:
        return
    from spar_jax.planning.hardware import parse_topology

    try:
        chips = parse_topology(name).chips
    except ValueError:
        return  # reported by _main
    flag = f"--xla_force_host_platform_device_count={chips}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only: never grab an accelerator
    _compile_devices_from_argv(sys.argv[1:])
    app.run(_main)
