"""Models: the Flax NNX decoder, HF/GGUF checkpoint I/O, tokenizers."""

from spar_jax.models.config import ModelConfig, RopeConfig, config_from_hf_dict, load_model_config
from spar_jax.models.pretrained import abstract_model, from_pretrained, save_pretrained
from spar_jax.models.tokenizer import as_messages, chat_prompt_ids, load_tokenizer, resolve_checkpoint
from spar_jax.models.transformer import KVCache, Transformer

__all__ = [
    "KVCache",
    "ModelConfig",
    "RopeConfig",
    "Transformer",
    "abstract_model",
    "as_messages",
    "chat_prompt_ids",
    "config_from_hf_dict",
    "from_pretrained",
    "load_model_config",
    "load_tokenizer",
    "resolve_checkpoint",
    "save_pretrained",
]
