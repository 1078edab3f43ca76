"""IFEval on a checkpoint: greedy answers with the chat template, scored by our offline IFEval checker.

    python -m spar_jax.main --config=configs/eval_ifeval.py --config.actor.path=PATH \
        [--config.eval.ifeval_source=path/to/input_data.jsonl] [--config.ifeval.responses_file=responses.jsonl]

The prompts come from the public hub dataset google/IFEval (``eval.ifeval_source``); pass a local JSONL offline. With
`ifeval.responses_file` set, an existing responses file (any system's) is scored and no model is loaded.
"""

from spar_jax.config import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/eval_ifeval"
    c.stages = ("ifeval",)
    c.actor.path = "demo"
    c.engine.batch_size = 32
    c.eval.ifeval_source = "google/IFEval"
    c.ifeval.max_new_tokens = 1024
    return c
