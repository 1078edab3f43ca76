"""Training: pure losses (``losses``); the trainer lives in its own modules."""

from spar_jax.training.losses import (
    DPO_LOSS_TYPES,
    chunked_token_logprobs,
    dpo_loss,
    sequence_logps,
    sequence_mean_logps,
    sft_loss,
    spar_actor_loss,
    token_logprobs,
)

__all__ = [
    "DPO_LOSS_TYPES",
    "chunked_token_logprobs",
    "dpo_loss",
    "sequence_logps",
    "sequence_mean_logps",
    "sft_loss",
    "spar_actor_loss",
    "token_logprobs",
]
