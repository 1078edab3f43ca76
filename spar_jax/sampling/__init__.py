"""Generation: jitted prefill + while-loop decode with a KV cache, behind the host ``Engine`` API."""

from spar_jax.sampling.engine import Completion, Engine, EngineStats, PromptTooLongError, Result
from spar_jax.sampling.loop import DecodeLoop, LoopShape, Sampling, decode
from spar_jax.sampling.strategies import greedy, sample, token_logprobs

__all__ = [
    "Completion", "DecodeLoop", "Engine", "EngineStats", "LoopShape", "PromptTooLongError", "Result", "Sampling",
    "decode", "greedy", "sample", "token_logprobs",
]  # fmt: skip
