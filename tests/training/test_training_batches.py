"""Records -> messages, chat-template masks, truncation, seeded resumable batch order, collation."""

import json

import numpy as np
import pytest

from spar_jax.models import load_tokenizer
from spar_jax.training import records as R
from spar_jax.training.batches import (
    Batches,
    DataPosition,
    TokenizedData,
    TruncationStats,
    collate,
    epoch_batches,
    length_buckets,
    tokenize_dpo,
    tokenize_sft,
    truncate,
)


@pytest.fixture(scope="module")
def tok(demo_dir):
    return load_tokenizer(demo_dir)


def test_sft_formats_normalize_to_the_same_messages():
    want = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert R.sft_messages({"messages": want}, "x") == want
    sharegpt = {"system": "S", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    assert R.sft_messages(sharegpt, "x") == want
    assert R.sft_messages({"system": "S", "instruction": "Q", "input": "", "output": "A"}, "x") == want
    alpaca = R.sft_messages({"instruction": "Q", "input": "more", "output": "A"}, "x")
    assert alpaca[0] == {"role": "user", "content": "Q\nmore"}


def test_dpo_formats_including_llama_factory_pairwise():
    want = ([{"role": "user", "content": "Q"}], "good", "bad")
    assert R.dpo_triple({"prompt": "Q", "chosen": "good", "rejected": "bad"}, "x") == want
    factory = {
        "conversations": [{"from": "human", "value": "Q"}],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"},
    }
    assert R.dpo_triple(factory, "x") == want
    trl = {
        "prompt": [{"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    assert R.dpo_triple(trl, "x") == want


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"prompt": "Q", "chosen": "a"}, "needs ['rejected']"),
        ({"chosen": "a", "rejected": "b"}, "needs 'prompt'"),
        ({"prompt": "Q", "chosen": {"from": "human", "value": "a"}, "rejected": "b"}, "must be an assistant message"),
        (
            {
                "prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                "chosen": "a",
                "rejected": "b",
            },
            "must end with a user turn",
        ),
        ({"prompt": [{"role": "wizard", "content": "Q"}], "chosen": "a", "rejected": "b"}, "unsupported message role"),
    ],
)
def test_dpo_record_errors_name_the_record(record, fragment):
    with pytest.raises(ValueError, match="rec7") as err:
        R.dpo_triple(record, "rec7")
    assert fragment in str(err.value)


def test_jsonl_errors_carry_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path.write_text(good + "\n\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(ValueError, match=r"sft\.jsonl:3: the conversation has no assistant turn"):
        [R.sft_messages(r, w) for w, r in R.iter_records(str(path))]


def test_multi_turn_sft_mask_covers_exactly_the_assistant_turns(tok):
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "alpha beta"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "gamma"},
    ]
    data = tokenize_sft([{"messages": messages}], tok, max_length=512, max_prompt_length=256)
    ids, mask = data.ids[0][0], data.masks[0][0]
    assert ids.tolist() == tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    runs = np.split(np.flatnonzero(mask), np.flatnonzero(np.diff(np.flatnonzero(mask)) > 1) + 1)
    assert [tok.decode(ids[r]) for r in runs] == ["alpha beta<|im_end|>\n", "gamma<|im_end|>\n"]
    unmasked = tok.decode(ids[~mask])
    assert "first question" in unmasked and "second question" in unmasked and "alpha" not in unmasked
    assert unmasked.endswith("<|im_start|>assistant\n")


def test_dpo_tokenization_shares_the_prompt_and_masks_only_responses(tok):
    data = tokenize_dpo(
        [{"prompt": "Say hi", "chosen": "Hi there!", "rejected": "No."}], tok, max_length=256, max_prompt_length=128
    )
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Say hi"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    for seq, mask, text in zip(data.ids[0], data.masks[0], ("Hi there!", "No.")):
        assert seq[: len(prompt)].tolist() == prompt and not mask[: len(prompt)].any()
        assert mask[len(prompt) :].all()
        assert tok.decode(seq[mask]) == text + "<|im_end|>\n"


def test_truncate_cuts_prompt_from_left_then_response_from_right():
    ids = list(range(10))
    mask = [False] * 6 + [True] * 4
    assert truncate(ids, mask, 10, 3) == (ids, mask, False, False)
    out_ids, out_mask, p_cut, r_cut = truncate(ids, mask, 7, 3)
    assert (out_ids, p_cut, r_cut) == ([3, 4, 5, 6, 7, 8, 9], True, False) and sum(out_mask) == 4
    out_ids, out_mask, p_cut, r_cut = truncate(ids, mask, 5, 3)
    assert (out_ids, out_mask, p_cut, r_cut) == ([3, 4, 5, 6, 7], [False] * 3 + [True] * 2, True, True)


def test_truncation_counts_are_reported(tok):
    long_prompt = " ".join(["word"] * 200)
    records = [
        {"prompt": long_prompt, "chosen": "short", "rejected": "also short"},
        {"prompt": "hi", "chosen": " ".join(["yes"] * 200), "rejected": "no"},
        {"prompt": "hi", "chosen": "ok", "rejected": "no"},
    ]
    data = tokenize_dpo(records, tok, max_length=96, max_prompt_length=48)
    assert data.stats.as_dict() == {"examples": 3, "prompts_truncated": 1, "responses_truncated": 1}
    assert max(len(s) for seqs in data.ids for s in seqs) <= 96
    first_chosen, first_mask = data.ids[0][0], data.masks[0][0]
    assert int(np.argmax(first_mask)) == 48  # the prompt kept its last 48 tokens
    assert tok.decode(first_chosen[first_mask]) == "short<|im_end|>\n"
    chosen, rejected = (tok.decode(seq[m]) for seq, m in zip(data.ids[1], data.masks[1]))
    assert len(data.ids[1][0]) == 96 and chosen.startswith("yes yes") and not chosen.endswith("<|im_end|>\n")
    assert rejected == "no<|im_end|>\n"


def _synthetic(n, kind="sft"):
    rng = np.random.default_rng(0)
    per = 1 if kind == "sft" else 2
    ids, masks = [], []
    for i in range(n):
        seqs = [rng.integers(3, 50, size=5 + (i * 7 + s) % 40).astype(np.int32) for s in range(per)]
        ids.append(tuple(seqs))
        masks.append(tuple(np.arange(len(s)) >= 3 for s in seqs))
    return TokenizedData(kind, ids, masks, TruncationStats(n))


def test_order_is_seeded_complete_and_resumable():
    data = _synthetic(23)
    first = epoch_batches(data.lengths, 4, seed=5, epoch=0)
    assert sorted(np.concatenate(first).tolist()) == list(range(23))
    assert all(len(b) <= 4 for b in first) and len(first) == 6
    assert all((a == b).all() for a, b in zip(first, epoch_batches(data.lengths, 4, seed=5, epoch=0)))
    other = np.concatenate(epoch_batches(data.lengths, 4, seed=6, epoch=0))
    assert other.tolist() != np.concatenate(first).tolist()
    batches = Batches(data, 4, seed=5, buckets=(16, 32, 64))
    stream = batches.iterate()
    full = [next(stream) for _ in range(14)]
    assert full[5][0] == DataPosition(1, 0) and full[6][0] == DataPosition(1, 1)
    resumed = batches.iterate(full[7][0])
    for pos, batch in full[8:]:
        rpos, rbatch = next(resumed)
        assert rpos == pos and all((batch[k] == rbatch[k]).all() for k in batch)


def test_collate_pads_rows_and_interleaves_pairs():
    data = _synthetic(3, "dpo").with_reference(np.arange(6, dtype=np.float32).reshape(3, 2))
    batch = collate(data, np.array([2, 0]), rows=3, length=64, pad_id=9)
    assert batch["input_ids"].shape == (6, 64)
    assert batch["valid"].tolist() == [True, True, False]
    assert batch["ref_logps"].tolist() == [[4, 5], [0, 1], [0, 0]]
    for r, (i, s) in enumerate([(2, 0), (2, 1), (0, 0), (0, 1)]):
        n = len(data.ids[i][s])
        assert (batch["input_ids"][r, :n] == data.ids[i][s]).all() and (batch["input_ids"][r, n:] == 9).all()
        assert batch["attention_mask"][r].sum() == n and (batch["loss_mask"][r, :n] == data.masks[i][s]).all()
        assert not batch["loss_mask"][r, n:].any()
    assert not batch["attention_mask"][4:].any() and not batch["loss_mask"][4:].any()
    assert length_buckets(300, 64) == (64, 128, 256, 300)
