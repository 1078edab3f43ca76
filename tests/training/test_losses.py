"""Tests for spar_jax.training.losses: hand values, masks, TRL parity (torch), chunked log-probs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spar_jax.training.losses import (
    chunked_token_logprobs,
    dpo_loss,
    sequence_logps,
    sequence_mean_logps,
    sft_loss,
    spar_actor_loss,
    token_logprobs,
)


def _softplus(x):
    return math.log1p(math.exp(x))


# --- TRL's DPO formulas, written out in torch from trl/trainer/dpo_trainer.py (DPOTrainer.dpo_loss) -------------
def trl_dpo_torch(pc, pr, rc, rr, beta, loss_type, label_smoothing):
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def trl_batch_logps_torch(logits, labels):
    """TRL's get_batch_logps: shift, -100 labels masked, sum of gathered log-softmax."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100
    labels[labels == -100] = 0
    per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask).sum(-1)


# --- dpo_loss: hand-computed values ---------------------------------------------------------------------------
# Pair 0: chosen ratio +1, rejected ratio -1 -> logits 2.  Pair 1: chosen ratio -0.5, rejected ratio +1 -> -1.5.
PC, PR, RC, RR = [-1.0, -4.0], [-3.0, -1.0], [-2.0, -3.5], [-2.0, -2.0]
LOGITS = [2.0, -1.5]


def _dpo(beta, loss_type, label_smoothing=0.0):
    arrays = [jnp.asarray(x, jnp.float32) for x in (PC, PR, RC, RR)]
    return dpo_loss(*arrays, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_sigmoid_hand_values(beta):
    loss, m = _dpo(beta, "sigmoid")
    expected = np.mean([_softplus(-beta * z) for z in LOGITS])  # -log sigmoid(x) = softplus(-x)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(m["rewards/chosen"], beta * (1.0 - 0.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["rewards/rejected"], beta * (-1.0 + 1.0) / 2, atol=1e-7)
    np.testing.assert_allclose(m["rewards/margin"], beta * (2.0 - 1.5) / 2, rtol=1e-6)
    assert float(m["rewards/accuracy"]) == 0.5
    np.testing.assert_allclose(m["logps/chosen"], -2.5, rtol=1e-6)
    np.testing.assert_allclose(m["logps/rejected"], -2.0, rtol=1e-6)


def test_dpo_label_smoothing_hand_value():
    beta, eps = 0.1, 0.2
    loss, _ = _dpo(beta, "sigmoid", eps)
    expected = np.mean([(1 - eps) * _softplus(-beta * z) + eps * _softplus(beta * z) for z in LOGITS])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert abs(float(loss) - float(_dpo(beta, "sigmoid")[0])) > 1e-3


def test_dpo_ipo_hand_value():
    beta = 0.1
    loss, _ = _dpo(beta, "ipo")
    np.testing.assert_allclose(loss, np.mean([(2.0 - 5.0) ** 2, (-1.5 - 5.0) ** 2]), rtol=1e-6)


def test_dpo_hinge_hand_value():
    loss, _ = _dpo(0.1, "hinge")
    np.testing.assert_allclose(loss, np.mean([1 - 0.2, 1 + 0.15]), rtol=1e-6)
    loss, _ = _dpo(1.0, "hinge")  # pair 0 past the margin: relu(1 - 2) = 0
    np.testing.assert_allclose(loss, np.mean([0.0, 1 + 1.5]), rtol=1e-6)


def test_dpo_bad_arguments():
    x = jnp.zeros((3,))
    with pytest.raises(ValueError, match="unknown loss_type 'kto'"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="shapes"):
        dpo_loss(x, x, x, jnp.zeros((2,)))


def test_dpo_pair_mask_drops_padding_rows():
    valid = [jnp.asarray(v, jnp.float32) for v in (PC, PR, RC, RR)]
    padded = [jnp.concatenate([v, jnp.asarray([123.0])]) for v in valid]
    mask = jnp.asarray([True, True, False])
    for loss_type in ("sigmoid", "ipo", "hinge"):
        ref_loss, ref_m = dpo_loss(*valid, loss_type=loss_type)
        loss, m = dpo_loss(*padded, loss_type=loss_type, pair_mask=mask)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        for k in ref_m:
            np.testing.assert_allclose(m[k], ref_m[k], rtol=1e-6, atol=1e-7, err_msg=k)


# --- dpo_loss: parity with TRL's torch formula (values and gradients) ------------------------------------------
@pytest.mark.parametrize(
    "loss_type,label_smoothing", [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0)]
)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl_torch(loss_type, label_smoothing, beta):
    rng = np.random.default_rng(hash((loss_type, label_smoothing, beta)) % 2**32)
    inputs = [(-rng.uniform(5.0, 60.0, size=16)).astype(np.float32) for _ in range(4)]

    def jax_loss(pc, pr, rc, rr):
        return dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)

    (loss, metrics), grads = jax.value_and_grad(jax_loss, argnums=(0, 1, 2, 3), has_aux=True)(
        *[jnp.asarray(x) for x in inputs]
    )
    t_inputs = [torch.tensor(x, requires_grad=True) for x in inputs]
    t_loss, t_chosen, t_rejected = trl_dpo_torch(*t_inputs, beta, loss_type, label_smoothing)
    t_loss.backward()

    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-6, atol=1e-6)
    for g, t in zip(grads, t_inputs):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["rewards/chosen"], t_chosen.mean().item(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["rewards/rejected"], t_rejected.mean().item(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["rewards/margin"], (t_chosen - t_rejected).mean().item(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["rewards/accuracy"], (t_chosen > t_rejected).float().mean().item())


def test_sequence_logps_match_trl_batch_logps():
    rng = np.random.default_rng(0)
    batch, length, vocab = 3, 11, 17
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32) * 3
    labels = rng.integers(0, vocab, size=(batch, length))
    labels[:, :4] = -100  # prompt
    labels[1, 8:] = -100  # padding
    expected = trl_batch_logps_torch(torch.tensor(logits), torch.tensor(labels)).numpy()
    targets = jnp.asarray(labels[:, 1:])
    tok = token_logprobs(jnp.asarray(logits[:, :-1]), targets)
    np.testing.assert_allclose(sequence_logps(tok, targets != -100), expected, rtol=1e-6, atol=1e-5)
    counts = (labels[:, 1:] != -100).sum(-1)
    np.testing.assert_allclose(sequence_mean_logps(tok, targets != -100), expected / counts, rtol=1e-6, atol=1e-6)


# --- masks ----------------------------------------------------------------------------------------------------
def _masked_setup(seed=0):
    rng = np.random.default_rng(seed)
    batch, length, vocab = 2, 9, 13
    logits = jnp.asarray(rng.normal(size=(batch, length, vocab)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, size=(batch, length)))
    # row 0: prompt 0-2, response 3-7, pad 8; row 1: prompt 0-4, response 5-6, pad 7-8
    mask = np.zeros((batch, length), bool)
    mask[0, 3:8] = True
    mask[1, 5:7] = True
    noise = jnp.asarray(rng.normal(size=logits.shape) * 1e3, jnp.float32)
    perturbed = jnp.where(jnp.asarray(mask)[..., None], logits, logits + noise)
    return logits, perturbed, targets, jnp.asarray(mask)


def test_masked_positions_never_contribute():
    logits, perturbed, targets, mask = _masked_setup()
    ref = jnp.asarray([-30.0, -25.0])

    def objectives(lg):
        tok = token_logprobs(lg, targets)
        actor, _ = spar_actor_loss(tok, mask, tok[::-1], mask[::-1], ref, ref[::-1])
        sft, _ = sft_loss(tok, mask)
        return jnp.stack([sequence_logps(tok, mask).sum(), sequence_mean_logps(tok, mask).sum(), actor, sft])

    base, pert = objectives(logits), objectives(perturbed)
    np.testing.assert_allclose(pert, base, rtol=1e-6)
    for i in range(4):
        g_base = jax.grad(lambda lg: objectives(lg)[i])(logits)
        g_pert = jax.grad(lambda lg: objectives(lg)[i])(perturbed)
        np.testing.assert_allclose(g_pert, g_base, rtol=1e-5, atol=1e-7)
        assert float(jnp.abs(jnp.where(mask[..., None], 0.0, g_base)).max()) == 0.0
    # The check can fail: the same perturbation on an unmasked token does move the values.
    moved = objectives(logits.at[0, 3].add(5.0 * jnp.arange(logits.shape[-1])))
    assert np.all(np.abs(np.asarray(moved - base)) > 1e-4)


def test_sft_multi_turn_mask_hand_value():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 12, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(1, 12))
    # system/user 0-2, assistant turn 1 at 3-5, user 6-7, assistant turn 2 at 8-10, padding 11
    mask = np.zeros((1, 12), bool)
    mask[0, 3:6] = True
    mask[0, 8:11] = True
    logp = torch.log_softmax(torch.tensor(logits), -1).numpy()
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    expected = -picked[mask].mean()
    loss, m = sft_loss(token_logprobs(jnp.asarray(logits), jnp.asarray(targets)), jnp.asarray(mask))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(m["tokens"]) == 6.0 and float(m["nll"]) == float(loss)


def test_sft_empty_mask_is_zero():
    loss, m = sft_loss(jnp.full((2, 3), -5.0), jnp.zeros((2, 3), bool))
    assert float(loss) == 0.0 and float(m["tokens"]) == 0.0


# --- SPaR actor objective ---------------------------------------------------------------------------------------
def test_spar_actor_nll_is_token_mean_over_batch():
    chosen = jnp.asarray([[-0.5, -1.0, -2.0, -9.0], [-0.25, -7.0, -3.0, -1.0]])
    chosen_mask = jnp.asarray([[0, 1, 1, 0], [1, 0, 1, 1]], bool)
    rejected = jnp.asarray([[-4.0, -2.0, -1.0], [-8.0, -1.0, -0.5]])
    rejected_mask = jnp.asarray([[0, 1, 1], [1, 1, 0]], bool)
    ref_c, ref_r = jnp.asarray([-3.5, -4.0]), jnp.asarray([-2.5, -10.0])
    loss, m = spar_actor_loss(chosen, chosen_mask, rejected, rejected_mask, ref_c, ref_r)
    nll = (1.0 + 2.0 + 0.25 + 3.0 + 1.0) / 5  # not the mean of per-sequence means (1.5 + 4.25/3) / 2
    # sequence sums: chosen [-3, -4.25], rejected [-3, -9]; logits = (pc - pr) - (rc - rr)
    logits = [(-3.0 - -3.0) - (-3.5 - -2.5), (-4.25 - -9.0) - (-4.0 - -10.0)]
    dpo = np.mean([_softplus(-0.1 * z) for z in logits])
    np.testing.assert_allclose(m["nll"], nll, rtol=1e-6)
    np.testing.assert_allclose(m["dpo_loss"], dpo, rtol=1e-6)
    np.testing.assert_allclose(loss, dpo + 0.1 * nll, rtol=1e-6)
    assert float(m["tokens/chosen"]) == 5.0
    loss2, _ = spar_actor_loss(chosen, chosen_mask, rejected, rejected_mask, ref_c, ref_r, sft_weight=0.0)
    np.testing.assert_allclose(loss2, dpo, rtol=1e-6)
    with pytest.raises(ValueError, match="sft_weight"):
        spar_actor_loss(chosen, chosen_mask, rejected, rejected_mask, ref_c, ref_r, sft_weight=-1.0)


def test_spar_actor_pair_mask_excludes_row_from_nll():
    chosen = jnp.asarray([[-1.0, -2.0], [-50.0, -60.0]])
    cmask = jnp.ones((2, 2), bool)
    ref = jnp.asarray([-1.0, -1.0])
    _, m = spar_actor_loss(chosen, cmask, chosen, cmask, ref, ref, pair_mask=jnp.asarray([True, False]))
    np.testing.assert_allclose(m["nll"], 1.5, rtol=1e-6)
    assert float(m["tokens/chosen"]) == 2.0


# --- chunked log-probs ------------------------------------------------------------------------------------------
def _chunk_inputs(batch, length, width, vocab, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(batch, length, width)), dtype)
    unembed = jnp.asarray(rng.normal(size=(width, vocab)) / math.sqrt(width), dtype)
    targets = jnp.asarray(rng.integers(0, vocab, size=(batch, length)))
    weights = jnp.asarray(rng.normal(size=(batch, length)), jnp.float32)
    return hidden, unembed, targets, weights


@pytest.mark.parametrize("length,chunk_size", [(37, 8), (32, 8), (20, 64)])
def test_chunked_matches_unchunked_value_and_grad(length, chunk_size):
    hidden, unembed, targets, weights = _chunk_inputs(2, length, 16, 50)

    def full(h, w):
        return jnp.sum(weights * token_logprobs(h @ w, targets))

    def chunked(h, w):
        return jnp.sum(weights * chunked_token_logprobs(h, w, targets, chunk_size=chunk_size))

    np.testing.assert_allclose(
        chunked_token_logprobs(hidden, unembed, targets, chunk_size=chunk_size),
        token_logprobs(hidden @ unembed, targets),
        rtol=1e-5,
        atol=1e-5,
    )
    v_full, g_full = jax.value_and_grad(full, argnums=(0, 1))(hidden, unembed)
    v_chunk, g_chunk = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, unembed)
    np.testing.assert_allclose(v_chunk, v_full, rtol=1e-5)
    for a, b in zip(g_chunk, g_full):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "length,chunk_size,rows",
    [
        (37, 8, [(9, 20), (12, 15)]),  # the span starts inside a chunk
        (37, 8, [(30, 36), (33, 37)]),  # the last chunk would run past T: moved back
        (32, 8, [(0, 32), (5, 6)]),  # everything
        (32, 8, [(4, 4), (7, 7)]),  # no targets at all
        (20, 64, [(9, 20), (12, 15)]),  # one chunk: every position computed
    ],
)
def test_chunked_with_a_mask_computes_the_masked_span_with_exact_values_and_grads(length, chunk_size, rows):
    hidden, unembed, targets, weights = _chunk_inputs(2, length, 16, 50, seed=3)
    mask = jnp.asarray(np.stack([(np.arange(length) >= a) & (np.arange(length) < b) for a, b in rows]))

    def full(h, w):
        return jnp.sum(jnp.where(mask, weights * token_logprobs(h @ w, targets), 0.0))

    def chunked(h, w):
        lp = chunked_token_logprobs(h, w, targets, chunk_size=chunk_size, mask=mask)
        return jnp.sum(jnp.where(mask, weights * lp, 0.0))

    out = jax.jit(lambda h, w: chunked_token_logprobs(h, w, targets, chunk_size=chunk_size, mask=mask))(hidden, unembed)
    ref = token_logprobs(hidden @ unembed, targets)
    np.testing.assert_allclose(jnp.where(mask, out, 0.0), jnp.where(mask, ref, 0.0), rtol=1e-5, atol=1e-5)
    used = np.flatnonzero(np.asarray(mask).any(0))
    outside = np.ones(length, bool)
    if -(-length // chunk_size) == 1:
        outside[:] = False  # one chunk: computed everywhere
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    elif used.size:  # whole chunks from the first used position, the last one ending by T
        n = -(-(used[-1] + 1 - used[0]) // chunk_size)
        last = min(used[0] + (n - 1) * chunk_size, length - chunk_size)  # the last chunk, moved back if need be
        outside[used[0] : used[0] + (n - 1) * chunk_size] = False
        outside[last : last + chunk_size] = False
    np.testing.assert_array_equal(np.asarray(out)[:, outside], 0.0)  # not computed
    assert np.all(np.asarray(out)[:, ~outside] < 0)  # computed
    v_full, g_full = jax.value_and_grad(full, argnums=(0, 1))(hidden, unembed)
    v_chunk, g_chunk = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, unembed)
    np.testing.assert_allclose(v_chunk, v_full, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_chunk, g_full):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "span"])
def test_chunked_saves_no_per_chunk_copy_of_the_unembedding(mask_kind):
    """What the forward pass keeps for the backward does not grow by an [E, V] array per chunk (a residual of the
    span's cond, stacked by the scan, once cost 226 MB per SmolLM2 DPO step and escaped the planner's per-row
    activation slope)."""
    length, width, vocab = 64, 16, 512
    hidden, unembed, targets, _ = _chunk_inputs(2, length, width, vocab, seed=5)
    mask = None if mask_kind == "none" else jnp.asarray(np.arange(length) >= 10)[None].repeat(2, axis=0)

    def saved_bytes(chunk_size):
        def logprobs(h, w):
            return chunked_token_logprobs(h, w, targets, chunk_size=chunk_size, mask=mask)

        def vjp(h, w):
            return jax.vjp(logprobs, h, w)[1]

        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(vjp, hidden, unembed)))

    grows_by = saved_bytes(8) - saved_bytes(32)  # 8 chunks against 2
    assert grows_by < unembed.size * unembed.dtype.itemsize, grows_by


def test_chunked_bf16_inputs_give_float32():
    hidden, unembed, targets, _ = _chunk_inputs(2, 24, 16, 40, dtype=jnp.bfloat16)
    out = chunked_token_logprobs(hidden, unembed, targets, chunk_size=8)
    assert out.dtype == jnp.float32
    ref = token_logprobs(jnp.einsum("bte,ev->btv", hidden, unembed, preferred_element_type=jnp.float32), targets)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_chunked_bad_shapes():
    hidden, unembed, targets, _ = _chunk_inputs(2, 8, 4, 10)
    with pytest.raises(ValueError, match="unembed"):
        chunked_token_logprobs(hidden, unembed.T, targets)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_logprobs(hidden, unembed, targets, chunk_size=0)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(hidden @ unembed, targets[:, :-1])


def test_chunked_grad_memory_stays_far_below_full_logits():
    batch, length, width, vocab, chunk = 2, 512, 64, 8192, 64
    full_logits_bytes = batch * length * vocab * 4
    specs = (
        jax.ShapeDtypeStruct((batch, length, width), jnp.float32),
        jax.ShapeDtypeStruct((width, vocab), jnp.float32),
        jax.ShapeDtypeStruct((batch, length), jnp.int32),
    )

    def temp_bytes(fn):
        step = jax.jit(jax.value_and_grad(lambda h, w, t: jnp.sum(fn(h, w, t)), argnums=(0, 1)))
        return step.lower(*specs).compile().memory_analysis().temp_size_in_bytes

    chunked = temp_bytes(lambda h, w, t: chunked_token_logprobs(h, w, t, chunk_size=chunk))
    full = temp_bytes(lambda h, w, t: token_logprobs(h @ w, t))
    # The measurement discriminates: the unchunked step does hold the full fp32 logits.
    assert full >= full_logits_bytes
    # Chunked: a few chunk-sized buffers plus the [E, V] unembed gradient accumulator.
    assert chunked < full_logits_bytes / 2, (chunked, full_logits_bytes)
