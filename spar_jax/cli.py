"""The ``spar-jax`` console script: ``spar-jax run|plan|eval ARGS`` runs the module entry point with ARGS.

spar-jax run  --config=configs/demo.py [--config.key=value ...] [--print_config]   # python -m spar_jax.main
spar-jax plan --config=configs/llama3_70b.py --topology=v5p-128                      # python -m spar_jax.plan
spar-jax eval --prompts=input_data.jsonl --responses=responses.jsonl --out=out/     # python -m spar_jax.ifeval
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {"run": "spar_jax.main", "plan": "spar_jax.plan", "eval": "spar_jax.ifeval"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        names = "|".join(COMMANDS)
        print(f"usage: spar-jax {names} [ARGS]   (spar-jax COMMAND --help lists a command's flags)", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, rest = argv[0], argv[1:]
    sys.argv = [f"spar-jax {command}", *rest]
    runpy.run_module(COMMANDS[command], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
