"""Pure pieces of a training step: schedules, the optimizer, per-micro-batch losses and the jittable step.

Train state (a plain pytree, what Orbax saves): ``{"step": int32 [], "params": pure dict of arrays,
"opt_state": optax state, "rng": uint32 [2]}``. A *batch* holds A micro-batches of ``rows`` sequences each
(``rows`` = micro-batch examples × S, S = 1 for SFT, 2 for DPO with chosen/rejected on adjacent rows):
``input_ids`` int32 [A, rows, T], ``loss_mask`` / ``attention_mask`` bool [A, rows, T], ``valid`` bool
[A, rows / S], and for DPO ``ref_logps`` float32 [A, rows / S, 2]. A packed DPO batch (``collate(packed=True)``)
has one row per pair (S = 1: the shared prompt once, then both responses) and ``segment_ids`` int32 [A, rows, T];
the layout is read from the batch's keys.

Every micro-batch loss is weighted by its share of the global batch's pairs / target tokens, so summing the
micro-batch gradients equals the gradient of the whole batch at once (accumulation is exact up to rounding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from spar_jax.training.losses import chunked_token_logprobs, dpo_loss, sequence_logps, sft_loss, token_logprobs

SCHEDULES = ("linear", "constant")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Static loss settings: ``kind`` "sft" or "dpo"; DPO's beta / loss_type / label_smoothing / sft_weight."""

    kind: str
    beta: float = 0.1
    sft_weight: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    chunk_size: int = 256


def make_schedule(kind: str, learning_rate: float, total_steps: int, warmup_ratio: float) -> optax.Schedule:
    """HF-style schedules: ``ceil(warmup_ratio * total_steps)`` linear warm-up steps from 0, then constant or
    linear decay to 0 at ``total_steps``. The update with 0-based index k uses ``schedule(k)``."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule {kind!r}: choose one of {SCHEDULES}")
    warmup = math.ceil(warmup_ratio * total_steps)
    after = (
        optax.constant_schedule(learning_rate)
        if kind == "constant"
        else optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))
    )
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only: norms and biases (names ending in ``norm`` / ``bias``) are exempt."""

    def keep(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return not (name.endswith("norm") or name.endswith("bias"))

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
    schedule: optax.Schedule, *, weight_decay: float, b1: float, b2: float, eps: float, max_grad_norm: float | None
) -> optax.GradientTransformation:
    """Global-norm clipping (when ``max_grad_norm``) then AdamW with decoupled, masked weight decay."""
    adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    return adamw if not max_grad_norm else optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def shift_targets(input_ids: jax.Array, loss_mask: jax.Array, attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Targets aligned with positions: position t predicts token t + 1; the last position predicts nothing.

    input_ids [R, T], masks [R, T] bool -> (targets int32 [R, T], target_mask bool [R, T]).
    """
    targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
    keep = loss_mask & attention_mask
    target_mask = jnp.concatenate([keep[:, 1:], jnp.zeros_like(keep[:, :1])], axis=1)
    return targets, target_mask


def token_logps(
    model, input_ids: jax.Array, attention_mask: jax.Array, chunk_size: int, target_mask: jax.Array | None = None
) -> jax.Array:
    """[R, T] log p(input_ids[:, t + 1] | ids[:, :t + 1]) (the last column is meaningless; mask it).

    ``chunk_size`` > 0: chunked over the sequence, logits recomputed in the backward pass (memory ~ chunk × V);
    with ``target_mask`` (from ``shift_targets``) only whole chunks over the positions some row uses are computed,
    and the rest of the result is 0.0 (see ``chunked_token_logprobs``). 0: full [R, T, V] float32 logits kept for the
    backward pass (no recomputation; small vocabularies only).
    """
    hidden, _ = model.hidden_states(input_ids, attention_mask)
    targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
    return _logps_of(model, hidden, targets, chunk_size, target_mask)


def _logps_of(model, hidden: jax.Array, targets: jax.Array, chunk_size: int, target_mask: jax.Array | None):
    """[R, T] log p(targets | hidden) through the unembedding (chunked as in ``token_logps``)."""
    unembed = model.unembed().astype(hidden.dtype)
    if chunk_size <= 0:
        logits = jnp.einsum("bte,ev->btv", hidden, unembed, preferred_element_type=jnp.float32)
        return token_logprobs(logits, targets)
    return chunked_token_logprobs(hidden, unembed, targets, chunk_size=chunk_size, mask=target_mask)


def packed_targets(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """A packed DPO batch [..., R, T] -> (chosen, rejected) target masks [..., R, T], aligned with the *targets*
    (token t, not the position predicting it): the shared prefix's targets count for both."""
    keep = batch["loss_mask"] & batch["attention_mask"]
    keep = keep & (jnp.arange(keep.shape[-1]) > 0)  # token 0 has no predictor
    seg = batch["segment_ids"]
    return keep & (seg <= 1), keep & ((seg == 0) | (seg == 2))


def predictor_hidden(hidden: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """hidden [R, T, E] of a packed row -> [R, T, E], at t the hidden state that predicts token t: that of t - 1,
    except for the rejected branch's first token, predicted by the shared prefix's last token (t = 0: arbitrary)."""
    shared = jnp.sum(segment_ids == 0, axis=1)
    first_rejected = shared + jnp.sum(segment_ids == 1, axis=1)
    previous = jnp.concatenate([hidden[:, :1], hidden[:, :-1]], axis=1)
    last_shared = jnp.take_along_axis(hidden, jnp.maximum(shared - 1, 0)[:, None, None], axis=1)  # [R, 1, E]
    at = jnp.arange(hidden.shape[1])[None, :] == first_rejected[:, None]
    return jnp.where(at[..., None], last_shared, previous)


def pair_logps(model, mb: dict[str, jax.Array], chunk_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A DPO micro-batch (either layout) -> (sequence log-probs float32 [P, 2] (chosen, rejected), the chosen
    response's token log-probs [P, T] and their mask [P, T])."""
    if "segment_ids" in mb:
        chosen, rejected = packed_targets(mb)
        hidden, _ = model.hidden_states(mb["input_ids"], mb["attention_mask"], segment_ids=mb["segment_ids"])
        hidden = predictor_hidden(hidden, mb["segment_ids"])
        tlp = _logps_of(model, hidden, mb["input_ids"], chunk_size, chosen | rejected)
        return jnp.stack([sequence_logps(tlp, chosen), sequence_logps(tlp, rejected)], axis=1), tlp, chosen
    _, tmask = shift_targets(mb["input_ids"], mb["loss_mask"], mb["attention_mask"])
    tlp = token_logps(model, mb["input_ids"], mb["attention_mask"], chunk_size, tmask)
    rows, t = tlp.shape
    seq = sequence_logps(tlp, tmask).reshape(rows // 2, 2)
    return seq, tlp.reshape(rows // 2, 2, t)[:, 0], tmask.reshape(rows // 2, 2, t)[:, 0]


def batch_totals(batch: dict[str, jax.Array], kind: str) -> dict[str, jax.Array]:
    """Normalizers over the whole global batch [A, ...]: valid pairs/examples and target tokens."""
    if "segment_ids" in batch:
        chosen = packed_targets(batch)[0] & batch["valid"][:, :, None]
        return {"pairs": jnp.sum(batch["valid"]).astype(jnp.float32), "tokens": jnp.sum(chosen).astype(jnp.float32)}
    _, tmask = jax.vmap(shift_targets)(batch["input_ids"], batch["loss_mask"], batch["attention_mask"])
    if kind == "dpo":
        a, rows, t = tmask.shape
        tmask = tmask.reshape(a, rows // 2, 2, t)[:, :, 0] & batch["valid"][:, :, None]
        return {"pairs": jnp.sum(batch["valid"]).astype(jnp.float32), "tokens": jnp.sum(tmask).astype(jnp.float32)}
    tmask = tmask & batch["valid"][:, :, None]
    return {"tokens": jnp.sum(tmask).astype(jnp.float32)}


def micro_loss(
    model, mb: dict[str, jax.Array], totals: dict[str, jax.Array], spec: LossSpec
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The global-batch-weighted loss of one micro-batch (arrays without the leading A axis) and its metrics.

    SFT: token-mean NLL over target tokens. DPO: ``dpo_loss`` (mean over valid pairs) + ``sft_weight`` × token-mean
    NLL of the chosen responses — the SPaR actor objective, chosen and rejected in one forward pass.
    """
    if spec.kind == "sft":
        _, tmask = shift_targets(mb["input_ids"], mb["loss_mask"], mb["attention_mask"])
        tlp = token_logps(model, mb["input_ids"], mb["attention_mask"], spec.chunk_size, tmask)
        mask = tmask & mb["valid"][:, None]
        nll, _ = sft_loss(tlp, mask)
        w = jnp.sum(mask) / jnp.maximum(totals["tokens"], 1.0)
        loss = nll * w
        return loss, {
            "loss": loss,
            "nll": jax.lax.stop_gradient(loss),
            "tokens/target": jnp.sum(mask, dtype=jnp.float32),
        }
    valid = mb["valid"]
    seq, chosen_tlp, chosen_mask = pair_logps(model, mb, spec.chunk_size)
    ref = mb["ref_logps"]
    dpo, metrics = dpo_loss(
        seq[:, 0],
        seq[:, 1],
        ref[:, 0],
        ref[:, 1],
        beta=spec.beta,
        loss_type=spec.loss_type,
        label_smoothing=spec.label_smoothing,
        pair_mask=valid,
    )
    chosen_mask = chosen_mask & valid[:, None]
    nll, _ = sft_loss(chosen_tlp, chosen_mask)
    wp = jnp.sum(valid) / jnp.maximum(totals["pairs"], 1.0)
    wt = jnp.sum(chosen_mask) / jnp.maximum(totals["tokens"], 1.0)
    loss = dpo * wp + spec.sft_weight * nll * wt
    out = {k: v * wp for k, v in metrics.items()}
    out.update(
        {
            "loss": jax.lax.stop_gradient(loss),
            "dpo_loss": jax.lax.stop_gradient(dpo * wp),
            "nll": jax.lax.stop_gradient(nll * wt),
            "tokens/chosen": jnp.sum(chosen_mask, dtype=jnp.float32),
        }
    )
    return loss, out


def params_to_state(params: dict, state_def) -> nnx.State:
    """Pure-dict params -> the model's nnx.State (same sorted-key leaf order; checked when the trainer starts)."""
    return jax.tree.unflatten(state_def, jax.tree.leaves(params))


def make_train_step(
    graphdef, state_def, rest, tx: optax.GradientTransformation, schedule: optax.Schedule, spec: LossSpec
) -> Callable:
    """``step(state, batch) -> (state, metrics)``, pure and jittable; the A axis of the batch is accumulated."""

    def loss_fn(params, mb, totals):
        model = nnx.merge(graphdef, params_to_state(params, state_def), rest)
        return micro_loss(model, mb, totals, spec)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch):
        params = state["params"]
        totals = batch_totals(batch, spec.kind)
        if batch["input_ids"].shape[0] == 1:
            (_, metrics), grads = grad_fn(params, jax.tree.map(lambda x: x[0], batch), totals)
        else:

            def body(acc, mb):
                (_, m), g = grad_fn(params, mb, totals)
                return jax.tree.map(jnp.add, acc, (g, m)), None

            (_, m_shape), g_shape = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], batch), totals)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (g_shape, m_shape))
            (grads, metrics), _ = jax.lax.scan(body, zeros, batch)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "rng": jax.random.split(state["rng"])[0],
        }
        metrics = dict(metrics, grad_norm=grad_norm, learning_rate=schedule(state["step"]))
        return new_state, metrics

    return step


def make_pair_logps(graphdef, state_def, rest, chunk_size: int) -> Callable:
    """``fn(params, batch) -> [P, 2]`` (chosen, rejected) sequence log-probs of a DPO micro-batch (either layout)."""

    def fn(params, batch):
        model = nnx.merge(graphdef, params_to_state(params, state_def), rest)
        return pair_logps(model, batch, chunk_size)[0]

    return fn
