"""The train step: exact masks, accumulation = big batch, sharded = single device, overfitting, schedules, export."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.parallel import make_mesh
from spar_jax.training import step as S
from spar_jax.training.batches import collate
from spar_jax.training.trainer import TrainConfig, Trainer, load_data

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

PAIRS = [
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not answer that question."},
    {"prompt": "Count to three, please, slowly.", "chosen": "One, two, three.", "rejected": "Five."},
    {"prompt": "Say yes.", "chosen": "Yes!", "rejected": "No, never, absolutely not."},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "22"},
]
CHATS = [
    {
        "messages": [
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello friend."},
            {"role": "user", "content": "Bye."},
            {"role": "assistant", "content": "See you."},
        ]
    },
    {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"conversations": [{"from": "human", "value": "Colour of sky?"}, {"from": "gpt", "value": "Blue."}]},
    {"instruction": "Repeat: cat", "output": "cat"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama with the demo tokenizer (vocab 49152)."""
    d = tmp_path_factory.mktemp("tiny")
    write_checkpoint(d, "llama", seed=1, vocab_size=49152)
    copy_demo_tokenizer(d)
    return str(d)


@pytest.fixture(scope="module")
def tok(tiny):
    return load_tokenizer(tiny)


def _config(**kw):
    base = dict(
        kind="dpo",
        learning_rate=1e-3,
        batch_size=4,
        max_steps=1,
        warmup_ratio=0.0,
        schedule="constant",
        max_length=96,
        max_prompt_length=48,
        progress_bar=False,
        logits_chunk_size=32,
    )
    return TrainConfig(**{**base, **kw})


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_dpo_loss_counts_exactly_the_response_tokens(tiny, tok):
    model = from_pretrained(tiny)
    cfg = _config()
    ref = np.array([[-30.0, -40.0], [-20.0, -25.0], [-10.0, -50.0], [-5.0, -6.0]], np.float32)
    data = load_data(PAIRS[:3] + PAIRS[3:], tok, cfg).with_reference(ref)
    batch = collate(data, np.array([0, 1, 2]), rows=4, length=64)  # the 4th row is padding
    stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], batch)
    totals = S.batch_totals(stacked, "dpo")
    spec = S.LossSpec("dpo", beta=0.1, sft_weight=0.1, chunk_size=16)
    loss, metrics = S.micro_loss(model, jax.tree.map(jnp.asarray, batch), totals, spec)

    # Independent: full logits; response token j is scored by position j - 1; prompt and padding are skipped.
    prompt_lens = [
        len(
            tok.apply_chat_template(
                [{"role": "user", "content": p["prompt"]}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        for p in PAIRS[:3]
    ]
    logits = np.asarray(model(batch["input_ids"], batch["attention_mask"]))
    lsm = _log_softmax(logits.astype(np.float64))
    seq, chosen_tokens = np.zeros((3, 2)), []
    for i in range(3):
        for s in range(2):
            r = 2 * i + s
            n = int(batch["attention_mask"][r].sum())
            lp = [lsm[r, j - 1, batch["input_ids"][r, j]] for j in range(prompt_lens[i], n)]
            seq[i, s] = sum(lp)
            chosen_tokens += lp if s == 0 else []
    z = 0.1 * ((seq[:, 0] - seq[:, 1]) - (ref[:3, 0] - ref[:3, 1]))
    expected = np.mean(np.log1p(np.exp(-z))) + 0.1 * -np.mean(chosen_tokens)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["logps/chosen"]), seq[:, 0].mean(), rtol=1e-5)
    assert float(metrics["tokens/chosen"]) == len(chosen_tokens)
    unchunked, _ = S.micro_loss(model, jax.tree.map(jnp.asarray, batch), totals, S.LossSpec("dpo", chunk_size=0))
    np.testing.assert_allclose(float(unchunked), float(loss), rtol=1e-6)

    # Garbage in the padding (ids of padded positions and the whole padding row) changes nothing.
    noisy = dict(
        batch,
        input_ids=np.where(
            batch["attention_mask"],
            batch["input_ids"],
            np.random.default_rng(0).integers(0, 49152, batch["input_ids"].shape),
        ),
    )
    loss2, _ = S.micro_loss(model, jax.tree.map(jnp.asarray, noisy), totals, spec)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)


def test_multi_turn_sft_loss_is_the_mean_over_assistant_tokens(tiny, tok):
    model = from_pretrained(tiny)
    data = load_data(CHATS[:2], tok, _config(kind="sft"))
    batch = collate(data, np.array([0, 1]), rows=2, length=64)
    totals = S.batch_totals(jax.tree.map(lambda x: jnp.asarray(x)[None], batch), "sft")
    loss, metrics = S.micro_loss(model, jax.tree.map(jnp.asarray, batch), totals, S.LossSpec("sft", chunk_size=16))
    lsm = _log_softmax(np.asarray(model(batch["input_ids"], batch["attention_mask"])).astype(np.float64))
    picked = []
    for r in range(2):
        for j in np.flatnonzero(batch["loss_mask"][r]):
            picked.append(lsm[r, j - 1, batch["input_ids"][r, j]])
    # the first conversation has two assistant turns, each "<text><|im_end|>\n"
    first = tok.decode(batch["input_ids"][0][batch["loss_mask"][0]])
    assert first == "Hello friend.<|im_end|>\nSee you.<|im_end|>\n"
    np.testing.assert_allclose(float(loss), -np.mean(picked), rtol=1e-5)
    assert float(metrics["tokens/target"]) == len(picked)


def _one_step(tiny, tok, mesh=None, **kw):
    trainer = Trainer(
        from_pretrained(tiny, mesh=make_mesh(mesh) if mesh else None),
        load_data(PAIRS, tok, _config(**kw)),
        _config(**kw),
    )
    metrics = trainer.fit()
    mu = optax.tree_utils.tree_get(trainer.state["opt_state"], "mu")
    return trainer, metrics, jax.tree.map(np.asarray, mu)


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


def test_accumulation_and_sharding_equal_the_single_device_big_batch(tiny, tok):
    base, m_base, mu_base = _one_step(tiny, tok)
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(mu_base))
    variants = {
        "accum2": dict(grad_accum_steps=2),
        "mesh222": dict(mesh=(2, 2, 2)),
        "mesh181_accum2": dict(mesh=(1, 8, 1), grad_accum_steps=2),
    }
    for name, kw in variants.items():
        trainer, metrics, mu = _one_step(tiny, tok, **kw)
        for key in ("loss", "nll", "dpo_loss", "logps/chosen", "logps/rejected", "grad_norm"):
            np.testing.assert_allclose(metrics[key], m_base[key], rtol=2e-5, err_msg=f"{name} {key}")
        assert _max_diff(mu, mu_base) < 1e-4 * scale, name  # mu = (1 - b1) * gradient after one step
        # Adam's first update is lr * g / (|g| + eps): where |g| is near eps, float-summation-order noise in g moves
        # it by a visible fraction of lr, so compare the updates only where the gradient is clearly non-zero.
        params = jax.tree.map(np.asarray, trainer.state["params"])
        base_params = jax.tree.map(np.asarray, base.state["params"])
        worst = max(
            jax.tree.leaves(
                jax.tree.map(
                    lambda p, b, m: float(np.abs(p - b)[np.abs(m) > 1e-4 * scale].max(initial=0.0)),
                    params,
                    base_params,
                    mu_base,
                )
            )
        )
        assert worst < 1e-6, (name, worst)
        if "mesh" in kw:
            q = trainer.state["params"]["layers"]["q"]
            assert len(q.sharding.device_set) == 8 and "fsdp" in str(q.sharding.spec), name
            assert "fsdp" in str(
                optax.tree_utils.tree_get(trainer.state["opt_state"], "mu")["layers"]["q"].sharding.spec
            )


def test_tiny_model_overfits_dpo_pairs(tiny, tok):
    cfg = _config(learning_rate=1e-2, max_steps=None, epochs=12)
    trainer = Trainer(from_pretrained(tiny), load_data(PAIRS, tok, cfg), cfg)
    history = []
    trainer.fit(on_step=lambda step, m: history.append(m))
    assert len(history) == 12 and history[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert history[-1]["rewards/accuracy"] == 1.0
    assert history[-1]["rewards/margin"] > 2.0 and history[-1]["dpo_loss"] < 0.1
    assert history[-1]["logps/chosen"] > history[0]["logps/chosen"]


def test_tiny_model_overfits_sft_and_exports_to_transformers(tiny, tok, tmp_path):
    cfg = _config(kind="sft", learning_rate=1e-2, max_steps=None, epochs=25)
    trainer = Trainer(from_pretrained(tiny), load_data(CHATS, tok, cfg), cfg, tokenizer=tok)
    history = []
    trainer.fit(on_step=lambda step, m: history.append(m["loss"]))
    assert history[0] > 5.0 and history[-1] < 0.05, history[::5]

    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer.export(str(tmp_path / "hf"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    ids = np.asarray(tok.apply_chat_template(CHATS[1]["messages"], tokenize=True, return_dict=False))[None]
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits.numpy()
    ours = np.asarray(trainer.model(ids))
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "hf")).chat_template


def test_schedules_follow_the_hf_definitions():
    lin = S.make_schedule("linear", 1.0, total_steps=10, warmup_ratio=0.2)
    assert [round(float(lin(k)), 6) for k in range(11)] == [0, 0.5, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0]
    const = S.make_schedule("constant", 2.0, total_steps=10, warmup_ratio=0.25)  # ceil(2.5) = 3 warm-up steps
    assert [round(float(const(k)), 6) for k in range(5)] == [0, 0.666667, 1.333333, 2, 2]
    assert float(S.make_schedule("linear", 1.0, 4, 0.0)(0)) == 1.0


def test_weight_decay_skips_norms_and_biases():
    mask = S.decay_mask({"embed": 0, "final_norm": 0, "layers": {"q": 0, "q_bias": 0, "attn_norm": 0}})
    assert mask == {"embed": True, "final_norm": False, "layers": {"q": True, "q_bias": False, "attn_norm": False}}


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(kind="ppo"), "kind"),
        (dict(batch_size=6, grad_accum_steps=4), "grad_accum_steps"),
        (dict(max_prompt_length=96), "max_prompt_length"),
        (dict(schedule="cosine"), "schedule"),
        (dict(beta=0.0), "beta"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
    ],
)
def test_config_rejects_bad_values(kw, key):
    with pytest.raises(ValueError, match=f"TrainConfig.{key}="):
        _config(**kw)
