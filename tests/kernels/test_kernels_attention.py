"""Attention kernels: the splash kernel (Pallas interpreter on CPU) against the XLA formula, values and gradients;
the ``attention_impl`` choices per backend; refusals and fallbacks; a whole model with splash equals xla."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax import config as C
from spar_jax.kernels import attention as A
from spar_jax.kernels import splash
from spar_jax.models import from_pretrained
from spar_jax.models import layers as L
from spar_jax.parallel import ShardingContext, make_mesh

from tiny_checkpoints import write_checkpoint

INTERPRET = A.AttentionKernel("splash", interpret=True)
B, T, H, K, D = 2, 40, 4, 2, 16  # T is not a multiple of the kernel's tile: the wrapper pads it


def _qkv(seed=0, t=T):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, t, H, D)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, K, t, D)), jnp.float32) for _ in range(2))
    return q, k, v


def _packed_segments(prefix, chosen, rejected, t=T):
    """One row as pack_pair lays it out: 0 prefix, 1 chosen, 2 rejected, -1 right padding."""
    seg = np.full(t, -1, np.int32)
    seg[:prefix], seg[prefix : prefix + chosen] = 0, 1
    seg[prefix + chosen : prefix + chosen + rejected] = 2
    return seg


def _dense_mask(valid, segments=None, window=0):
    """The model's mask, as ``Transformer.hidden_states`` builds it for a cacheless forward: real keys, causal,
    packed segments (windows then count positions within the branch), a window."""
    t = valid.shape[1]
    mask = valid[:, None, :] & np.tril(np.ones((t, t), bool))[None]
    pos = np.broadcast_to(np.arange(t), valid.shape)
    if segments is not None:
        mask &= (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
        pos = mask.sum(-1) - 1
    if window:
        mask &= (pos[:, :, None] - pos[:, None, :]) < window
    return mask


CASES = {
    # left padding (a sampler prefill) on row 0, right padding (a training batch) on row 1
    "causal_padding": dict(valid=np.arange(T)[None] >= np.array([[7], [0]]), window=0),
    "causal_padding_end": dict(valid=np.arange(T)[None] < np.array([[T], [29]]), window=0),
    "window": dict(valid=np.arange(T)[None] >= np.array([[3], [0]]), window=6),
    "packed": dict(segments=np.stack([_packed_segments(9, 14, 11), _packed_segments(5, 20, 15)]), window=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_splash_equals_xla_values_and_gradients(case):
    c = CASES[case]
    segments = c.get("segments")
    valid = segments >= 0 if segments is not None else c["valid"]
    mask = jnp.asarray(_dense_mask(valid, segments, c["window"]))
    q, k, v = _qkv(seed=len(case))
    # Output weights zero on padding queries, whose outputs are arbitrary in both.
    w = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, D)) * valid[:, :, None, None], jnp.float32)
    seg = None if segments is None else jnp.asarray(segments)

    def xla(q, k, v):
        return jnp.sum(w * L.causal_attention(q, k, v, mask, block=16))

    def kernel(q, k, v):
        out = splash.causal_attention(
            q, k, v, valid=jnp.asarray(valid), segment_ids=seg, window=c["window"], interpret=True
        )
        return jnp.sum(w * out)

    want_val, want_grads = jax.jit(jax.value_and_grad(xla, argnums=(0, 1, 2)))(q, k, v)
    got_val, got_grads = jax.jit(jax.value_and_grad(kernel, argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(float(got_val), float(want_val), rtol=1e-5)
    for name, got, want in zip("qkv", got_grads, want_grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, err_msg=f"d{name}")
    # The values themselves, real queries only.
    got = splash.causal_attention(
        q, k, v, valid=jnp.asarray(valid), segment_ids=seg, window=c["window"], interpret=True
    )
    want = L.attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=2e-6)


def test_splash_under_shard_map_equals_one_device():
    # Batch rows over data, heads over tensor (8 fake CPU devices): one kernel call per device.
    mesh = make_mesh((2, 1, 2), devices=jax.devices()[:4])
    q, k, v = _qkv(seed=3)
    valid = jnp.asarray(np.arange(T)[None] >= np.array([[5], [0]]))
    one = splash.causal_attention(q, k, v, valid=valid, interpret=True)
    sharded = jax.jit(
        lambda q, k, v: splash.causal_attention(q, k, v, valid=valid, interpret=True, shard=ShardingContext(mesh))
    )(q, k, v)
    np.testing.assert_allclose(np.asarray(sharded)[np.asarray(valid)], np.asarray(one)[np.asarray(valid)], atol=1e-6)


def test_auto_picks_per_backend_and_named_kernels_need_their_backend():
    assert jax.default_backend() == "cpu"
    assert A.resolve("auto") == A.AttentionKernel("xla", strict=False)
    assert A.resolve("auto", backend="tpu") == A.AttentionKernel("splash", strict=False)
    assert A.resolve("auto", backend="gpu") == A.AttentionKernel("cudnn", strict=False)
    assert A.resolve("xla") == A.AttentionKernel("xla")
    assert A.resolve("splash", backend="tpu").impl == "splash"
    for impl, hardware in (("splash", "TPU"), ("cudnn", "GPU")):
        with pytest.raises(ValueError, match=f"attention_impl='{impl}' runs on {hardware} only .* runs on cpu"):
            A.resolve(impl)
    with pytest.raises(ValueError, match="attention_impl='flash'; choose one of auto, xla, splash, cudnn"):
        A.resolve("flash")
    assert A.resolve(INTERPRET) is INTERPRET  # the interpreter runs anywhere


def test_config_carries_and_validates_attention_impl():
    c = C.default_config()
    assert C.parse(c).actor.attention_impl == "auto"
    c.refiner.attention_impl = "splash"
    assert C.parse(c).refiner.attention_impl == "splash"
    c.actor.attention_impl = "flash"
    with pytest.raises(ValueError, match=r"config key 'actor.attention_impl' is 'flash'; choose one of auto, xla"):
        C.parse(c)


def test_cases_a_kernel_cannot_express_are_refused_by_name_and_fall_back_under_auto():
    q, k, v = _qkv(seed=4)
    segments = np.stack([_packed_segments(9, 14, 11)] * 2)
    valid = segments >= 0
    mask = jnp.asarray(_dense_mask(valid, segments, window=6))
    kw = dict(
        xla_attention=L.causal_attention,
        valid=jnp.asarray(valid),
        segment_ids=jnp.asarray(segments),
        window=6,
        windows=(6, 6),
    )
    with pytest.raises(ValueError, match="attention_impl='splash' cannot combine sliding windows with packed"):
        A.causal_self_attention(q, k, v, mask, kernel=INTERPRET, **kw)
    auto_splash = A.AttentionKernel("splash", strict=False, interpret=True)
    want = L.causal_attention(q, k, v, mask)
    np.testing.assert_array_equal(
        np.asarray(A.causal_self_attention(q, k, v, mask, kernel=auto_splash, **kw)), np.asarray(want)
    )
    # cuDNN flash attention has no float32: refused by name, xla under auto.
    with pytest.raises(ValueError, match="attention_impl='cudnn' needs bfloat16 or float16"):
        A.causal_self_attention(q, k, v, mask, kernel=A.AttentionKernel("cudnn"), **kw)
    got = A.causal_self_attention(q, k, v, mask, kernel=A.AttentionKernel("cudnn", strict=False), **kw)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_cudnn_call_translates_the_models_mask():
    # The call the cudnn kernel makes, run by jax's XLA implementation of the same function (cuDNN itself needs a
    # GPU): layouts, the causal flag and the model's mask give the model's attention on every real query, and the
    # padding queries (which see no real key) stay finite.
    q, k, v = _qkv(seed=5)
    segments = np.stack([_packed_segments(9, 14, 11), _packed_segments(5, 20, 15)])
    for valid, seg, window in ((CASES["causal_padding"]["valid"], None, 6), (segments >= 0, segments, 0)):
        mask = jnp.asarray(_dense_mask(valid, seg, window))
        got = np.asarray(A.cudnn_attention(q, k, v, mask, implementation="xla"))
        np.testing.assert_allclose(got[valid], np.asarray(L.attention(q, k, v, mask))[valid], atol=2e-6)
        assert np.isfinite(got).all()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    # mistral: a window of 6 tokens in every layer; qwen2 here: layer 0 unlimited, layer 1 a window of 6 (the scan
    # picks the layer's kernel at run time).
    overrides = {"qwen2": dict(use_sliding_window=True, sliding_window=6, max_window_layers=1)}
    out = {}
    for arch in ("llama", "mistral", "qwen2"):
        path = write_checkpoint(tmp_path_factory.mktemp(arch), arch, seed=7, **overrides.get(arch, {}))
        out[arch] = from_pretrained(path), from_pretrained(path, attention_impl=INTERPRET)
    return out


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_model_forward_and_prefill_with_splash_equal_xla(arch, tiny_models):
    xla, kernel = tiny_models[arch]
    assert xla.attention.impl == "xla" and kernel.attention is INTERPRET
    assert arch != "qwen2" or kernel.config.layer_windows().tolist() == [0, 6]
    rng = np.random.default_rng(2)
    ids = rng.integers(3, 256, size=(2, 20)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    mask[0, :6] = False  # left-padded
    real = mask
    np.testing.assert_allclose(np.asarray(kernel(ids, mask))[real], np.asarray(xla(ids, mask))[real], atol=2e-5)

    def prefill(model):  # the sampler's prefill: an empty cache with spare slots, the last position's state only
        cache = model.init_cache(2, 32)
        return model.hidden_states(ids, mask, cache=cache, last_only=True, empty_cache=True)

    (got, got_cache), (want, want_cache) = jax.jit(prefill)(kernel), jax.jit(prefill)(xla)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    # The cache's real slots (a padding token's keys and values come from its arbitrary attention output).
    slots = np.pad(mask, ((0, 0), (0, 12)))
    np.testing.assert_array_equal(np.asarray(got_cache.valid), slots)
    k_real = np.asarray(got_cache.k).transpose(0, 2, 1, 4, 3)[:, :, slots]  # [L, K, B, S, D] -> real slots
    np.testing.assert_allclose(k_real, np.asarray(want_cache.k).transpose(0, 2, 1, 4, 3)[:, :, slots], atol=2e-5)
    v_real = np.asarray(got_cache.v).transpose(0, 2, 1, 3, 4)[:, :, slots]
    np.testing.assert_allclose(v_real, np.asarray(want_cache.v).transpose(0, 2, 1, 3, 4)[:, :, slots], atol=2e-5)


def test_model_packed_training_forward_and_gradient_with_splash_equal_xla(tiny_models):
    # A packed DPO row (shared prompt, chosen, rejected, padding): hidden states and the gradient of a loss on the
    # real positions with respect to every parameter.
    from flax import nnx

    xla, kernel = tiny_models["llama"]
    seg = np.stack([_packed_segments(6, 7, 5, t=24), _packed_segments(4, 9, 9, t=24)])
    ids = np.random.default_rng(3).integers(3, 256, size=seg.shape).astype(np.int32)
    mask = seg >= 0

    def loss(model):
        hidden, _ = model.hidden_states(ids, mask, segment_ids=seg)
        return jnp.sum(jnp.where(mask[..., None], hidden, 0.0) ** 2)

    def value_and_grad(model):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return jax.jit(jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p, rest))))(params)

    (got, got_g), (want, want_g) = value_and_grad(kernel), value_and_grad(xla)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
