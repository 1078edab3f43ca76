"""Training: pure losses (``losses``), data to batches (``records``, ``batches``), the jitted step (``step``), the
trainer shell (``trainer``), checkpoints and metrics."""

from spar_jax.training.batches import Batches, DataPosition, TokenizedData, tokenize_dpo, tokenize_sft
from spar_jax.training.checkpoints import CheckpointStore
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
from spar_jax.training.metrics import MetricsLogger
from spar_jax.training.trainer import TrainConfig, Trainer, compute_reference_logps, load_data

__all__ = [
    "Batches",
    "CheckpointStore",
    "DPO_LOSS_TYPES",
    "DataPosition",
    "MetricsLogger",
    "TokenizedData",
    "TrainConfig",
    "Trainer",
    "chunked_token_logprobs",
    "compute_reference_logps",
    "dpo_loss",
    "load_data",
    "sequence_logps",
    "sequence_mean_logps",
    "sft_loss",
    "spar_actor_loss",
    "token_logprobs",
    "tokenize_dpo",
    "tokenize_sft",
]
