"""An over-long prompt (with engine.truncate="error") stops the run with one message naming the prompt (key and input
file) and the settings that decide the room: the engine's own error, a SPaR stage's, and the entry point's."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from spar_jax.judge import generation as gen
from spar_jax.judge.votes import judge
from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.sampling import Engine, PromptTooLongError
from spar_jax.spar.mining import MiningConfig, mine

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LENGTH = 64
LONG = "Write a poem about the sea and the sky and the wind and the rain. " * 8  # ~130 tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = write_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=4, vocab_size=49152)
    copy_demo_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return from_pretrained(checkpoint), load_tokenizer(checkpoint)


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_engine_error_carries_the_request_and_the_room(tiny, batching):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, max_length=MAX_LENGTH, batching=batching, progress=False)
    with pytest.raises(PromptTooLongError) as caught:
        engine.generate([[{"role": "user", "content": "Hi."}], [{"role": "user", "content": LONG}]], max_new_tokens=8)
    e = caught.value
    assert (e.index, e.max_length, e.max_new_tokens, e.room) == (1, MAX_LENGTH, 8, MAX_LENGTH - 8)
    assert e.tokens > MAX_LENGTH
    assert str(e).startswith(f"request 1: prompt has {e.tokens} tokens, but max_length=64 with max_new_tokens=8")


def test_a_stage_names_the_prompt_key_file_and_setting(tiny, tmp_path):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, max_length=MAX_LENGTH, progress=False)
    source = str(tmp_path / "prompts" / "train.jsonl")
    prompts = [("k1", "Say hi."), ("k2", LONG)]
    with gen.prompt_source(prompts, source), pytest.raises(ValueError) as caught:
        config = MiningConfig(n_samples=1, actor_sampling=gen.SamplingParams(max_new_tokens=8))
        mine(engine, engine, [p for _, p in prompts], ids=[k for k, _ in prompts], config=config)
    message = str(caught.value)
    assert message.startswith(f"prompt 'k2' of {source}: the prompt has ")
    assert "but only 56 fit: the engine's context is 64 tokens (config key engine.max_length" in message
    assert "generates up to 8 new tokens" in message and "set engine.truncate=left" in message


def test_a_judgement_of_a_long_response_names_the_prompt_it_judges(tiny):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, max_length=4 * MAX_LENGTH, progress=False)  # the judge template: ~180 tokens
    sampling = gen.SamplingParams(max_new_tokens=8)
    with gen.prompt_source([("a", "Say hi."), ("b", "Say hi. Then stop.")], "prompts.jsonl"):
        with pytest.raises(ValueError, match=r"^prompt 'b' of prompts.jsonl: the prompt has \d+ tokens"):
            judge(engine, [("Say hi.", "hi"), ("Say hi. Then stop.", LONG)], k=1, sampling=sampling, seed=0)
    with pytest.raises(ValueError, match=r"^request 1 of the call: the prompt has"):  # no source registered
        judge(engine, [("Say hi.", "hi"), ("Say hi. Then stop.", LONG)], k=1, sampling=sampling, seed=0)


def test_entry_point_reports_one_line(checkpoint, tmp_path):
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi."}) + "\n" + json.dumps({"prompt": LONG}) + "\n")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }  # one device, as a user's CPU
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spar_jax.main",
            "--config=configs/answer.py",
            f"--config.workdir={tmp_path / 'run'}",
            f"--config.actor.path={checkpoint}",
            f"--config.answer.prompts_file={prompts}",
            f"--config.engine.max_length={MAX_LENGTH}",
            "--config.answer.max_new_tokens=8",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: prompt '1' of {prompts}: the prompt has "), errors[0]
    assert "config key engine.max_length" in errors[0] and "engine.truncate=left" in errors[0]
