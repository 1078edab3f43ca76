"""Greedy generation equals transformers' PyTorch ``generate`` (every architecture, mixed prompt lengths in one
batch), equals itself on a (2, 2, 2) mesh of 8 fake CPU devices, and the demo model answers a real question."""

import jax
import numpy as np
import pytest
import torch
import transformers

from spar_jax.models import cpu_layout, from_pretrained, load_tokenizer
from spar_jax.parallel import make_mesh
from spar_jax.sampling import Engine

from tiny_checkpoints import ARCHS, write_checkpoint

NEW = 10
EOS = 2


def _prompts(seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 256, n).tolist() for n in (3, 11, 7)]


def _hf_greedy(directory, prompts):
    """Left-padded batched HF generate; per row the generated tokens up to and including the first EOS."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=EOS, pad_token_id=0
        )[:, width:].tolist()
    return [row[: row.index(EOS) + 1] if EOS in row else row for row in out]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_greedy_matches_transformers_generate(arch, tmp_path, monkeypatch):
    """Static batches (checked shape by shape), then continuous batching with fewer slots than prompts."""
    directory = write_checkpoint(tmp_path / arch, arch, seed=7)
    prompts = _prompts(len(arch))
    model = from_pretrained(directory)
    ref = _hf_greedy(directory, prompts)
    # The whole batch prefilled at once, and in chunks of 2 rows (32 tokens of the 16-token bucket; 3 prompts fill
    # 4 rows); then with decode_attention's loops, which the engine uses from 16 rows on, at these 4 rows.
    for chunk, loop_rows in ((0, 16), (32, 16), (0, 1)):
        monkeypatch.setattr(cpu_layout, "DECODE_LOOP_MIN_ROWS", loop_rows)
        engine = Engine(model, None, batch_size=4, prefill_chunk=chunk, batching="static", progress=False)
        ours = [r.completions[0] for r in engine.generate(prompts, max_new_tokens=NEW)]
        assert engine.loop.shapes == [(4, 16, 4, 16)]
        assert [c.token_ids for c in ours] == ref, f"prefill_chunk={chunk}, decode loops from {loop_rows} rows"
        assert [c.finish_reason for c in ours] == ["stop" if row[-1] == EOS else "length" for row in ref]
    for chunk, loop_rows in ((0, 16), (0, 1)):
        monkeypatch.setattr(cpu_layout, "DECODE_LOOP_MIN_ROWS", loop_rows)
        engine = Engine(model, None, batch_size=2, prefill_chunk=chunk, batching="continuous", progress=False)
        ours = [r.completions[0] for r in engine.generate(prompts, max_new_tokens=NEW)]
        assert [c.token_ids for c in ours] == ref, f"continuous, decode loops from {loop_rows} rows"
        assert [c.finish_reason for c in ours] == ["stop" if row[-1] == EOS else "length" for row in ref]


def test_mesh_2x2x2_equals_single_device(tmp_path):
    assert len(jax.devices()) == 8
    directory = write_checkpoint(tmp_path / "m", "llama", seed=8)
    prompts = _prompts(1) + _prompts(2)
    kwargs = dict(max_new_tokens=NEW, n=2)
    model = from_pretrained(directory)
    single = Engine(model, None, batch_size=8, batching="static", progress=False)
    mesh = make_mesh((2, 2, 2))
    sharded_model = from_pretrained(directory, mesh=mesh)
    sharded = Engine(sharded_model, None, batch_size=8, batching="static", progress=False)
    continuous = Engine(sharded_model, None, batch_size=4, batching="continuous", progress=False)
    assert sharded.row_multiple == 4
    assert single.loop.prefill_chunk == 1024 and sharded.loop.prefill_chunk == 0  # "auto": no chunks when sharded
    with pytest.raises(ValueError, match="needs a batch axis that is not sharded"):
        Engine(sharded_model, None, prefill_chunk=64, progress=False)
    assert len(sharded_model.layers.q[...].sharding.device_set) == 8
    # An unsharded model handed to Engine(mesh=...) is placed on the mesh (the caller's model stays put).
    placed = Engine(model, None, batch_size=8, mesh=mesh, progress=False)
    assert len(placed.model.layers.q[...].sharding.device_set) == 8 and model.shard is None
    assert len(model.layers.q[...].sharding.device_set) == 1 and len(single.loop.state["embed"][...].devices()) == 1
    greedy = placed.generate(prompts, **kwargs)
    assert [[c.token_ids for c in r.completions] for r in greedy] == [
        [c.token_ids for c in r.completions] for r in single.generate(prompts, **kwargs)
    ]
    for temperature in (0.0, 0.8):
        a = single.generate(prompts, temperature=temperature, seed=3, **kwargs)
        for other in (sharded, continuous):
            b = other.generate(prompts, temperature=temperature, seed=3, **kwargs)
            tokens = lambda rs: [[c.token_ids for c in r.completions] for r in rs]  # noqa: E731
            assert tokens(a) == tokens(b)
            np.testing.assert_allclose(
                [lp for r in a for c in r.completions for lp in c.logprobs],
                [lp for r in b for c in r.completions for lp in c.logprobs],
                atol=1e-4,
            )


def test_demo_model_names_the_capital_of_france(demo_dir):
    engine = Engine(from_pretrained(demo_dir), load_tokenizer(demo_dir), batch_size=2, progress=False)
    result = engine.generate([[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=24)
    completion = result[0].completions[0]
    print(repr(completion.text))
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop" and completion.token_ids[-1] in engine.eos_ids
