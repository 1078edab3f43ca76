"""Continuous batching (``Engine(batching="continuous")``) against static batches on a tiny random model with the
demo's real tokenizer: the same tokens greedy and sampled, whatever the slot count or refill setting, through cache
rolls, stops and one-token answers; one prefill per prompt; utilization counters; bounded compilation.
(Greedy parity with transformers, and the 8-device mesh: test_sampling_parity.py.)"""

import numpy as np
import pytest

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.sampling import Engine
from spar_jax.sampling.slots import roll_slots, window_slots

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = write_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=4, vocab_size=49152)
    copy_demo_tokenizer(directory)
    return from_pretrained(directory), load_tokenizer(directory)


def _engine(tiny, batching, batch_size, **kwargs):
    model, tokenizer = tiny
    return Engine(
        model, tokenizer, batch_size=batch_size, max_length=MAX_LENGTH, batching=batching, progress=False, **kwargs
    )


@pytest.fixture(scope="module")
def static(tiny):
    return _engine(tiny, "static", 8)


def _ids(seed, length):
    return np.random.default_rng(seed).integers(100, 49000, length).tolist()


def _tokens(results):
    return [[c.token_ids for c in r.completions] for r in results]


def _assert_same(a, b):
    assert _tokens(a) == _tokens(b)
    for x, y in zip(a, b, strict=True):
        assert x.prompt_token_ids == y.prompt_token_ids
        for cx, cy in zip(x.completions, y.completions, strict=True):
            assert cx.text == cy.text and cx.finish_reason == cy.finish_reason
            np.testing.assert_allclose(cx.logprobs, cy.logprobs, atol=1e-4)


# Three length buckets (16, 32, 64) in one call, more samples than slots.
REQUESTS = [_ids(s, n) for s, n in enumerate((5, 40, 12, 20, 3, 33, 9, 17))]


SAMPLED = dict(max_new_tokens=23, temperature=0.9, top_p=0.9, top_k=50, n=2, seed=11)


def test_same_tokens_as_static_batches_greedy_and_sampled(tiny, static):
    engine = _engine(tiny, "continuous", 3)
    for kwargs in (dict(max_new_tokens=14), SAMPLED, dict(max_new_tokens=9, temperature=1.3, n=3, seed=2)):
        _assert_same(engine.generate(REQUESTS, **kwargs), static.generate(REQUESTS, **kwargs))
    run = engine.continuous.last_run
    assert run.rolls > 0  # 9 new tokens -> N = 16, W = 80, G = 16: rolled every 16 steps
    assert run.inserted == 3 * len(REQUESTS)


def test_samples_do_not_depend_on_slots_or_refill(tiny, static):
    a = _engine(tiny, "continuous", 4, refill=3).generate(REQUESTS, **SAMPLED)
    _assert_same(a, static.generate(REQUESTS, **SAMPLED))
    assert _tokens(a) != _tokens(static.generate(REQUESTS, **{**SAMPLED, "seed": 12}))
    assert any(r[0] != r[1] for r in _tokens(a))  # the n samples of a prompt are distinct draws


def test_stops_and_one_token_answers(tiny, static):
    model, tokenizer = tiny
    free = static.generate(REQUESTS, max_new_tokens=16, temperature=1.0, seed=3)
    eos = free[0].completions[0].token_ids[4]  # some rows now stop early, at different steps
    kwargs = dict(max_new_tokens=16, temperature=1.0, seed=3)
    stopped = [_engine(tiny, b, 3, eos_token_ids=[eos]).generate(REQUESTS, **kwargs) for b in ("continuous", "static")]
    _assert_same(*stopped)
    assert {c.finish_reason for r in stopped[0] for c in r.completions} == {"stop", "length"}
    text = free[1].completions[0].text
    stop = [text[3:7]]
    continuous = _engine(tiny, "continuous", 3)
    _assert_same(continuous.generate(REQUESTS, stop=stop, **kwargs), static.generate(REQUESTS, stop=stop, **kwargs))
    one = dict(max_new_tokens=1, temperature=1.0, n=4, seed=1)
    _assert_same(continuous.generate(REQUESTS, **one), static.generate(REQUESTS, **one))


def test_one_prefill_per_prompt_and_slot_utilization(tiny):
    model, tokenizer = tiny
    requests = [_ids(100 + s, 6) for s in range(12)]  # one length bucket
    # The tiny model's next-token distribution is near uniform (so is its top 50): with every 12th id a stop id,
    # answer lengths are about geometric (mean ~12, capped at 30), so rows of one batch end at very different steps.
    stops = list(range(0, 49152, 12))
    stats = {}
    for batching in ("continuous", "static"):
        engine = _engine(tiny, batching, 4, eos_token_ids=stops)
        # top_k: the candidates' short inverse CDF; over all 49152 ids, a ~1e-6 change of the logits (a prefill of
        # another row count) can move a draw to the neighbouring id.
        results = engine.generate(requests, max_new_tokens=30, temperature=1.0, top_k=50, seed=0, n=2)
        stats[batching] = engine.stats
        assert engine.stats.generated_tokens == sum(len(c.token_ids) for r in results for c in r.completions)
        assert engine.stats.decode_rows == 24
    c, s = stats["continuous"], stats["static"]
    assert c.prefill_rows == 12  # 2 prompts per 4 free slots; no prompt prefilled twice
    assert c.generated_tokens == s.generated_tokens <= c.decode_slot_steps < s.decode_slot_steps
    assert len({len(x.token_ids) for r in results for x in r.completions}) > 5  # lengths really are mixed
    # Static: 6 batches of 2 prompts x 2 samples, each decoding to its longest row.
    lengths = [[len(x.token_ids) for x in r.completions] for r in results]
    assert s.decode_slot_steps == sum(4 * max(lengths[i] + lengths[i + 1]) for i in range(0, 12, 2))


def test_compile_count_bounded_by_buckets(tiny):
    engine = _engine(tiny, "continuous", 2)
    rng = np.random.default_rng(0)
    calls = []
    for call in range(20):
        requests = [_ids(100 * call + j, int(rng.integers(1, 30))) for j in range(int(rng.integers(1, 6)))]
        calls.append((requests, int(rng.integers(1, 17)), int(rng.integers(1, 3))))
    for requests, new, n in calls:
        assert len(engine.generate(requests, max_new_tokens=new, n=n, seed=1)) == len(requests)
    programs = engine.continuous.programs
    kinds = {k: sum(1 for p in programs if p[0] == k) for k in ("prefill", "insert", "init", "generate", "roll")}
    # Prefill rows {1, 2} x lengths {16, 32}; insert: those x decode caches {48, 64} (the call's longest bucket);
    # init, generate, roll: one per decode cache.
    assert engine.compiles == len(programs) == sum(kinds.values())
    assert kinds["prefill"] <= 4 and kinds["insert"] <= 8 and kinds["init"] == kinds["generate"] <= 2
    assert kinds["roll"] <= 2
    print(f"20 calls: {engine.compiles} compilations: {kinds}")
    for requests, new, n in calls:  # the same calls again compile nothing
        engine.generate(requests, max_new_tokens=new, n=n, seed=1)
    assert engine.compiles == len(programs)


def test_cache_window_and_roll_arithmetic():
    assert window_slots(16, 16) == 32 and window_slots(16, 17) == 32 and window_slots(16, 18) == 48
    assert roll_slots(80) == 16 and roll_slots(1024 + 511) == 64 and roll_slots(4096 + 1023) == 112
    for w in (32, 160, 2000):
        assert roll_slots(w) % 16 == 0 and roll_slots(w) >= np.sqrt(2 * w)


def test_bad_batching_is_refused(tiny):
    with pytest.raises(ValueError, match="batching='dynamic'; choose one of"):
        _engine(tiny, "dynamic", 4)
