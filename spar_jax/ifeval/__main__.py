"""python -m spar_jax.ifeval --prompts P --responses R --out DIR

Scores an IFEval responses JSONL (``prompt`` + ``response`` per line), writes
summary.json, results.jsonl and report.md into DIR and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import sys

from .data import DEFAULT_SOURCE, load_ifeval_prompts, load_responses
from .report import write_report
from .scoring import score_responses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spar_jax.ifeval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--prompts",
        default=DEFAULT_SOURCE,
        help=f"IFEval prompts: local JSONL path or datasets name (default {DEFAULT_SOURCE})",
    )
    parser.add_argument("--split", default="train", help="split when --prompts is a datasets name")
    parser.add_argument("--responses", required=True, help="JSONL with 'prompt' and 'response' fields")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    try:
        prompts = load_ifeval_prompts(args.prompts, split=args.split)
        report = score_responses(prompts, load_responses(args.responses))
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = {"prompts": str(args.prompts), "responses": str(args.responses)}
    paths = write_report(report, args.out, extra=extra)
    print(
        json.dumps(
            {
                **extra,
                "metrics": report.metrics,
                "num_prompts": report.num_prompts,
                "num_instructions": report.num_instructions,
                "out": str(paths["summary"].parent),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
