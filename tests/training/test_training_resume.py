"""Checkpoints: a killed run resumes to the same parameters; mismatched checkpoints fail clearly; metrics files."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.training.checkpoints import REFERENCE_FILE
from spar_jax.training.trainer import TrainConfig, Trainer, load_data

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

PAIRS = [{"prompt": f"Write {i} in words.", "chosen": f"Number {i}.", "rejected": f"No {i * 7}!"} for i in range(6)]
CHATS = [
    {"messages": [{"role": "user", "content": f"Echo {i}"}, {"role": "assistant", "content": f"{i} {i}"}]}
    for i in range(6)
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_checkpoint(d, "llama", seed=2, vocab_size=49152)
    copy_demo_tokenizer(d)
    return str(d)


def _config(ckpt, kind="dpo", **kw):
    base = dict(
        kind=kind,
        learning_rate=1e-3,
        batch_size=2,
        epochs=3,
        warmup_ratio=0.2,
        schedule="linear",
        max_length=96,
        max_prompt_length=48,
        progress_bar=False,
        logits_chunk_size=32,
        checkpoint_dir=ckpt,
        save_every=2,
        keep_checkpoints=2,
        log_dir=os.path.join(ckpt, "logs"),
    )
    return TrainConfig(**{**base, **kw})


def run(tiny, ckpt, kill_at=0, kind="dpo", until_step=None, **kw):
    """Train (resuming from ``ckpt`` if it holds a checkpoint); SIGKILL this process right after step ``kill_at``."""
    tok = load_tokenizer(tiny)
    cfg = _config(ckpt, kind, **kw)
    trainer = Trainer(from_pretrained(tiny), load_data(PAIRS if kind == "dpo" else CHATS, tok, cfg), cfg)
    start = trainer.step

    def on_step(step, metrics):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.fit(on_step=on_step, until_step=until_step)
    trainer.close()
    return start, jax.tree.map(np.asarray, trainer.state["params"]), trainer


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


def test_killed_dpo_run_resumes_to_the_uninterrupted_parameters(tiny, tmp_path):
    start, straight, _ = run(tiny, str(tmp_path / "a"))
    assert start == 0
    killed = str(tmp_path / "b")
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_training_resume as t; "
        f"t.run({tiny!r}, {killed!r}, kill_at=5)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=os.environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert os.path.exists(os.path.join(killed, REFERENCE_FILE))

    start, resumed, _ = run(tiny, killed)
    assert start in (2, 4)  # the last checkpoint that finished before the kill (step 4's async save may not have)
    assert _max_diff(resumed, straight) <= 1e-6

    rows = [json.loads(line) for line in open(os.path.join(killed, "logs", "metrics.jsonl"))]
    assert [r["step"] for r in rows] == list(range(1, 10))  # one row per step, the killed run's extras dropped
    assert {
        "loss",
        "rewards/accuracy",
        "rewards/margin",
        "logps/chosen",
        "nll",
        "learning_rate",
        "grad_norm",
        "tokens_per_s",
    } <= set(rows[-1])
    assert rows[0]["learning_rate"] == 0.0 and rows[2]["learning_rate"] == pytest.approx(1e-3)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(killed, "logs")))


def test_sft_run_stopped_early_continues_in_a_fresh_trainer(tiny, tmp_path):
    _, straight, _ = run(tiny, str(tmp_path / "a"), kind="sft")
    initial = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(from_pretrained(tiny), nnx.Param)))
    _, partial, _ = run(tiny, str(tmp_path / "b"), kind="sft", until_step=3)
    assert _max_diff(partial, initial) > 1e-4  # three steps changed the weights, but not to the final ones
    assert _max_diff(partial, straight) > 1e-5
    start, resumed, _ = run(tiny, str(tmp_path / "b"), kind="sft")
    assert start == 3 and _max_diff(resumed, straight) <= 1e-6


def test_checkpoint_of_another_model_is_a_clear_error(tiny, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    run(tiny, ckpt, kind="sft", until_step=1)
    other = write_checkpoint(tmp_path / "other", "llama", seed=2, vocab_size=49152, intermediate_size=128)
    copy_demo_tokenizer(other)
    cfg = _config(ckpt, "sft")
    with pytest.raises(ValueError, match=r"does not match the model:\n  layers/down: checkpoint has \[2, 96, 64\]"):
        Trainer(from_pretrained(other), load_data(CHATS, load_tokenizer(other), cfg), cfg)
    with pytest.raises(ValueError, match="trained on different data"):
        Trainer(from_pretrained(tiny), load_data(CHATS[:4], load_tokenizer(tiny), cfg), cfg)
