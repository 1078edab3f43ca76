"""Decoder internals: KV-cache decoding equals the full forward, depth-independent program size, remat, bf16."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spar_jax.models import Transformer, config_from_hf_dict, cpu_layout, from_pretrained
from spar_jax.models import layers as L
from spar_jax.models.cpu_layout import CPU, fuse_layer
from spar_jax.models.layout import PLAIN
from spar_jax.models.transformer import split_layers

from tiny_checkpoints import hf_config, write_checkpoint


@pytest.mark.parametrize("arch", ["llama", "mistral", "glm"])
def test_cached_decoding_matches_full_forward(arch, tmp_path):
    model = from_pretrained(write_checkpoint(tmp_path / arch, arch, seed=11))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 256, size=(2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :4] = 0  # row 0 is left-padded
    full = np.asarray(model(ids, mask))
    cache = model.init_cache(2, 16)
    prefill, cache = model(ids[:, :8], mask[:, :8], cache=cache)
    steps = [np.asarray(prefill)]
    for t in range(8, 12):
        logits, cache = model(ids[:, t : t + 1], mask[:, t : t + 1], cache=cache)
        steps.append(np.asarray(logits))
    got = np.concatenate(steps, axis=1)
    np.testing.assert_allclose(got[0, 4:], full[0, 4:], atol=2e-5)
    np.testing.assert_allclose(got[1], full[1], atol=2e-5)
    assert int(cache.end) == 12 and cache.next_position.tolist() == [8, 12]


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "glm"])
def test_last_only_prefill_gives_the_last_position_and_the_same_cache(arch, tmp_path):
    # last_only: the last layer runs its queries, attention, output projection and MLP for the last position only,
    # but still writes every position's keys and values. Scanned, unrolled and fused layers; with and without a cache.
    model = from_pretrained(write_checkpoint(tmp_path / arch, arch, seed=5))
    rng = np.random.default_rng(1)
    ids = rng.integers(3, 256, size=(3, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    layers = model.unstacked_layers()

    @functools.partial(jax.jit, static_argnames=("last_only", "layout"))
    def prefill(lp, last_only, layout):
        cache = model.init_cache(3, 10, per_layer=lp is not None)
        return model.hidden_states(ids, mask, cache=cache, layer_params=lp, layout=layout, last_only=last_only)

    for lp, layout in ((None, PLAIN), (layers, PLAIN), (tuple(fuse_layer(p) for p in layers), CPU)):
        (full, full_cache), (last, last_cache) = prefill(lp, False, layout), prefill(lp, True, layout)
        assert last.shape == (3, 1, model.config.hidden_size)
        np.testing.assert_allclose(np.asarray(last), np.asarray(full[:, -1:]), rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(last_cache), jax.tree.leaves(full_cache), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)  # other fusions
        no_cache, _ = model.hidden_states(ids, mask, layer_params=lp, layout=layout, last_only=True)
        np.testing.assert_allclose(np.asarray(no_cache), np.asarray(full[:, -1:]), rtol=1e-5, atol=1e-5)


def test_last_only_prefill_skips_the_last_layers_work(tmp_path):
    # Compiled FLOPs: the last layer's q, o and MLP products run for 1 of T positions instead of T. (Unrolled layers:
    # XLA's cost analysis counts a scan's body once.)
    model = from_pretrained(write_checkpoint(tmp_path / "llama", "llama", seed=5))
    cfg = model.config
    b, t = 2, 64
    ids = jnp.ones((b, t), jnp.int32)
    layers = model.unstacked_layers()

    def flops(last_only):
        def prefill(lp, x):
            cache = model.init_cache(b, t, per_layer=True)
            return model.hidden_states(x, cache=cache, layer_params=lp, last_only=last_only)[0]

        return jax.jit(prefill).lower(layers, ids).compile().cost_analysis()["flops"]

    e, hd = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim
    skipped = 2 * b * (t - 1) * (2 * e * hd + 3 * e * cfg.intermediate_size)
    assert flops(False) - flops(True) >= 0.9 * skipped


def _hlo_size(layers: int) -> int:
    cfg = config_from_hf_dict(hf_config("llama", num_hidden_layers=layers))
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    lowered = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, ids)
    return len(lowered.as_text())


def test_program_size_does_not_grow_with_depth():
    # Layers run under lax.scan: the program for 80 layers is the 2-layer program with other constants.
    small, deep = _hlo_size(2), _hlo_size(80)
    assert abs(deep - small) < 0.02 * small, (small, deep)


def test_remat_gives_identical_gradients(tmp_path):
    directory = write_checkpoint(tmp_path / "m", "qwen2", seed=12)
    ids = np.random.default_rng(1).integers(3, 256, size=(2, 9)).astype(np.int32)

    def grads(remat):
        model = from_pretrained(directory, remat=remat)
        graphdef, state = nnx.split(model)

        def loss(s):
            return jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, s)(ids))[..., 5])

        return jax.grad(loss)(state)

    plain, remat = grads("none"), grads("full")
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_unrolled_layers_give_the_scanned_loss_and_gradients(remat, tmp_path):
    # scan_layers=False (training unrolled over unstacked_layers()) computes the same function as the scan.
    directory = write_checkpoint(tmp_path / "m", "mistral", seed=14)  # mistral: a per-layer sliding window
    ids = np.random.default_rng(3).integers(3, 256, size=(2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0

    def value_and_grads(scan_layers):
        model = from_pretrained(directory, remat=remat, scan_layers=scan_layers)
        graphdef, state = nnx.split(model)

        def loss(s):
            return jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, s)(ids, mask))[..., 7])

        assert ("stablehlo.while" in jax.jit(loss).lower(state).as_text()) == scan_layers
        return jax.value_and_grad(loss)(state)

    (scanned, g_scanned), (unrolled, g_unrolled) = value_and_grads(True), value_and_grads(False)
    np.testing.assert_allclose(float(unrolled), float(scanned), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_scanned), jax.tree.leaves(g_unrolled), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


def test_the_gradient_of_unstacking_the_layers_is_one_concatenate():
    # Indexing layer i out of the stack has a zero-padded transpose: L full-size pads summed, which XLA:CPU does not
    # fuse (docs/performance.md#unrolled-training-layers); split_layers is built from a split, whose transpose is a
    # concatenate.
    stacked = {"w": jnp.ones((4, 3, 5))}

    def total(stacked):
        return sum(jnp.sum(p["w"] * i) for i, p in enumerate(split_layers(stacked)))

    ops = {eqn.primitive.name for eqn in jax.make_jaxpr(jax.grad(total))(stacked).jaxpr.eqns}
    assert "concatenate" in ops and "pad" not in ops, ops
    np.testing.assert_array_equal(np.asarray(jax.grad(total)(stacked)["w"])[:, 0, 0], [0, 1, 2, 3])


def test_bfloat16_compute_is_close_to_float32(tmp_path):
    directory = write_checkpoint(tmp_path / "m", "llama", seed=13)
    ids = np.random.default_rng(2).integers(3, 256, size=(1, 10)).astype(np.int32)
    f32 = np.asarray(from_pretrained(directory)(ids))
    bf16 = from_pretrained(directory, dtype="bfloat16", param_dtype="float32")
    assert bf16.layers.q[...].dtype == jnp.float32
    out = np.asarray(bf16(ids))
    assert out.dtype == np.float32
    assert np.abs(out - f32).max() < 0.1 * np.abs(f32).max()
    assert (out.argmax(-1) == f32.argmax(-1)).mean() > 0.8


def test_bad_remat_and_dtype_are_clear_errors(tmp_path):
    directory = write_checkpoint(tmp_path / "m", "llama")
    with pytest.raises(ValueError, match="remat='sometimes'"):
        from_pretrained(directory, remat="sometimes")
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        from_pretrained(directory, dtype="int8")


def test_masked_softmax_gradient_equals_autodiff_and_keeps_only_the_probabilities():
    keys = jax.random.split(jax.random.key(4), 2)
    scores = 3 * jax.random.normal(keys[0], (2, 1, 6, 5))
    mask = jnp.tril(jnp.ones((6, 5), bool), k=-1)[None, None].repeat(2, axis=0)  # row 0 fully masked
    cotangent = jax.random.normal(keys[1], scores.shape)

    def formula(scores):
        return jax.nn.softmax(jnp.where(mask, scores, L.MASK_VALUE), axis=-1)

    got, got_vjp = jax.vjp(lambda s: L.masked_softmax(s, mask), scores)
    want, want_vjp = jax.vjp(formula, scores)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-7)
    np.testing.assert_allclose(np.asarray(got_vjp(cotangent)[0]), np.asarray(want_vjp(cotangent)[0]), atol=1e-6)
    assert np.allclose(np.asarray(got)[:, :, 0], 1 / 5) and not np.asarray(got_vjp(cotangent)[0])[:, :, 0].any()
    # What the backward pass keeps: the probabilities and the mask, not the exponentials or the quotient's pieces
    # (autodiff of the formula keeps four score-sized arrays).
    from jax._src.ad_checkpoint import saved_residuals

    saved = [aval.shape for aval, _ in saved_residuals(lambda s: L.masked_softmax(s, mask).sum(), scores)]
    assert sorted(saved) == [scores.shape, scores.shape], saved
    assert len([a for a, _ in saved_residuals(lambda s: formula(s).sum(), scores) if a.shape == scores.shape]) >= 3


def test_gated_mlp_gradient_equals_autodiff_of_the_formula():
    # gated_mlp's hand-written backward against jax.grad of the plain SwiGLU formula.
    keys = jax.random.split(jax.random.key(3), 5)
    x = jax.random.normal(keys[0], (2, 5, 8))
    weights = (
        jax.random.normal(keys[1], (8, 12)),
        jax.random.normal(keys[2], (8, 12)),
        jax.random.normal(keys[3], (12, 8)),
    )
    cotangent = jax.random.normal(keys[4], (2, 5, 8))

    def formula(x, gate, up, down):
        g, u = x @ gate, x @ up
        return (g / (1 + jnp.exp(-g)) * u) @ down

    got_out, got_vjp = jax.vjp(L.gated_mlp, x, *weights)
    want_out, want_vjp = jax.vjp(formula, x, *weights)
    np.testing.assert_allclose(np.asarray(got_out), np.asarray(want_out), rtol=1e-5, atol=1e-5)
    for got, want in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_attention_gradient_equals_autodiff_of_the_formula():
    # attention's hand-written backward against jax.grad of plain grouped-query attention, with a causal mask, a
    # left-padded row and a fully masked (padding) query row.
    b, t, h, kh, d = 2, 5, 6, 2, 4
    keys = jax.random.split(jax.random.key(4), 4)
    q = jax.random.normal(keys[0], (b, t, h, d))
    k, v = jax.random.normal(keys[1], (2, b, kh, t, d))
    cotangent = jax.random.normal(keys[2], (b, t, h, d))
    mask = np.tril(np.ones((t, t), bool))[None].repeat(b, 0)
    mask[1, :, :2] = False  # row 1 is left-padded by two tokens: its first two queries see nothing

    def formula(q, k, v):
        kr, vr = jnp.repeat(k, h // kh, axis=1), jnp.repeat(v, h // kh, axis=1)  # [B, H, S, D]
        scores = jnp.einsum("bthd,bhsd->bhts", q, kr) / np.sqrt(d)
        probs = jax.nn.softmax(jnp.where(mask[:, None], scores, L.MASK_VALUE), axis=-1)
        return jnp.einsum("bhts,bhsd->bthd", probs, vr)

    got_out, got_vjp = jax.vjp(lambda q, k, v: L.attention(q, k, v, jnp.asarray(mask)), q, k, v)
    want_out, want_vjp = jax.vjp(formula, q, k, v)
    np.testing.assert_allclose(np.asarray(got_out), np.asarray(want_out), rtol=1e-5, atol=1e-5)
    for got, want in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(got_vjp(cotangent)[0][1, :2]).max()) == 0.0  # padding queries get no gradient


@pytest.mark.parametrize("d, s, min_rows", [(32, 48, 1), (16, 16, 1), (4, 48, 1), (32, 40, 1), (32, 48, 16)])
def test_decode_attention_equals_the_formula(d, s, min_rows, monkeypatch):
    # One query per row over a transposed key cache of s slots: invalid slots, a row that sees a single slot and one
    # that sees none (uniform average, as in attention). (4, 48) and (32, 40) are not multiples of the chunk, and 3
    # rows are under the default row minimum: the batched-dot fallback.
    monkeypatch.setattr(cpu_layout, "DECODE_LOOP_MIN_ROWS", min_rows)
    b, h, kh = 3, 6, 2
    keys = jax.random.split(jax.random.key(6), 3)
    q = jax.random.normal(keys[0], (b, 1, h, d))
    k, v = jax.random.normal(keys[1], (2, b, kh, s, d))
    mask = np.ones((b, 1, s), bool)
    mask[0, 0, s // 2 :] = False
    mask[1, 0, :] = False
    mask[1, 0, 3] = True
    mask[2, 0, :] = False

    kr, vr = jnp.repeat(k, h // kh, axis=1), jnp.repeat(v, h // kh, axis=1)  # [B, H, S, D]
    scores = jnp.einsum("bthd,bhsd->bhts", q, kr) / np.sqrt(d)
    probs = jax.nn.softmax(jnp.where(jnp.asarray(mask)[:, None], scores, L.MASK_VALUE), axis=-1)
    want = jnp.einsum("bhts,bhsd->bthd", probs, vr)
    got = jax.jit(cpu_layout.decode_attention)(q, jnp.swapaxes(k, -1, -2), v, jnp.asarray(mask))
    assert got.shape == want.shape and got.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(vr[1, :, 3])[None], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(vr[2].mean(1))[None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [3, 4, 11])
def test_causal_attention_equals_attention_values_and_gradients(t):
    # Query blocks of 4 over t tokens (ragged last block at 11, a single block at 3 and 4), with a left-padded row and
    # a 3-token window on top of the causal mask: the skipped blocks above the diagonal change nothing.
    b, h, kh, d = 2, 6, 2, 4
    keys = jax.random.split(jax.random.key(5), 3)
    q = jax.random.normal(keys[0], (b, t, h, d))
    k, v = jax.random.normal(keys[1], (2, b, kh, t, d))
    cotangent = jax.random.normal(keys[2], (b, t, h, d))
    pos = np.arange(t)
    mask = np.broadcast_to((pos[:, None] >= pos[None]) & (pos[:, None] - pos[None] < 3), (b, t, t)).copy()
    mask[1, :, :2] = False
    # Queries that see no key at all (row 1's two padding tokens) average whatever keys their block holds: a
    # different, equally meaningless value, which nothing downstream reads (no loss and no other query uses it).
    seen = mask.any(-1)  # [B, T]
    assert not seen[1, :2].any() and seen.sum() == b * t - 2
    cotangent = cotangent * seen[:, :, None, None]
    mask = jnp.asarray(mask)
    got_out, got_vjp = jax.vjp(lambda q, k, v: L.causal_attention(q, k, v, mask, block=4), q, k, v)
    want_out, want_vjp = jax.vjp(lambda q, k, v: L.attention(q, k, v, mask), q, k, v)
    np.testing.assert_allclose(np.asarray(got_out)[seen], np.asarray(want_out)[seen], rtol=1e-6, atol=1e-6)
    for got, want in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_long_forward_in_causal_blocks_matches_the_cached_prefill(arch, tmp_path):
    # 300 tokens: the forward without a cache runs causal_attention in blocks of 75; a prefill into a cache with a spare
    # slot runs plain attention over all slots. Mistral's tiny config adds a sliding window.
    model = from_pretrained(write_checkpoint(tmp_path / arch, arch, seed=12))
    ids = np.random.default_rng(1).integers(3, 256, size=(2, 300)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :37] = 0
    full = np.asarray(model(ids, mask))
    cached, _ = model(ids, mask, cache=model.init_cache(2, 301))
    assert L.causal_block(300) == 75
    np.testing.assert_allclose(full[0], np.asarray(cached)[0], atol=2e-5)
    np.testing.assert_allclose(full[1, 37:], np.asarray(cached)[1, 37:], atol=2e-5)
    # A prefill into a cache of exactly its 200 tokens runs causal_attention too (blocks of 50).
    exact, _ = model(ids[:, :200], mask[:, :200], cache=model.init_cache(2, 200))
    np.testing.assert_allclose(np.asarray(exact)[0], full[0, :200], atol=2e-5)
    np.testing.assert_allclose(np.asarray(exact)[1, 37:], full[1, 37:200], atol=2e-5)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_prefill_into_an_empty_cache_attends_over_its_own_keys(arch, tmp_path):
    # empty_cache=True (the sampler's prefill into a cache sized for the tokens to come): attention runs over the
    # prompt's own keys in causal blocks instead of over every slot. Same hidden states and the same cache; fewer
    # compiled FLOPs (unrolled layers: XLA's cost analysis counts a scan's body once).
    model = from_pretrained(write_checkpoint(tmp_path / arch, arch, seed=13))
    cfg = model.config
    b, t, slots = 2, 200, 260
    ids = np.random.default_rng(2).integers(3, 256, size=(b, t)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :37] = 0
    layers = model.unstacked_layers()

    def prefill(lp, x, m, empty):
        return model.hidden_states(
            x, m, cache=model.init_cache(b, slots, per_layer=True), layer_params=lp, empty_cache=empty
        )

    (want, want_cache), (got, got_cache) = (prefill(layers, ids, mask, e) for e in (False, True))
    np.testing.assert_allclose(np.asarray(got)[0], np.asarray(want)[0], atol=2e-5)
    np.testing.assert_allclose(np.asarray(got)[1, 37:], np.asarray(want)[1, 37:], atol=2e-5)
    # The cache, on its real tokens (a padding slot's K/V comes from a query that sees no key: arbitrary either way).
    valid = np.asarray(want_cache.valid)
    np.testing.assert_array_equal(np.asarray(got_cache.valid), valid)
    assert valid.sum() == b * t - 37 and int(got_cache.end) == t
    for g, w in zip(got_cache.k + got_cache.v, want_cache.k + want_cache.v, strict=True):
        assert g.shape == w.shape
        at = valid[:, None, None, :] if g.shape[-1] == slots else valid[:, None, :, None]
        np.testing.assert_allclose(np.where(at, g, 0), np.where(at, w, 0), atol=1e-5)

    def flops(empty):
        jitted = jax.jit(functools.partial(prefill, empty=empty))
        return jitted.lower(layers, jnp.asarray(ids), jnp.asarray(mask)).compile().cost_analysis()["flops"]

    # Scores and values over T x 260 slots, against T x T in blocks of 50 (5/8 of them).
    assert L.causal_block(t) == 50
    hd = cfg.num_attention_heads * cfg.head_dim
    skipped = 2 * 2 * b * t * hd * (slots - 5 / 8 * t) * cfg.num_hidden_layers
    assert flops(False) - flops(True) >= 0.9 * skipped


@pytest.mark.parametrize("arch", ["qwen2", "glm"])
def test_unrolled_layer_loop_equals_scan(arch, tmp_path):
    # hidden_states(layer_params=...) (separate per-layer arrays, per-layer cache) computes what the scan computes:
    # the full forward, its gradient, and a prefill + decode step through the cache.
    model = from_pretrained(write_checkpoint(tmp_path / arch, arch, seed=14))
    layers = model.unstacked_layers()
    assert len(layers) == model.config.num_hidden_layers and layers[1]["q"].shape == model.layers.q[...].shape[1:]
    ids = np.random.default_rng(3).integers(3, 256, size=(2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    np.testing.assert_allclose(
        np.asarray(model(ids, mask, layer_params=layers)), np.asarray(model(ids, mask)), atol=1e-5
    )
    graphdef, state = nnx.split(model)

    def loss(s, unrolled):
        m = nnx.merge(graphdef, s)
        return jnp.mean(m(ids, mask, layer_params=m.unstacked_layers() if unrolled else None)[..., 7])

    for a, b in zip(jax.tree.leaves(jax.grad(loss)(state, True)), jax.tree.leaves(jax.grad(loss)(state, False))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)

    # The fused decode layout (qkv and gate|up concatenated, all out-major) computes the same, including the decode
    # steps, whose few rows go through linear_t's multiply-and-sum form.
    fused = tuple(fuse_layer(p) for p in layers)
    assert "q" not in fused[0] and fused[0]["qkv_t"].shape[1] == model.config.hidden_size
    # Concatenated weights change the matmuls' summation order: float32 rounding, relative to the logit's size.
    np.testing.assert_allclose(
        np.asarray(model(ids, mask, layer_params=fused, layout=CPU)), np.asarray(model(ids, mask)), rtol=1e-5, atol=1e-5
    )

    def decode(lp, layout=PLAIN):
        cache = model.init_cache(2, 12, per_layer=lp is not None)
        first, cache = model(ids[:, :8], mask[:, :8], cache=cache, layer_params=lp, layout=layout)
        nxt, cache = model(ids[:, 8:], mask[:, 8:], cache=cache, layer_params=lp, layout=layout)
        return np.concatenate([np.asarray(first), np.asarray(nxt)], axis=1), cache

    (scanned, c2) = decode(None)
    for lp, layout in ((layers, PLAIN), (fused, CPU)):
        unrolled, c1 = decode(lp, layout)
        assert isinstance(c1.k, tuple) and c1.k[0].shape == c2.k.shape[1:] and c1.max_length == c2.max_length == 12
        np.testing.assert_allclose(unrolled, scanned, atol=1e-5)
        np.testing.assert_allclose(np.stack([np.asarray(k) for k in c1.k]), np.asarray(c2.k), atol=1e-5)


def test_unrolled_layers_compute_the_rotary_table_once(tmp_path):
    # XLA fuses the cos/sin table into each consumer; unrolled, that is every layer's q and k (see layers.materialized).
    model = from_pretrained(write_checkpoint(tmp_path / "llama", "llama", seed=3))
    assert model.config.num_hidden_layers >= 2
    layers = tuple(fuse_layer(p) for p in model.unstacked_layers())
    ids = jnp.ones((2, 16), jnp.int32)
    hlo = jax.jit(lambda lp, x: model(x, layer_params=lp, layout=CPU)).lower(layers, ids).compile().as_text()
    # Once per branch of the conditional, instead of twice (q, k) per layer.
    assert hlo.count(" cosine(") == 2 and hlo.count(" sine(") == 2


@pytest.mark.parametrize("rows", [1, 2, 5, 16, 32, 33, 96])
def test_linear_t_equals_the_matmul_for_every_row_count(rows):
    # 2..FEW_ROWS rows take the multiply-and-sum form, the rest a dot; both are x @ w_t.T.
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 3, 40)).astype(np.float32)  # rows * 3 rows in all
    w_t = rng.standard_normal((24, 40)).astype(np.float32)
    for xs in (x[:, :1], x):
        got = np.asarray(jax.jit(cpu_layout.linear_t)(xs, w_t))
        assert got.shape == (*xs.shape[:-1], 24)
        np.testing.assert_allclose(got, xs.astype(np.float64) @ w_t.T.astype(np.float64), rtol=1e-5, atol=1e-4)
