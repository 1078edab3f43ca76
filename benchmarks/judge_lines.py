"""Does a refiner check requirements or only guess? Teacher-forced accuracy of its requirement lines.

For each judgment example in a JSONL of chat records (the Stage-0 layout: user turn = the judge prompt, assistant
turn = "Checking each requirement ...\\n1. <requirement>: met" / ": not met: <evidence>" ... "Final Judgement: ..."),
the refiner reads the prompt and the target up to each line's colon and we compare its next-token probabilities of
" met" and " not". Prints JSON: per example class (target ends Yes / No), [lines right, lines]. A judge that always
says "not met" (or always "met") is right on one class only.

    python benchmarks/judge_lines.py --refiner WORKDIR/spar/iter_0/sft_refiner/hf \\
        --data WORKDIR/spar/iter_0/bootstrap/refiner_sft.jsonl --examples 40
"""

import argparse
import json
import re

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax.models.pretrained import from_pretrained
from spar_jax.models.tokenizer import chat_prompt_ids, load_tokenizer

LINE = re.compile(r"^\d+\. [^\n]*?: (met|not met)", re.M)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refiner", required=True, help="HF checkpoint directory of the refiner")
    ap.add_argument("--data", required=True, help="JSONL of judge examples (messages, assistant turn last)")
    ap.add_argument("--examples", type=int, default=40, help="judge examples to read")
    args = ap.parse_args()
    model, tok = from_pretrained(args.refiner), load_tokenizer(args.refiner)
    (met,), (neg,) = tok.encode(" met", add_special_tokens=False), tok.encode(" not", add_special_tokens=False)
    with open(args.data, encoding="utf-8") as f:
        records = [r for r in map(json.loads, f) if r["messages"][-1]["content"].startswith("Checking each")]
    records = records[: args.examples]
    forward = jax.jit(model.__call__)
    right = {"yes_examples": [0, 0], "no_examples": [0, 0]}
    for r in records:
        prompt, target = chat_prompt_ids(tok, r["messages"][:-1]), r["messages"][-1]["content"]
        kind = "yes_examples" if target.rstrip().endswith("Yes") else "no_examples"
        for m in LINE.finditer(target):
            ids = prompt + tok.encode(target[: m.start(1) - 1], add_special_tokens=False)
            padded = jnp.asarray([ids + [0] * (-len(ids) % 64)])  # one compiled shape per 64 tokens
            logits = np.asarray(forward(padded)[0, len(ids) - 1])
            right[kind][0] += int((logits[met] > logits[neg]) == (m.group(1) == "met"))
            right[kind][1] += 1
    print(json.dumps({"refiner": args.refiner, "data": args.data, "examples": len(records), "lines_right": right}))


if __name__ == "__main__":
    main()
