"""Benchmark: IFEval scoring of 541 prompts x 4 synthetic responses.

Responses per prompt: the prompt text itself, its upper-cased and lower-cased
copies, and the prompt wrapped as JSON in a code fence. Prints one JSON line
with the elapsed seconds (load excluded / included) and the counts.

    python benchmarks/ifeval_scoring.py [--prompts PATH]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spar_jax import ifeval  # noqa: E402

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared/data/ifeval/input_data.jsonl"
VARIANTS = {
    "prompt": lambda p: p,
    "upper": str.upper,
    "lower": str.lower,
    "json": lambda p: "```json\n" + json.dumps({"answer": p}) + "\n```",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    args = parser.parse_args()

    start = time.perf_counter()
    prompts = ifeval.load_ifeval_prompts(args.prompts)
    loaded = time.perf_counter()
    averages = {}
    for name, make in VARIANTS.items():
        report = ifeval.score_responses(prompts, [make(p.prompt) for p in prompts])
        averages[name] = round(report.metrics["average"], 4)
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "benchmark": "ifeval_scoring",
                "prompts": len(prompts),
                "responses": len(prompts) * len(VARIANTS),
                "instructions_checked": sum(len(p.instruction_id_list) for p in prompts) * len(VARIANTS),
                "seconds_total": round(end - start, 3),
                "seconds_scoring": round(end - loaded, 3),
                "average_by_variant": averages,
            }
        )
    )


if __name__ == "__main__":
    main()
