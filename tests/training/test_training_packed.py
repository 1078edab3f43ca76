"""Packed DPO pairs (``share_prompt``): the shared prefix computed once gives the same model outputs, losses and
gradients as the two-row layout, on every architecture (mistral's sliding window counts positions, not slots)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.training import step as S
from spar_jax.training.batches import TokenizedData, TruncationStats, collate, pack_pair
from spar_jax.training.trainer import TrainConfig, Trainer, compute_reference_logps, load_data

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

ARCHS = ["llama", "mistral", "qwen2", "glm"]


def _pairs(vocab: int, seed: int = 0) -> TokenizedData:
    """Pairs with: a shared prompt only; a prompt plus a shared start of the responses; the rejected response a
    prefix of the chosen one; nothing shared (different prompts)."""
    rng = np.random.default_rng(seed)
    tok = lambda n: rng.integers(3, vocab, n).astype(np.int32)  # noqa: E731
    specs = []
    p, a, b = tok(7), tok(9), tok(5)
    specs.append(((p, a), (p, b)))
    p, s, a, b = tok(5), tok(4), tok(6), tok(3)
    specs.append(((p, np.concatenate([s, a])), (p, np.concatenate([s, b]))))
    p, a = tok(6), tok(8)
    specs.append(((p, a), (p, a[:3])))
    specs.append(((tok(4), tok(5)), (tok(6), tok(7))))
    ids, masks = [], []
    for pair in specs:
        ids.append(tuple(np.concatenate([q, r]) for q, r in pair))
        masks.append(tuple(np.arange(len(q) + len(r)) >= len(q) for q, r in pair))
    ref = rng.normal(-20.0, 5.0, (len(ids), 2)).astype(np.float32)
    return TokenizedData("dpo", ids, masks, TruncationStats(len(ids)), ref_logps=ref)


def test_pack_pair_keeps_the_shared_prefix_once():
    data = _pairs(100)
    shared = [7, 9, 6 + 3, 0]
    for i, n in enumerate(shared):
        (c, r), (_, rm) = data.ids[i], data.masks[i]
        ids, mask, seg = pack_pair(data.ids[i], data.masks[i])
        assert len(ids) == len(c) + len(r) - n == data.packed_lengths()[i]
        np.testing.assert_array_equal(seg, [0] * n + [1] * (len(c) - n) + [2] * (len(r) - n))
        np.testing.assert_array_equal(ids[seg <= 1], c)
        np.testing.assert_array_equal(ids[(seg == 0) | (seg == 2)], r)
        np.testing.assert_array_equal(mask[(seg == 0) | (seg == 2)], rm)
    batch = collate(data, np.array([1, 0]), rows=3, length=32, packed=True)
    assert batch["input_ids"].shape == (3, 32) and batch["ref_logps"].shape == (3, 2)
    assert (batch["segment_ids"][2] == -1).all() and not batch["attention_mask"][2].any()
    assert (batch["attention_mask"] == (batch["segment_ids"] >= 0)).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_each_branch_sees_what_it_would_see_alone(tmp_path, arch):
    model = from_pretrained(write_checkpoint(tmp_path / "m", arch, seed=3))
    data = _pairs(model.config.vocab_size)
    batch = collate(data, np.arange(4), rows=4, length=32, packed=True)
    packed, _ = model.hidden_states(batch["input_ids"], batch["attention_mask"], segment_ids=batch["segment_ids"])
    for i in range(4):
        seg = batch["segment_ids"][i]
        for branch, seq in zip((1, 2), data.ids[i]):
            alone, _ = model.hidden_states(seq[None])
            rows = np.asarray(packed[i])[(seg == 0) | (seg == branch)]
            np.testing.assert_allclose(rows, np.asarray(alone[0]), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_loss_metrics_and_gradients_equal_the_two_row_layout(tmp_path, arch):
    model = from_pretrained(write_checkpoint(tmp_path / "m", arch, seed=4))
    data = _pairs(model.config.vocab_size, seed=1)
    spec = S.LossSpec("dpo", beta=0.1, sft_weight=0.1, chunk_size=8)
    from flax import nnx

    graphdef, state, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(packed):
        batch = jax.tree.map(jnp.asarray, collate(data, np.array([2, 0, 3, 1]), rows=5, length=32, packed=packed))
        totals = S.batch_totals(jax.tree.map(lambda x: x[None], batch), "dpo")

        def f(state):
            return S.micro_loss(nnx.merge(graphdef, state, rest), batch, totals, spec)

        return jax.value_and_grad(f, has_aux=True)(state)

    (loss_p, metrics_p), grads_p = loss_of(True)
    (loss_u, metrics_u), grads_u = loss_of(False)
    np.testing.assert_allclose(float(loss_p), float(loss_u), rtol=1e-5)
    assert metrics_p.keys() == metrics_u.keys()
    for k in metrics_u:
        np.testing.assert_allclose(float(metrics_p[k]), float(metrics_u[k]), rtol=1e-5, atol=1e-5, err_msg=k)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_u))
    for gp, gu in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads_u)):
        np.testing.assert_allclose(np.asarray(gp), np.asarray(gu), rtol=0, atol=1e-5 * scale)
    # Sequence log-probs, both layouts, through the reference pass.
    ref_p = compute_reference_logps(model, data, pairs_per_batch=2, chunk_size=8, packed=True)
    ref_u = compute_reference_logps(model, data, pairs_per_batch=2, chunk_size=8, packed=False)
    np.testing.assert_allclose(ref_p, ref_u, rtol=1e-5)


def test_share_prompt_trains_to_the_same_parameters(tmp_path):
    d = tmp_path / "tiny"
    write_checkpoint(d, "llama", seed=1, vocab_size=49152)
    copy_demo_tokenizer(d)
    tok = load_tokenizer(str(d))
    pairs = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not answer that question."},
        {"prompt": "Count to three.", "chosen": "One, two, three.", "rejected": "One, two, four."},
        {"prompt": "Say yes.", "chosen": "Yes!", "rejected": "No."},
    ]
    params = []
    for share in (True, False):
        cfg = TrainConfig(
            kind="dpo",
            learning_rate=1e-3,
            batch_size=3,
            max_steps=2,
            warmup_ratio=0.0,
            schedule="constant",
            max_length=64,
            max_prompt_length=32,
            logits_chunk_size=16,
            progress_bar=False,
            share_prompt=share,
        )
        data = load_data(pairs, tok, cfg)
        if share:  # the chat-template prompt is shared, and "One, two, " too
            lengths = [len(c) + len(r) for c, r in data.ids]
            assert (data.packed_lengths() < np.asarray(lengths) - 10).all()
        trainer = Trainer(from_pretrained(str(d)), data, cfg)
        _, batch = next(trainer.batches.iterate())
        assert ("segment_ids" in batch) == share and batch["input_ids"].shape[0] == 3 * (1 if share else 2)
        trainer.fit()
        params.append(jax.tree.map(np.asarray, trainer.state["params"]))
    for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
