"""Entry point: ``python -m spar_jax.main --config=configs/NAME.py [--config.key=value ...] [--print_config]``.

``--config`` also takes a JSON or YAML file, e.g. a past run's ``WORKDIR/config.json`` to rerun it with exactly its
settings. ``--print_config`` prints every key with its value and description, then exits.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from absl import app, flags
from absl import logging as absl_logging

from spar_jax import config_io, progress

_CONFIG = config_io.define_config_flag(
    "config",
    "Path to a config: an ml-collections Python file (get_config()), or a JSON/YAML file such as a past "
    "run's WORKDIR/config.json. Override keys with --config.SECTION.KEY=VALUE; list them with --print_config.",
)
_PRINT = flags.DEFINE_bool("print_config", False, "Print every config key with its value and description, then exit.")


def _resolve_hub_data(cfg):
    """Initial SFT data named by a hub dataset id -> the local file of its snapshot (models resolve on load)."""
    import dataclasses

    from spar_jax.models import hub

    paths = {k: getattr(cfg.spar, k) for k in ("initial_sft_actor", "initial_sft_refiner")}
    resolved = {k: hub.data_file(v) for k, v in paths.items() if v and hub.is_hub_id(v)}
    return dataclasses.replace(cfg, spar=dataclasses.replace(cfg.spar, **resolved)) if resolved else cfg


def run(config, *, runtime=None) -> dict:
    """Run the configured stages; returns {stage: its summary}. ``config`` is a ConfigDict."""
    from spar_jax import bucket, fingerprint, mesh_check, parallel, stages, workdir_lock
    from spar_jax import config as config_lib
    from spar_jax.spar.runtime import Runtime
    from spar_jax.stages.common import stage_inputs

    cfg = config_lib.parse(config)
    bucket.check_workdir(cfg.workdir)
    parallel.maybe_initialize_distributed()
    import jax

    # After the distributed start-up (the device count initializes the backend), before any model is loaded.
    mesh_check.validate_against_devices(cfg, jax.device_count())
    cfg = _resolve_hub_data(cfg)
    os.makedirs(cfg.workdir, exist_ok=True)
    with workdir_lock.hold(cfg.workdir):  # one run per workdir: a second one stops here, naming the first
        runtime = runtime or Runtime(cfg)
        summary = {}
        for i, name in enumerate(cfg.stages):
            start = time.time()
            progress.line(f"stage {name} ({i + 1}/{len(cfg.stages)}): start")
            inputs = stage_inputs(cfg, name)  # None for the loop stages, which check each of their own steps
            if inputs is not None:
                fingerprint.decide(os.path.join(cfg.workdir, name), inputs)
            summary[name] = stages.REGISTRY[name].run(cfg, runtime)
            summary[name]["seconds"] = round(time.time() - start, 2)
            elapsed = progress.duration(time.time() - start)
            progress.line(f"stage {name} ({i + 1}/{len(cfg.stages)}): done in {elapsed}")
    return summary


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/NAME.py is required")
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every checkpoint at INFO; progress bars tell the story
        absl_logging.set_verbosity(absl_logging.WARNING)
    from spar_jax.files import SourceUnavailableError

    try:
        if _PRINT.value:
            from spar_jax import config as config_lib

            print(config_io.listing(config_lib.parse(_CONFIG.value).raw))
            return
        summary = run(_CONFIG.value)
    except (ValueError, FileNotFoundError, SourceUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if "spar" in summary:
        with open(summary["spar"]["report"]) as f:
            print(f.read())
    else:
        print(json.dumps(summary, indent=2, default=str))


def _parse_flags(argv):
    """absl's parser, with config-override errors (unknown key, bad type) reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        message = str(e).strip()
        while len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":  # a KeyError/AttributeError repr
            message = message[1:-1]
        message = message.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        if message.isidentifier():  # a bare key name: an override of a key the config does not have
            flag = next((a.split("=")[0] for a in argv if message in a.split("=")[0].split(".")[1:]), None)
            message = f"unknown config key {message!r}" + (f" in {flag}" if flag else "")
        from spar_jax.config import RETIRED_KEYS

        for flag in (a.split("=")[0] for a in argv if a.startswith("--config.")):
            if flag.removeprefix("--config.") in RETIRED_KEYS:
                key = flag.removeprefix("--config.")
                message = f"config key {key!r} was replaced by {RETIRED_KEYS[key]!r} (in {flag})"
        print(f"error: bad command line: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    logging.getLogger("jax").setLevel(logging.WARNING)
    app.run(_main, flags_parser=_parse_flags)
