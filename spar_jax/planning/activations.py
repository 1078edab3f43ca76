"""Activation memory from the model's own backward residuals, under its remat policy.

For a training micro-batch the bytes kept between the forward and the backward pass are exactly the residuals of
``jax.vjp`` of the loss. We read them with ``jax.eval_shape`` (no memory, no compile) from the real trainer loss
(``spar_jax.training.step.micro_loss``) on the real ``Transformer`` with the configured ``remat`` policy, built at the
per-chip shape: heads, kv heads, MLP width and vocabulary divided by their tensor-parallel shards (what one chip
computes under the logical-axis rules), full model width, ``rows`` = the sequences one chip processes.

Residuals are linear in the number of rows except for the parameters themselves (and their compute-dtype copies),
which are counted separately by the planner. So we measure the residual bytes at 2 and 4 rows and keep the slope:

    saved(rows)      = rows * (R(4) - R(2)) / 2                     # policy as configured, all L layers
    working_set(rows) = rows * (R1_none - R1_policy)                 # 1-layer model: what one layer rematerializes
                                                                     # while its backward runs (0 for remat="none")

For ``remat="full"`` ``saved`` is the residual stream [rows, T, E] per layer plus the loss head's few buffers, and
``working_set`` is one layer's intermediates (q/k/v, the [H, T, T] float32 scores and probabilities, the MLP
activations). What XLA fuses away is not subtracted: these are upper estimates of the stored tensors, not of
XLA's buffer assignment. Prefill (sampling, no backward) uses the formula in ``prefill_working_set``.

The model is measured with its XLA attention, which materializes the [H, T, T] probabilities. For a flash kernel
(``attention_impl`` splash on TPU, cuDNN on GPU), ``with_kernel`` removes the score residuals that XLA's attention
stores (``score_residual_bytes``, counted from the same blocked shapes) and adds the kernel's log-sum-exp.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.models.config import ModelConfig
from spar_jax.models.pretrained import abstract_model
from spar_jax.planning.memory import array_bytes
from spar_jax.training import step as S


def local_model_config(
    cfg: ModelConfig, local: dict[str, int], *, layers: int | None = None
) -> tuple[ModelConfig, str]:
    """The model one chip computes: tensor-parallel dims replaced by their per-chip sizes (``local`` from
    ``ParamLayout.local``). Returns (config, note); the note is non-empty when grouped-query attention could not be
    split consistently (kv heads replicated while query heads are split) and query heads were kept whole."""
    heads = local.get("heads", cfg.num_attention_heads)
    kv = local.get("kv_heads", cfg.num_key_value_heads)
    note = ""
    if heads % kv:
        note = (
            f"query heads per chip ({heads}) are not a multiple of kv heads per chip ({kv}); activations are "
            f"estimated with all {cfg.num_attention_heads} query heads on each chip"
        )
        heads = cfg.num_attention_heads
    n_layers = cfg.num_hidden_layers if layers is None else layers
    windows = cfg.sliding_windows[:n_layers] if cfg.sliding_windows else ()
    return dataclasses.replace(
        cfg,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=local.get("vocab", cfg.vocab_size),
        intermediate_size=local.get("mlp", cfg.intermediate_size),
        num_hidden_layers=n_layers,
        sliding_windows=windows,
    ), note


def _residual_bytes(
    cfg: ModelConfig, rows: int, length: int, *, dtype: str, param_dtype: str | None, remat: str, chunk_size: int
) -> int:
    """Bytes of the vjp residuals of the DPO loss (``micro_loss``) for [rows, length] inputs (``rows`` even)."""
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat)
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(state)
    state_def = jax.tree.structure(state)
    spec = S.LossSpec("dpo", chunk_size=chunk_size)

    def forward(p, ids, mask):
        m = nnx.merge(graphdef, S.params_to_state(p, state_def), rest)
        mb = {
            "input_ids": ids,
            "loss_mask": mask,
            "attention_mask": mask,
            "valid": jnp.ones((rows // 2,), bool),
            "ref_logps": jnp.zeros((rows // 2, 2), jnp.float32),
        }
        totals = {"pairs": jnp.float32(rows // 2), "tokens": jnp.float32(rows * length)}
        return S.micro_loss(m, mb, totals, spec)[0]

    ids = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_)
    vjp_fn = jax.eval_shape(lambda p, i, m: jax.vjp(lambda q: forward(q, i, m), p)[1], params, ids, mask)
    return array_bytes(vjp_fn)


def _per_row(cfg, length, **kw) -> int:
    return (_residual_bytes(cfg, 4, length, **kw) - _residual_bytes(cfg, 2, length, **kw)) // 2


@dataclasses.dataclass(frozen=True)
class Activations:
    """Per-chip activation bytes of one training micro-batch: ``saved`` (kept for the backward pass) and
    ``working_set`` (one layer's rematerialized intermediates during its backward)."""

    saved: int
    working_set: int

    @property
    def total(self) -> int:
        return self.saved + self.working_set


def training_activations(
    local_cfg: ModelConfig, *, rows: int, length: int, dtype: str, param_dtype: str | None, remat: str, chunk_size: int
) -> Activations:
    """Activations of ``rows`` sequences of ``length`` tokens on one chip (``local_cfg`` from
    ``local_model_config``); see the module docstring for the method."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, chunk_size=chunk_size)
    saved = _per_row(local_cfg, length, remat=remat, **kw)
    working = 0
    if remat != "none":
        one = dataclasses.replace(local_cfg, num_hidden_layers=1, sliding_windows=local_cfg.sliding_windows[:1])
        working = max(_per_row(one, length, remat="none", **kw) - _per_row(one, length, remat=remat, **kw), 0)
    return Activations(saved=rows * saved, working_set=rows * working)


def prefill_working_set(local_cfg: ModelConfig, *, rows: int, length: int, dtype: str, kernel: str = "xla") -> int:
    """Transient bytes of one layer's forward over ``rows`` prompts of ``length`` tokens on one chip (no backward,
    so nothing is stored across layers): the layer's q/k/v, attention output and MLP activations, and with
    ``kernel="xla"`` (``layers.attention``) the float32 scores and compute-dtype probabilities [H, T, T], live
    together (an upper bound for ``layers.causal_attention``, whose query blocks together hold (n + 1) / 2n of
    them). A flash kernel (splash, cuDNN) keeps its score tiles on chip and writes only the output and the float32
    log-sum-exp [H, T]:

        xla:    rows * (H * T * T * (4 + c) + T * ((2 * H + 2 * K) * D + 3 * M + 2 * E) * c)     c = compute bytes
        flash:  rows * (H * T * 4          + T * ((2 * H + 2 * K) * D + 3 * M + 2 * E) * c)
    """
    c = jnp.dtype(dtype).itemsize
    h, k, d = local_cfg.num_attention_heads, local_cfg.num_key_value_heads, local_cfg.head_dim
    m, e, t = local_cfg.intermediate_size, local_cfg.hidden_size, length
    scores = h * t * t * (4 + c) if kernel == "xla" else h * t * 4
    return rows * (scores + t * ((2 * h + 2 * k) * d + 3 * m + 2 * e) * c)


def score_residual_bytes(local_cfg: ModelConfig, *, rows: int, length: int, dtype: str) -> int:
    """Bytes one layer's ``layers.causal_attention`` keeps for its backward beyond q/k/v and the output, for
    ``rows`` sequences of ``length`` tokens: per query block of b queries over its first ``hi`` keys, the float32
    probabilities (``masked_softmax``'s residual), their compute-dtype copy (the value product's) for all H heads,
    and the boolean mask repeated for the G = H / K query heads of a kv head:

        rows * P * (H * (4 + c) + G),   P = sum over blocks of b * hi   (T * T without blocks)

    A flash kernel saves none of these, only the float32 log-sum-exp [H, T] (``flash_residual_bytes``)."""
    from spar_jax.models.layers import causal_block

    c = jnp.dtype(dtype).itemsize
    h, g = local_cfg.num_attention_heads, local_cfg.num_attention_heads // local_cfg.num_key_value_heads
    t, b = length, causal_block(length)
    elements = t * t if t <= b else sum((min(lo + b, t) - lo) * min(lo + b, t) for lo in range(0, t, b))
    return rows * elements * (h * (4 + c) + g)


def flash_residual_bytes(local_cfg: ModelConfig, *, rows: int, length: int) -> int:
    """Bytes one layer's flash attention keeps for its backward beyond q/k/v and the output: the float32
    log-sum-exp of every query row and head, [rows, H, T]."""
    return rows * local_cfg.num_attention_heads * length * 4


def with_kernel(
    act: "Activations", local_cfg: ModelConfig, *, rows: int, length: int, dtype: str, remat: str, kernel: str
) -> tuple["Activations", str]:
    """``act`` (measured on the XLA attention) for ``kernel``: with a flash kernel ("splash", "cudnn") the score
    residuals (``score_residual_bytes``) leave what each remat policy keeps of them (all L layers' with "none", one
    layer's working set with "full") and the log-sum-exp takes their place. Returns (activations, note); the note
    is non-empty when the policy ("dots", "dots_no_batch") keeps part of the scores and the XLA bytes are kept."""
    if kernel == "xla":
        return act, ""
    per_layer = score_residual_bytes(local_cfg, rows=rows, length=length, dtype=dtype) - flash_residual_bytes(
        local_cfg, rows=rows, length=length
    )
    if remat == "none":
        return Activations(act.saved - local_cfg.num_hidden_layers * per_layer, act.working_set), ""
    if remat == "full":
        return Activations(act.saved, max(act.working_set - per_layer, 0)), ""
    return act, (
        f"remat={remat} saves the attention scores' dot outputs; activations are counted as with the "
        f"materialized (xla) attention, an upper bound for {kernel}"
    )
