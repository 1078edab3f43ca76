"""Which attention kernel a model runs, and the dispatch of its causal self-attention to it.

Shapes: B batch, T tokens, H query heads, K kv heads, D head dim.

``attention_impl`` (a per-model config key; ``Transformer(attention_impl=...)``):

- ``"xla"``: the model's own formula in XLA (``models.layers.causal_attention``: scores materialized per query
  block), passed in as ``xla_attention``;
- ``"splash"``: the Pallas TPU splash kernel (``kernels.splash``), TPU only (or the Pallas interpreter);
- ``"cudnn"``: cuDNN flash attention through ``jax.nn.dot_product_attention``, GPU only, bfloat16/float16;
- ``"auto"``: splash on TPU, cudnn on GPU, xla elsewhere.

A kernel serves the causal self-attention of a training forward and of a prefill into an empty cache (every query's
keys are this call's keys). Everything else runs the XLA formula by rule: decode steps and prefills into a cache
that holds tokens already (queries against cached keys), and the last layer of a last-position-only prefill (one
query). What a kernel cannot express in the cases it serves is refused with a ``ValueError`` naming the key when the
kernel was asked for by name, and falls back to xla when ``"auto"`` chose it (docs/kernels.md has the table).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from spar_jax.kernels import splash
from spar_jax.parallel import ShardingContext

IMPLS = ("auto", "xla", "splash", "cudnn")
_BACKEND_KERNEL = {"tpu": "splash", "gpu": "cudnn"}
_KERNEL_BACKEND = {"splash": "tpu", "cudnn": "gpu"}


@dataclasses.dataclass(frozen=True)
class AttentionKernel:
    """A resolved attention kernel.

    Attributes:
      impl: "xla", "splash" or "cudnn".
      strict: True when asked for by name (a case the kernel cannot express raises), False when ``"auto"`` chose it
        (such a case runs xla).
      interpret: splash only: run the kernel in the Pallas interpreter (any backend; for tests).
      block: splash only: the largest kernel tile, in tokens.
    """

    impl: str = "xla"
    strict: bool = True
    interpret: bool = False
    block: int = 512

    def unsupported(self, reason: str) -> str:
        """ "xla" for a case this kernel cannot express when chosen by "auto"; raises when asked for by name."""
        if self.strict:
            raise ValueError(f"attention_impl={self.impl!r} {reason}; set attention_impl to 'xla' (or 'auto')")
        return "xla"


def resolve(impl: str | AttentionKernel, backend: str | None = None) -> AttentionKernel:
    """The kernel for ``impl`` on ``backend`` (default: jax's default backend).

    An ``AttentionKernel`` passes through unchanged. A kernel that cannot run on the backend is refused, except splash
    in interpret mode (pass ``AttentionKernel("splash", interpret=True)``).
    """
    if isinstance(impl, AttentionKernel):
        if impl.impl not in IMPLS[1:]:
            raise ValueError(f"attention_impl={impl.impl!r}; choose one of {', '.join(IMPLS)}")
        return impl
    if impl not in IMPLS:
        raise ValueError(f"attention_impl={impl!r}; choose one of {', '.join(IMPLS)}")
    backend = backend or jax.default_backend()
    if impl == "auto":
        return AttentionKernel(_BACKEND_KERNEL.get(backend, "xla"), strict=False)
    needs = _KERNEL_BACKEND.get(impl)
    if needs is not None and backend != needs:
        raise ValueError(
            f"attention_impl={impl!r} runs on {needs.upper()} only and this process runs on {backend}; "
            "use 'xla' or 'auto'"
        )
    return AttentionKernel(impl)


def causal_self_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    kernel: AttentionKernel,
    xla_attention: Callable,
    valid: jax.Array,
    segment_ids: jax.Array | None = None,
    window=0,
    windows: tuple[int, ...] = (0,),
    shard: ShardingContext | None = None,
) -> jax.Array:
    """Self-attention where query t and key t are the same token, with ``kernel``.

    Args:
      q: [B, T, H, D]; k, v: [B, K, T, D]; mask: bool [B, T, T], the model's full mask (causal, padding, packed
        segments, this layer's window): what xla and cudnn apply.
      xla_attention: ``(q, k, v, mask) -> [B, T, H, D]``, the formula run for "xla" and for the fallbacks.
      valid: bool [B, T] real tokens; segment_ids: None or int [B, T] packed shared-prefix segments; window: this
        layer's sliding window in tokens (0 = none), a Python int or a traced int32 (a layer of a scan) taking one of
        the static ``windows``. The structured form of ``mask``, which splash needs.
    Returns:
      [B, T, H, D] in q's dtype.
    """
    impl = kernel.impl
    if impl == "splash":
        impl = _splash_case(kernel, segment_ids, windows)
    elif impl == "cudnn" and q.dtype == jnp.float32:
        impl = kernel.unsupported("needs bfloat16 or float16 activations (cuDNN flash attention has no float32)")
    if impl == "xla":
        return xla_attention(q, k, v, mask)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, mask)

    def run(w: int) -> jax.Array:
        return splash.causal_attention(
            q,
            k,
            v,
            valid=valid,
            segment_ids=segment_ids,
            window=w,
            block=kernel.block,
            interpret=kernel.interpret,
            shard=shard,
        )

    if isinstance(window, int):
        return run(window)
    choices = sorted(set(windows))
    if len(choices) == 1:
        return run(choices[0])
    return jax.lax.switch(jnp.searchsorted(jnp.asarray(choices), window), [lambda w=w: run(w) for w in choices])


def _splash_case(kernel: AttentionKernel, segment_ids, windows: tuple[int, ...]) -> str:
    """ "splash", or the outcome of ``kernel.unsupported`` for a mask splash cannot express."""
    if segment_ids is not None and any(windows):
        return kernel.unsupported(
            "cannot combine sliding windows with packed shared-prefix rows (the windows count positions, the "
            "kernel's count slots); or train without share_prompt"
        )
    return "splash"


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, implementation: str = "cudnn"
) -> jax.Array:
    """``jax.nn.dot_product_attention`` with the model's full mask: q [B, T, H, D]; k, v [B, K, T, D] head-major;
    mask bool [B, T, T]. ``is_causal`` lets cuDNN skip the tiles above the diagonal. Every token also sees itself,
    which changes only the rows of padding queries (a real token's mask holds its own slot): no row is empty, so
    no padding token's output can be NaN. ``implementation`` is "cudnn" in the model (GPU only); "xla" runs the same
    call anywhere."""
    mask = mask | jnp.eye(mask.shape[-1], dtype=bool)
    out = jax.nn.dot_product_attention(
        q,
        k.transpose(0, 2, 1, 3),
        v.transpose(0, 2, 1, 3),
        mask=mask[:, None],
        is_causal=True,
        implementation=implementation,
    )
    return out.astype(q.dtype)
