"""Static-batching engine behaviour (continuous batching: test_sampling_continuous.py) on a tiny random model with
the demo's real tokenizer: order, n samples, one prefill, EOS and stop strings, finish reasons, reproducibility, the
sampled distribution, bounded compilation, truncation."""

import numpy as np
import pytest

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.models.cpu_layout import chunk_rows
from spar_jax.sampling import Engine
from spar_jax.sampling.loop import SLOT_MULTIPLE, LoopShape, cache_slots

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = write_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=4, vocab_size=49152)
    copy_demo_tokenizer(directory)
    return from_pretrained(directory), load_tokenizer(directory)


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    return Engine(
        model, tokenizer, batch_size=8, max_length=MAX_LENGTH, truncate="left", batching="static", progress=False
    )


def _ids(seed, length):
    return np.random.default_rng(seed).integers(100, 49000, length).tolist()


def test_results_in_order_with_n_samples_and_one_prefill(engine):
    requests = [_ids(0, 20), [{"role": "user", "content": "hi"}], _ids(1, 30)]  # one length bucket (32)
    prefilled, decoded, traces = engine.stats.prefill_rows, engine.stats.decode_rows, len(engine.loop.shapes)
    results = engine.generate(requests, max_new_tokens=6, n=3)
    assert [len(r.completions) for r in results] == [3, 3, 3]
    # batch_size=8 rows at n=3 -> batches of 2 and 1 prompts: one prefill row per prompt, n decode rows per prompt.
    assert engine.stats.prefill_rows - prefilled == 3
    assert engine.stats.decode_rows - decoded == 9
    assert all(shape[2] == 3 * shape[0] for shape in engine.loop.shapes[traces:])
    for i, request in enumerate(requests):
        alone = engine.generate([request], max_new_tokens=6)[0].completions[0]
        assert results[i].prompt_token_ids == engine.prompt_ids(request)
        for c in results[i].completions:  # greedy: every sample equals the request generated alone
            assert c.token_ids == alone.token_ids and c.text == alone.text
            assert c.finish_reason == "length" and len(c.token_ids) == len(c.logprobs) == 6
            assert all(lp <= 0 for lp in c.logprobs)


def test_eos_stop_strings_and_finish_reason(tiny, engine):
    model, tokenizer = tiny
    prompt = _ids(2, 9)
    free = engine.generate([prompt], max_new_tokens=14, temperature=1.0, seed=3)[0].completions[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 14
    # EOS: make the 5th sampled token (its first occurrence) the end token; the same seed replays the same prefix.
    cut = next(i for i in range(4, 14) if free.token_ids[i] not in free.token_ids[:i])
    eos = free.token_ids[cut]
    stopper = Engine(
        model, tokenizer, batch_size=8, max_length=MAX_LENGTH, eos_token_ids=[eos], batching="static", progress=False
    )
    ended = stopper.generate([prompt], max_new_tokens=14, temperature=1.0, seed=3)[0].completions[0]
    assert ended.finish_reason == "stop"
    assert ended.token_ids == free.token_ids[: cut + 1]
    assert ended.text == tokenizer.decode(free.token_ids[:cut], skip_special_tokens=True)
    np.testing.assert_allclose(ended.logprobs, free.logprobs[: cut + 1], atol=1e-5)
    # A stop string spanning several tokens: text trimmed before it, tokens cut where it completes.
    text = free.text
    start = len(tokenizer.decode(free.token_ids[:6], skip_special_tokens=True)) - 2
    stop = text[start : start + 6]
    trimmed = engine.generate([prompt], max_new_tokens=14, temperature=1.0, seed=3, stop=["@@never@@", stop])
    c = trimmed[0].completions[0]
    assert c.finish_reason == "stop"
    assert c.text == text[: text.find(stop)]
    k = len(c.token_ids)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    assert stop in decode(free.token_ids[:k]) and stop not in decode(free.token_ids[: k - 1])
    assert c.token_ids == free.token_ids[:k] and len(c.logprobs) == k


def test_sampling_is_seeded_and_independent_of_batching(tiny, engine):
    model, tokenizer = tiny
    requests = [_ids(s, 4 + s) for s in range(5)]
    kwargs = dict(max_new_tokens=8, temperature=0.9, top_p=0.9, top_k=50, n=2)
    a = engine.generate(requests, seed=11, **kwargs)
    b = engine.generate(requests, seed=11, **kwargs)
    c = engine.generate(requests, seed=12, **kwargs)
    small = Engine(model, tokenizer, batch_size=2, max_length=MAX_LENGTH, batching="static", progress=False)
    d = small.generate(requests, seed=11, **kwargs)
    tokens = lambda rs: [[c.token_ids for c in r.completions] for r in rs]  # noqa: E731
    assert tokens(a) == tokens(b) == tokens(d)
    assert tokens(a) != tokens(c)
    assert any(r[0] != r[1] for r in tokens(a))  # the n samples of a prompt are distinct draws


def test_first_token_distribution_matches_model(tiny, engine):
    model, _ = tiny
    prompt = _ids(5, 7)
    logits = np.asarray(model(np.asarray([prompt], np.int32)))[0, -1].astype(np.float64)
    temperature, top_k = 1.3, 8
    top = np.argsort(-logits)[:top_k]
    p = np.exp((logits[top] - logits[top].max()) / temperature)
    p /= p.sum()
    counts = dict.fromkeys(top.tolist(), 0)
    draws = 0
    for seed in range(4):
        result = engine.generate([prompt], max_new_tokens=1, temperature=temperature, top_k=top_k, n=128, seed=seed)
        for c in result[0].completions:
            assert c.token_ids[0] in counts, "sampled a token outside the top-k"
            counts[c.token_ids[0]] += 1
            draws += 1
    observed = np.asarray([counts[t] for t in top.tolist()])
    chi2 = ((observed - draws * p) ** 2 / (draws * p)).sum()
    assert chi2 < 7 + 6 * np.sqrt(14), chi2  # chi-square with 7 degrees of freedom, ~4 sigma


def test_compile_count_bounded_by_buckets(tiny):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, batch_size=2, max_length=MAX_LENGTH, batching="static", progress=False)
    rng = np.random.default_rng(0)
    for call in range(20):
        requests = [_ids(100 * call + j, int(rng.integers(1, 30))) for j in range(int(rng.integers(1, 6)))]
        results = engine.generate(requests, max_new_tokens=int(rng.integers(1, 17)), seed=call)
        assert len(results) == len(requests)
    used = engine.stats.buckets
    assert engine.compiles == len(used) <= 4  # rows {1, 2} x lengths {16, 32} x new {16}
    print(f"20 calls: {engine.compiles} compilations for {len(used)} buckets {sorted(used)}")


def test_over_long_prompts_error_or_left_truncate(tiny, engine):
    model, tokenizer = tiny
    strict = Engine(model, tokenizer, max_length=MAX_LENGTH, progress=False)
    long_prompt = _ids(7, 70)
    with pytest.raises(ValueError, match=r"request 1: prompt has 70 tokens.*room for 56"):
        strict.generate([_ids(8, 3), long_prompt], max_new_tokens=8)
    before = engine.stats.truncated_prompts
    result = engine.generate([_ids(8, 3), long_prompt], max_new_tokens=8)
    assert result[1].truncated == 14 and result[1].prompt_token_ids == long_prompt[14:]
    assert result[0].truncated == 0
    assert engine.stats.truncated_prompts - before == 1


def test_bad_arguments_are_rejected_clearly(engine):
    ok = [_ids(0, 3)]
    for kwargs, message in [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=-1.0), "temperature"),
        (dict(n=0), "n must be"),
        (dict(top_k=-2), "top_k"),
        (dict(stop=[""]), "stop"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.generate(ok, max_new_tokens=4, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate(ok, max_new_tokens=0)
    with pytest.raises(ValueError, match="request 1: token id 99999 is outside"):
        engine.generate([[5], [99999]], max_new_tokens=4)
    with pytest.raises(ValueError, match="request 0: expected"):
        engine.generate([[]], max_new_tokens=4)
    assert engine.generate([], max_new_tokens=4) == []


def test_growing_cache_segments_match_one_segment(tiny, engine):
    model, tokenizer = tiny
    segmented = Engine(
        model,
        tokenizer,
        batch_size=8,
        max_length=MAX_LENGTH,
        first_segment=3,
        segment_growth=4,
        batching="static",
        progress=False,
    )
    requests = [_ids(9, 5), _ids(10, 11)]  # one 16-slot prompt bucket
    kwargs = dict(max_new_tokens=40, temperature=0.8, seed=5, n=2)  # a 64-token bucket: segments 3, 12, 48, 64
    # The cache really grows (32 -> 32 -> 64 -> 80 slots), or this test would not cover growth.
    assert [cache_slots(16, c) for c in LoopShape(n=2, max_new=64, first_segment=3, segment_growth=4).segments()] == [
        32,
        32,
        64,
        80,
    ]
    a = engine.generate(requests, **kwargs)
    b = segmented.generate(requests, **kwargs)
    assert [[c.token_ids for c in r.completions] for r in a] == [[c.token_ids for c in r.completions] for r in b]
    assert max(len(c.token_ids) for r in b for c in r.completions) > 12  # some row decoded past the second segment


def test_cache_slots_are_the_needed_slots_rounded_up():
    assert cache_slots(128, 32) == 160  # T + 31 slots: the last sampled token is never fed
    assert cache_slots(128, 1) == 128
    assert cache_slots(128, 33) == 160 and cache_slots(128, 34) == 176
    for t, c in [(16, 3), (64, 64), (100, 7)]:
        slots = cache_slots(t, c)
        assert slots % SLOT_MULTIPLE == 0 and t + c - 1 <= slots < t + c - 1 + SLOT_MULTIPLE


def test_prefill_chunks_give_the_same_samples(tiny, engine):
    model, tokenizer = tiny
    assert engine.loop.prefill_chunk == 1024  # "auto" on CPU with one device
    # 6 prompts of mixed lengths in the 32-token bucket, one batch of 8 rows: whole, then chunks of 2 and 1 rows.
    requests = [_ids(20 + i, n) for i, n in enumerate((17, 30, 21, 32, 25, 19))]
    kwargs = dict(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=2, n=2)
    results = {}
    # The stacked cache of the scan layer loop ([L, B, ...]) merges its chunks on its second axis.
    for tokens, rows, layer_loop in ((0, 8, "auto"), (64, 2, "auto"), (40, 1, "auto"), (64, 2, "scan")):
        assert chunk_rows(8, 32, tokens) == rows
        chunked = Engine(
            model,
            tokenizer,
            batch_size=16,
            max_length=MAX_LENGTH,
            prefill_chunk=tokens,
            layer_loop=layer_loop,
            batching="static",
            progress=False,
        )
        results[rows, layer_loop] = chunked.generate(requests, **kwargs)
        assert chunked.loop.shapes == [(8, 32, 16, 16)]
    for key in ((2, "auto"), (1, "auto"), (2, "scan")):
        for a, b in zip(results[8, "auto"], results[key], strict=True):
            for x, y in zip(a.completions, b.completions, strict=True):
                assert x.token_ids == y.token_ids
                np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-4)
    assert len({tuple(c.token_ids) for r in results[8, "auto"] for c in r.completions}) > 6  # samples differ


def test_prefill_chunk_rows(tiny):
    assert chunk_rows(32, 128, 1024) == 8
    assert chunk_rows(32, 128, 0) == 32  # no chunks
    assert chunk_rows(32, 2048, 1024) == 1  # a prompt longer than a chunk: one row at a time
    assert chunk_rows(12, 100, 500) == 4  # the largest divisor of 12 that fits 5 rows
    assert chunk_rows(7, 10, 1000) == 7
    for bad in (-1, "big", 2.5):
        with pytest.raises(ValueError, match="prefill_chunk="):
            Engine(tiny[0], None, prefill_chunk=bad, progress=False)
