"""Integration: the real SmolLM2-135M-Instruct converted from its GGUF file."""

import json
import os

import numpy as np
import pytest

from spar_jax.models import chat_prompt_ids, from_pretrained, load_tokenizer


@pytest.fixture(scope="module")
def demo(demo_dir):
    return from_pretrained(demo_dir), load_tokenizer(demo_dir)


def test_converted_config_matches_known_architecture(demo_dir):
    cfg = json.load(open(os.path.join(demo_dir, "config.json")))
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]) == (30, 576, 9)
    assert cfg["num_key_value_heads"] == 3 and cfg["tie_word_embeddings"] is True
    assert cfg["rope_parameters"]["rope_theta"] == 100000.0 and cfg["vocab_size"] == 49152


def test_tokenizer_and_chat_template(demo):
    _, tok = demo
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tok.eos_token_id == 2 and tok.pad_token_id == 2
    ids = chat_prompt_ids(tok, "Hi there")
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert ids.count(1) == 3  # system (the template's default), user, assistant
    assert tok.decode(tok("ChatML round trip: 2024!")["input_ids"]) == "ChatML round trip: 2024!"
    assert len(tok("2024")["input_ids"]) == 4  # SmolLM2's tokenizer splits digits one by one


def test_greedy_answer_names_paris(demo):
    import jax
    import jax.numpy as jnp

    model, tok = demo
    ids = chat_prompt_ids(tok, "What is the capital of France?")
    forward = jax.jit(lambda m, x: m(x))
    out = list(ids)
    # A fixed-length buffer keeps this to one compilation.
    buf = np.zeros((1, len(ids) + 12), np.int32)
    for _ in range(12):
        buf[0, : len(out)] = out
        mask = (np.arange(buf.shape[1]) < len(out)).astype(np.int32)[None]
        # right padding is harmless for the last real position under a causal mask
        logits = forward(model, jnp.asarray(buf))
        out.append(int(jnp.argmax(logits[0, len(out) - 1])))
        del mask
        if out[-1] == tok.eos_token_id:
            break
    answer = tok.decode(out[len(ids) :], skip_special_tokens=True)
    assert "Paris" in answer, answer
