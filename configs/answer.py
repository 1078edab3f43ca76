"""Answer a few instructions with a model (stage `answer`): a quick check that a checkpoint loads and speaks."""

from spar_jax.config import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/answer"
    c.stages = ("answer",)
    c.actor.path = "demo"
    c.engine.batch_size = 4
    c.answer.max_new_tokens = 96
    c.answer.prompts = (
        "What is the capital of France?",
        "Write a haiku about the sea. Use only lowercase letters.",
        "List three primary colors as a bulleted markdown list and nothing else.",
    )
    return c
