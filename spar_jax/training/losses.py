"""Pure training losses: token log-probs, sequence reductions, DPO, the SPaR actor objective, SFT NLL.

Conventions used throughout (B = batch, T = target length, V = vocabulary, E = model width):
- Targets are already aligned with the logits: ``logits[:, t]`` scores ``targets[:, t]``. Callers shift
  (``targets = input_ids[:, 1:]`` against ``logits[:, :-1]``) before calling; masks are aligned with targets.
- Masks are ``[B, T]`` bool/0-1 arrays; 1 marks a token that is a training target (a response token).
  Masked positions never contribute to values *or* gradients: reductions use ``jnp.where``, not
  multiplication, so even NaN/inf at a masked position cannot leak in.
- Every log-prob and loss is float32 whatever the input dtype.
- Batch means in the returned metrics are plain means over the (valid) pairs of the batch.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def _target_logprobs_and_lse(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits [..., V] float32, targets [...] int -> (log p(target), logsumexp(logits)), each [...] float32.

    Uses ``logit[target] - logsumexp(logits)`` so no full log-softmax array is built. Targets outside
    [0, V) are clipped (they only ever sit at masked positions, e.g. -100 labels).
    """
    vocab = logits.shape[-1]
    safe_targets = jnp.clip(targets, 0, vocab - 1).astype(jnp.int32)
    target_logits = jnp.take_along_axis(logits, safe_targets[..., None], axis=-1)[..., 0]
    lse = jax.nn.logsumexp(logits, axis=-1)
    return target_logits - lse, lse


def _target_logprobs_from_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits [..., V] float32, targets [...] int -> log p(target) [...] float32 (see ``_target_logprobs_and_lse``)."""
    return _target_logprobs_and_lse(logits, targets)[0]


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token log-probabilities of ``targets``.

    Args:
      logits: [B, T, V] any float dtype (upcast to float32 before the log-softmax).
      targets: [B, T] int token ids aligned with ``logits``.
    Returns:
      [B, T] float32 ``log softmax(logits)[b, t, targets[b, t]]``.
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"token_logprobs: expected logits [B, T, V] and targets [B, T], got logits {logits.shape} "
            f"and targets {targets.shape}"
        )
    return _target_logprobs_from_logits(logits.astype(jnp.float32), targets)


def _chunk_logits(hidden: jax.Array, unembed: jax.Array) -> jax.Array:
    """hidden [B, C, E], unembed [E, V] -> [B, C, V] float32 (fp32-accumulated matmul)."""
    return jnp.einsum("bce,ev->bcv", hidden, unembed, preferred_element_type=jnp.float32)


def _chunk_logprobs(hidden: jax.Array, unembed: jax.Array, targets: jax.Array) -> jax.Array:
    """hidden [B, C, E], unembed [E, V], targets [B, C] -> [B, C] float32."""
    return _target_logprobs_from_logits(_chunk_logits(hidden, unembed), targets)


def chunked_token_logprobs(
    hidden: jax.Array,
    unembed: jax.Array,
    targets: jax.Array,
    *,
    chunk_size: int = 256,
    mask: Optional[jax.Array] = None,
) -> jax.Array:
    """Per-token log-probs of ``targets`` under ``hidden @ unembed`` without the full [B, T, V] logits.

    The sequence axis is cut into chunks of ``chunk_size`` tokens and scanned; each chunk's body is under
    ``jax.checkpoint`` so the backward pass recomputes the chunk logits instead of storing them. Peak extra
    memory is about ``B * chunk_size * V * 4`` bytes (a few chunk-sized fp32 buffers) in both passes, plus the
    [E, V] gradient accumulator of ``unembed``. Values equal ``token_logprobs(hidden @ unembed, targets)``
    with the matmul accumulated in float32.

    Args:
      hidden: [B, T, E] final hidden states (after the final norm), any float dtype.
      unembed: [E, V] output projection (for tied embeddings pass ``embedding.T``).
      targets: [B, T] int token ids aligned with ``hidden``.
      chunk_size: tokens per chunk (> 0); T need not be a multiple (the tail is padded internally).
      mask: optional [B, T] bool, the positions whose log-probs will be used. Then only whole chunks from the first
        True position of any row through its last are computed (a prompt before every row's response costs no
        logits, forward or backward); positions outside them hold 0.0. T within one chunk: all computed.
        Effect: docs/performance.md#log-probs-from-the-first-target.
    Returns:
      [B, T] float32 log-probabilities.
    """
    if (
        hidden.ndim != 3
        or unembed.ndim != 2
        or targets.shape != hidden.shape[:2]
        or unembed.shape[0] != hidden.shape[2]
    ):
        raise ValueError(
            f"chunked_token_logprobs: expected hidden [B, T, E], unembed [E, V], targets [B, T], got hidden "
            f"{hidden.shape}, unembed {unembed.shape}, targets {targets.shape}"
        )
    if int(chunk_size) <= 0:
        raise ValueError(f"chunked_token_logprobs: chunk_size must be > 0, got {chunk_size}")
    batch, length, width = hidden.shape
    chunk = min(int(chunk_size), length)
    n_chunks = -(-length // chunk)
    if mask is not None:
        if mask.shape != targets.shape:
            raise ValueError(f"chunked_token_logprobs: mask {mask.shape} does not match targets {targets.shape}")
        if n_chunks > 1:  # one chunk covers every position anyway
            return _span_logprobs(hidden, unembed, targets, mask.astype(bool), chunk)
    pad = n_chunks * chunk - length
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [n_chunks, B, C, ...] so the scan walks the sequence with the batch axis (and its sharding) intact.
    hidden_chunks = hidden.reshape(batch, n_chunks, chunk, width).swapaxes(0, 1)
    target_chunks = targets.reshape(batch, n_chunks, chunk).swapaxes(0, 1)
    # prevent_cse=False is safe (and cheaper) inside scan.
    body = jax.checkpoint(_chunk_logprobs, prevent_cse=False)

    def step(carry, xs):
        h, t = xs
        return carry, body(h, unembed, t)

    _, out = lax.scan(step, None, (hidden_chunks, target_chunks))
    return out.swapaxes(0, 1).reshape(batch, n_chunks * chunk)[:, :length]


def _span_logprobs(hidden: jax.Array, unembed: jax.Array, targets: jax.Array, mask: jax.Array, chunk: int) -> jax.Array:
    """``chunked_token_logprobs`` in whole chunks from the first True position of ``mask`` (any row) through the
    last, 0.0 elsewhere.

    The span starts at a traced offset, so its chunks are dynamic slices; ceil(T / chunk) of them are scanned and
    those past the span's end skipped with a ``cond``. A chunk that would run past T is moved back to end at T: it
    overwrites positions that the previous chunk computed with the same values, so nothing is counted twice, in the
    values or their gradients.
    """
    columns = jnp.any(mask, axis=0)
    start = jnp.argmax(columns).astype(jnp.int32)
    stop = jnp.where(jnp.any(columns), mask.shape[1] - jnp.argmax(columns[::-1]), 0).astype(jnp.int32)
    return _span(hidden, unembed, targets, start, stop, chunk)


def _span_windows(length: int, chunk: int, start: jax.Array, stop: jax.Array, i: jax.Array):
    """Chunk i of the span: (its first position ``at``, whether it is computed)."""
    first = start + i * chunk
    return jnp.minimum(first, length - chunk), first < stop


def _span_chunk_ids(length: int, chunk: int) -> jax.Array:
    """The indices the span's scans run over: ceil(T / chunk) chunks, the most a span can need."""
    return jnp.arange(-(-length // chunk), dtype=jnp.int32)


def _span_scan(hidden, unembed, targets, start, stop, chunk):
    """The span's forward: log-probs [B, T] and the logsumexp of each computed position's logits [B, T]."""
    batch, length, _ = hidden.shape

    def step(carry, i):
        at, computed = _span_windows(length, chunk, start, stop, i)

        def compute(carry):
            h = lax.dynamic_slice_in_dim(hidden, at, chunk, axis=1)
            t = lax.dynamic_slice_in_dim(targets, at, chunk, axis=1)
            new = _target_logprobs_and_lse(_chunk_logits(h, unembed), t)
            return tuple(lax.dynamic_update_slice_in_dim(a, x, at, axis=1) for a, x in zip(carry, new, strict=True))

        return lax.cond(computed, compute, lambda carry: carry, carry), None

    zeros = jnp.zeros((batch, length), jnp.float32)
    (logps, lse), _ = lax.scan(step, (zeros, zeros), _span_chunk_ids(length, chunk))
    return logps, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _span(hidden, unembed, targets, start, stop, chunk):
    return _span_scan(hidden, unembed, targets, start, stop, chunk)[0]


def _span_fwd(hidden, unembed, targets, start, stop, chunk):
    logps, lse = _span_scan(hidden, unembed, targets, start, stop, chunk)
    return logps, (hidden, unembed, targets, start, stop, lse)


def _span_bwd(chunk, residuals, g):
    """The chunks in reverse order, each recomputing its logits: d logits = g * (onehot(target) - softmax), the
    softmax as exp(logits - logsumexp) with the forward's logsumexp (no second max and sum over V). A chunk
    takes the cotangent of its window and then zeroes it there, so an earlier chunk that the moved-back last chunk
    overwrote gets none for the shared positions (the transpose of the forward's overwrite). Written out rather than
    differentiated through the scan and cond, whose residuals (the [E, V] unembedding among them) autodiff would copy
    or stack per chunk."""
    hidden, unembed, targets, start, stop, lse = residuals
    length = hidden.shape[1]
    vocab = unembed.shape[1]

    def step(carry, i):
        at, computed = _span_windows(length, chunk, start, stop, i)

        def compute(carry):
            g, d_hidden, d_unembed = carry
            h = lax.dynamic_slice_in_dim(hidden, at, chunk, axis=1)
            t = jnp.clip(lax.dynamic_slice_in_dim(targets, at, chunk, axis=1), 0, vocab - 1)
            g_chunk = lax.dynamic_slice_in_dim(g, at, chunk, axis=1)
            probs = jnp.exp(_chunk_logits(h, unembed) - lax.dynamic_slice_in_dim(lse, at, chunk, axis=1)[..., None])
            d_logits = g_chunk[..., None] * (jax.nn.one_hot(t, vocab, dtype=jnp.float32) - probs)
            d_h = jnp.einsum("bcv,ev->bce", d_logits, unembed, preferred_element_type=jnp.float32)
            d_h = d_h + lax.dynamic_slice_in_dim(d_hidden, at, chunk, axis=1)
            d_unembed = d_unembed + jnp.einsum("bce,bcv->ev", h, d_logits, preferred_element_type=jnp.float32)
            g = lax.dynamic_update_slice_in_dim(g, jnp.zeros_like(g_chunk), at, axis=1)
            return g, lax.dynamic_update_slice_in_dim(d_hidden, d_h, at, axis=1), d_unembed

        return lax.cond(computed, compute, lambda carry: carry, carry), None

    zeros = (g.astype(jnp.float32), jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(unembed.shape, jnp.float32))
    (_, d_hidden, d_unembed), _ = lax.scan(step, zeros, _span_chunk_ids(length, chunk), reverse=True)
    return d_hidden.astype(hidden.dtype), d_unembed.astype(unembed.dtype), None, None, None


_span.defvjp(_span_fwd, _span_bwd)


def _check_mask(name: str, token_logps: jax.Array, mask: jax.Array) -> None:
    if token_logps.ndim != 2 or mask.shape != token_logps.shape:
        raise ValueError(
            f"{name}: expected token_logps [B, T] and mask [B, T], got {token_logps.shape} and {mask.shape}"
        )


def sequence_logps(token_logps: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked sum over the sequence: token_logps [B, T], mask [B, T] -> [B] float32."""
    _check_mask("sequence_logps", token_logps, mask)
    keep = mask.astype(bool)
    return jnp.sum(jnp.where(keep, token_logps.astype(jnp.float32), 0.0), axis=-1)


def sequence_mean_logps(token_logps: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked per-sequence mean: token_logps [B, T], mask [B, T] -> [B] float32 (0 for an empty mask)."""
    _check_mask("sequence_mean_logps", token_logps, mask)
    counts = jnp.sum(mask.astype(bool), axis=-1).astype(jnp.float32)
    return sequence_logps(token_logps, mask) / jnp.maximum(counts, 1.0)


def _masked_mean(values: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
    """Mean of values [B] over entries with weights [B] true (all when None); 0 if none are."""
    if weights is None:
        return jnp.mean(values)
    keep = weights.astype(bool)
    return jnp.sum(jnp.where(keep, values, 0.0)) / jnp.maximum(jnp.sum(keep).astype(jnp.float32), 1.0)


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    pair_mask: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO loss on sequence log-probs (TRL's definitions; β is applied exactly once).

    With ``logits = (πc - πr) - (refc - refr)`` per pair:
      - ``sigmoid``: ``-(1-ε)·log σ(β·logits) - ε·log σ(-β·logits)`` (conservative DPO; ε = label_smoothing,
        ε = 0 is the original DPO);
      - ``ipo``: ``(logits - 1/(2β))²`` (TRL feeds length-averaged log-probs here; pass
        ``sequence_mean_logps`` for policy *and* reference to reproduce that);
      - ``hinge``: ``relu(1 - β·logits)``.
    The loss is the mean over the (valid) pairs.

    Args:
      policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B] sequence
        log-probs, policy and reference reduced the same way (sums, or means for TRL-style IPO).
      beta: Python float > 0 (static under jit).
      loss_type: one of ``DPO_LOSS_TYPES``.
      label_smoothing: ε in [0, 0.5); only for ``sigmoid``.
      pair_mask: optional [B] bool; False rows (batch padding) are left out of the loss and metrics.
    Returns:
      (loss scalar float32, metrics) with metrics ``rewards/chosen``, ``rewards/rejected`` (means of
      β·(policy - ref)), ``rewards/margin`` (mean chosen - rejected reward), ``rewards/accuracy`` (fraction with
      chosen reward > rejected reward), ``logps/chosen``, ``logps/rejected`` (mean policy log-probs); all
      gradient-stopped.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss: unknown loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(
            f"dpo_loss: label_smoothing={label_smoothing} only applies to loss_type='sigmoid', not {loss_type!r}"
        )
    inputs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    shapes = [x.shape for x in inputs]
    if (
        len(shapes[0]) != 1
        or any(s != shapes[0] for s in shapes)
        or (pair_mask is not None and pair_mask.shape != shapes[0])
    ):
        raise ValueError(
            f"dpo_loss: expected four [B] log-prob arrays (and a [B] pair_mask), got shapes {shapes}"
            f"{'' if pair_mask is None else f' and pair_mask {pair_mask.shape}'}"
        )
    pc, pr, rc, rr = (x.astype(jnp.float32) for x in inputs)
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    # TRL's grouping (policy ratio minus reference ratio) so float rounding matches it too.
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * logits) - label_smoothing * jax.nn.log_sigmoid(
            -beta * logits
        )
    elif loss_type == "ipo":
        losses = (logits - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = jax.nn.relu(1.0 - beta * logits)
    loss = _masked_mean(losses, pair_mask)

    chosen_rewards = lax.stop_gradient(beta * chosen_logratios)
    rejected_rewards = lax.stop_gradient(beta * rejected_logratios)
    metrics = {
        "rewards/chosen": _masked_mean(chosen_rewards, pair_mask),
        "rewards/rejected": _masked_mean(rejected_rewards, pair_mask),
        "rewards/margin": _masked_mean(chosen_rewards - rejected_rewards, pair_mask),
        "rewards/accuracy": _masked_mean((chosen_rewards > rejected_rewards).astype(jnp.float32), pair_mask),
        "logps/chosen": _masked_mean(lax.stop_gradient(pc), pair_mask),
        "logps/rejected": _masked_mean(lax.stop_gradient(pr), pair_mask),
    }
    return loss, metrics


def _token_mean_nll(token_logps: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """-sum(masked token logps) / max(sum(mask), 1) over the whole batch -> (nll scalar, token count)."""
    keep = mask.astype(bool)
    count = jnp.sum(keep).astype(jnp.float32)
    total = jnp.sum(jnp.where(keep, token_logps.astype(jnp.float32), 0.0))
    return -total / jnp.maximum(count, 1.0), count


def sft_loss(token_logps: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean NLL over target tokens only.

    ``loss = -sum(token_logps[loss_mask]) / sum(loss_mask)`` — a per-token mean over every target token in
    the batch (not a mean of per-sequence means); 0 when the mask is empty. For multi-turn chats the mask
    marks every assistant turn that is a target; prompts, other turns and padding are 0.

    Args:
      token_logps: [B, T] float log-probs (from ``token_logprobs`` / ``chunked_token_logprobs``).
      loss_mask: [B, T] bool/0-1.
    Returns:
      (loss scalar float32, metrics {``nll``: the loss, ``tokens``: number of target tokens}).
    """
    _check_mask("sft_loss", token_logps, loss_mask)
    nll, count = _token_mean_nll(token_logps, loss_mask)
    return nll, {"nll": lax.stop_gradient(nll), "tokens": count}


def spar_actor_loss(
    policy_chosen_token_logps: jax.Array,
    chosen_mask: jax.Array,
    policy_rejected_token_logps: jax.Array,
    rejected_mask: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    sft_weight: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    pair_mask: Optional[jax.Array] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SPaR actor objective: ``dpo_loss + sft_weight * nll``.

    Policy sequence log-probs are masked *sums* of the token log-probs (``sequence_logps``), so the reference
    log-probs must be masked sums over the same response tokens. ``nll`` is the per-token mean over all chosen
    response tokens in the batch: ``nll = -sum(chosen token logps · chosen_mask) / sum(chosen_mask)`` (rows
    excluded by ``pair_mask`` are left out of both sums; 0 if no token remains).

    Args:
      policy_chosen_token_logps: [B, Tc] policy token log-probs of the chosen responses.
      chosen_mask: [B, Tc] 1 on chosen response tokens (prompt and padding 0).
      policy_rejected_token_logps: [B, Tr]; rejected_mask: [B, Tr] likewise for the rejected responses.
      ref_chosen_logps, ref_rejected_logps: [B] reference sequence log-probs (masked sums, precomputed).
      beta, loss_type, label_smoothing, pair_mask: as in ``dpo_loss``.
      sft_weight: weight of the NLL term (>= 0; SPaR uses 0.1).
    Returns:
      (loss scalar float32, metrics) with every ``dpo_loss`` metric plus ``dpo_loss``, ``nll`` and
      ``tokens/chosen`` (number of chosen tokens in the NLL).
    """
    if not sft_weight >= 0:
        raise ValueError(f"spar_actor_loss: sft_weight must be >= 0, got {sft_weight}")
    _check_mask("spar_actor_loss (chosen)", policy_chosen_token_logps, chosen_mask)
    _check_mask("spar_actor_loss (rejected)", policy_rejected_token_logps, rejected_mask)
    chosen_logps = sequence_logps(policy_chosen_token_logps, chosen_mask)
    rejected_logps = sequence_logps(policy_rejected_token_logps, rejected_mask)
    dpo, metrics = dpo_loss(
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        pair_mask=pair_mask,
    )
    nll_mask = chosen_mask.astype(bool)
    if pair_mask is not None:
        nll_mask = nll_mask & pair_mask.astype(bool)[:, None]
    nll, count = _token_mean_nll(policy_chosen_token_logps, nll_mask)
    loss = dpo + sft_weight * nll
    metrics = dict(
        metrics, **{"dpo_loss": lax.stop_gradient(dpo), "nll": lax.stop_gradient(nll), "tokens/chosen": count}
    )
    return loss, metrics
