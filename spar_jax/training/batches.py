"""Chat examples -> token ids with loss masks -> padded, length-bucketed batches in a seeded, resumable order.

Layout of one sequence: ``ids`` [L] int32 and ``mask`` [L] bool, where ``mask[t]`` is True when token t is a training
target (an assistant-turn token rendered by the chat template, closing tokens included). The trainer predicts
``ids[1:]`` from ``ids[:-1]`` and uses ``mask[1:]``, so prompt tokens and padding never contribute. A DPO pair can
also be packed into one row (``pack_pair``: the shared prefix once, then each branch; ``collate(packed=True)``).

Truncation (sequences longer than ``max_length``): the *prompt* (everything before the first target token) is cut
from the left to ``max_prompt_length`` tokens, then the rest (the response) is cut from the right. Counts are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from spar_jax.training import records as R

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class TruncationStats:
    examples: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenizedData:
    """Tokenized training examples.

    Attributes:
      kind: "sft" (one sequence per example) or "dpo" (chosen, rejected).
      ids, masks: per example a tuple of 1 (sft) or 2 (dpo) int32 / bool arrays (see the module docstring).
      stats: truncation counts.
      ref_logps: float32 [N, 2] reference sequence log-probs (chosen, rejected) for DPO once computed, else None.
    """

    kind: str
    ids: list[tuple[np.ndarray, ...]]
    masks: list[tuple[np.ndarray, ...]]
    stats: TruncationStats
    ref_logps: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """[N] the longest sequence of each example."""
        return np.asarray([max(len(s) for s in seqs) for seqs in self.ids], np.int64)

    def packed_lengths(self) -> np.ndarray:
        """[N] DPO: tokens of each pair packed by ``pack_pair`` (shared prefix once, then both branches)."""
        if self.kind != "dpo":
            raise ValueError("packed lengths are defined for DPO pairs")
        return np.asarray(
            [len(c) + len(r) - shared_prefix_length(c, r, cm, rm) for (c, r), (cm, rm) in zip(self.ids, self.masks)],
            np.int64,
        )

    def fingerprint(self) -> str:
        """A hash of every token id and mask, to check that cached reference log-probs belong to this data."""
        h = hashlib.sha256(self.kind.encode())
        for seqs, masks in zip(self.ids, self.masks):
            for s, m in zip(seqs, masks):
                h.update(np.int64(len(s)).tobytes() + s.astype(np.int32).tobytes() + m.astype(np.uint8).tobytes())
        return h.hexdigest()[:32]

    def with_reference(self, ref_logps: np.ndarray) -> "TokenizedData":
        ref_logps = np.asarray(ref_logps, np.float32)
        if self.kind != "dpo" or ref_logps.shape != (len(self), 2):
            raise ValueError(f"reference log-probs must be [N={len(self)}, 2] for DPO data, got {ref_logps.shape}")
        return dataclasses.replace(self, ref_logps=ref_logps)


# -- chat template rendering ------------------------------------------------------------------------------------------


def _render(tokenizer, messages: R.Messages, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def _check_prefix(prefix: list[int], full: list[int], where: str) -> None:
    if full[: len(prefix)] != prefix:
        raise ValueError(
            f"{where}: the chat template does not render a conversation as an extension of its prefix, "
            "so assistant turns cannot be located in the token ids"
        )


def conversation_ids(tokenizer, messages: R.Messages, where: str) -> tuple[list[int], list[bool]]:
    """Token ids of a whole conversation and a mask that is True exactly on the assistant turns' tokens."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; training needs one to build prompt/response segments")
    full = _render(tokenizer, messages, False)
    mask = [False] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
        _check_prefix(before, upto, where)
        _check_prefix(upto, full, where)
        mask[len(before) : len(upto)] = [True] * (len(upto) - len(before))
    if not any(mask):
        raise ValueError(f"{where}: the rendered conversation has no assistant tokens")
    return full, mask


def truncate(
    ids: Sequence[int], mask: Sequence[bool], max_length: int, max_prompt_length: int
) -> tuple[list[int], list[bool], bool, bool]:
    """Fit one sequence into ``max_length``: prompt cut from the left, then response from the right.

    Returns (ids, mask, prompt_was_cut, response_was_cut). The prompt is cut only when the sequence is too long.
    """
    ids, mask = list(ids), list(mask)
    if len(ids) <= max_length:
        return ids, mask, False, False
    first = mask.index(True)
    prompt_cut = first > max_prompt_length
    if prompt_cut:
        drop = first - max_prompt_length
        ids, mask = ids[drop:], mask[drop:]
    response_cut = len(ids) > max_length
    return ids[:max_length], mask[:max_length], prompt_cut, response_cut


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    if not 0 < max_prompt_length < max_length:
        raise ValueError(f"need 0 < max_prompt_length ({max_prompt_length}) < max_length ({max_length})")


def tokenize_sft(records: Any, tokenizer, *, max_length: int, max_prompt_length: int) -> TokenizedData:
    """SFT records (see :mod:`records`) -> TokenizedData("sft"); every assistant turn is a target."""
    _check_lengths(max_length, max_prompt_length)
    ids, masks, stats = [], [], TruncationStats()
    for where, record in R.iter_records(records):
        seq, mask = conversation_ids(tokenizer, R.sft_messages(record, where), where)
        seq, mask, p_cut, r_cut = truncate(seq, mask, max_length, max_prompt_length)
        stats.examples += 1
        stats.prompts_truncated += p_cut
        stats.responses_truncated += r_cut
        ids.append((np.asarray(seq, np.int32),))
        masks.append((np.asarray(mask, bool),))
    return _finish(TokenizedData("sft", ids, masks, stats))


def tokenize_dpo(records: Any, tokenizer, *, max_length: int, max_prompt_length: int) -> TokenizedData:
    """DPO records -> TokenizedData("dpo"): per example (prompt + chosen, prompt + rejected).

    Both sequences share the prompt, cut identically: the prompt is cut from the left when the prompt plus the
    *longer* response exceeds ``max_length``; each response is then cut from the right.
    """
    _check_lengths(max_length, max_prompt_length)
    ids, masks, stats = [], [], TruncationStats()
    for where, record in R.iter_records(records):
        prompt, chosen, rejected = R.dpo_triple(record, where)
        seqs = [
            conversation_ids(tokenizer, [*prompt, {"role": "assistant", "content": text}], where)
            for text in (chosen, rejected)
        ]
        longest = max(range(2), key=lambda i: len(seqs[i][0]))
        _, _, p_cut, _ = truncate(*seqs[longest], max_length, max_prompt_length)
        prompt_len = seqs[0][1].index(True)
        keep_from = prompt_len - max_prompt_length if p_cut else 0
        cut = [truncate(s[keep_from:], m[keep_from:], max_length, max_length - 1) for s, m in seqs]
        stats.examples += 1
        stats.prompts_truncated += p_cut
        stats.responses_truncated += any(c[3] for c in cut)
        ids.append(tuple(np.asarray(c[0], np.int32) for c in cut))
        masks.append(tuple(np.asarray(c[1], bool) for c in cut))
    return _finish(TokenizedData("dpo", ids, masks, stats))


def _finish(data: TokenizedData) -> TokenizedData:
    if not len(data):
        raise ValueError("training data: no records")
    s = data.stats
    if s.prompts_truncated or s.responses_truncated:
        _log.warning(
            "%s data: %d of %d examples had their prompt cut (from the left), %d their response cut (from the right)",
            data.kind,
            s.prompts_truncated,
            s.examples,
            s.responses_truncated,
        )
    return data


# -- order and batches ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataPosition:
    """Where the next batch starts: ``epoch`` and the number of batches already taken in it."""

    epoch: int = 0
    step: int = 0


def length_buckets(max_length: int, smallest: int = 64) -> tuple[int, ...]:
    """Padded lengths a batch may have: powers of two from ``smallest`` below ``max_length``, then ``max_length``."""
    out, n = [], smallest
    while n < max_length:
        out.append(n)
        n *= 2
    return (*out, max_length)


def epoch_batches(
    lengths: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    group_by_length: bool = True,
    window_batches: int = 32,
) -> list[np.ndarray]:
    """Example indices of every batch of ``epoch``, a pure function of (lengths, batch_size, seed, epoch).

    A seeded permutation; with ``group_by_length`` each window of ``window_batches`` batches is sorted by length
    (less padding) and the batches are then shuffled again. The last batch may be short.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_by_length:
        window = batch_size * window_batches
        order = np.concatenate(
            [w[np.argsort(-lengths[w], kind="stable")] for w in np.split(order, range(window, len(order), window))]
        )
    batches = np.split(order, range(batch_size, len(order), batch_size))
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shared_prefix_length(
    chosen: np.ndarray, rejected: np.ndarray, chosen_mask: np.ndarray, rejected_mask: np.ndarray
) -> int:
    """Leading tokens two sequences have in common, with the same loss mask (the prompt, and more when the
    responses start alike)."""
    n = min(len(chosen), len(rejected))
    differ = (chosen[:n] != rejected[:n]) | (chosen_mask[:n] != rejected_mask[:n])
    return int(np.argmax(differ)) if differ.any() else n


def pack_pair(seqs: tuple[np.ndarray, np.ndarray], masks: tuple[np.ndarray, np.ndarray]):
    """A DPO pair as one row: the shared prefix once, then the rest of chosen, then the rest of rejected.

    Returns ``ids`` int32 [L], ``mask`` bool [L] (training targets, as in the module docstring) and ``segments``
    int32 [L]: 0 shared prefix, 1 chosen branch, 2 rejected branch (``Transformer.hidden_states(segment_ids=...)``
    lets each branch attend to the prefix and itself only). L = len(chosen) + len(rejected) - shared; a pair whose
    prompts share N tokens is N tokens shorter than the two rows of the unpacked layout.
    """
    (c, r), (cm, rm) = seqs, masks
    n = shared_prefix_length(c, r, cm, rm)
    segments = np.concatenate([np.zeros(n, np.int32), np.ones(len(c) - n, np.int32), np.full(len(r) - n, 2, np.int32)])
    return (np.concatenate([c, r[n:]]).astype(np.int32), np.concatenate([cm, rm[n:]]).astype(bool), segments)


def collate(
    data: TokenizedData, indices: np.ndarray, rows: int, length: int, pad_id: int = 0, *, packed: bool = False
) -> dict[str, np.ndarray]:
    """Pad examples ``indices`` into a batch of ``rows`` examples (extra rows are invalid padding).

    Returns numpy arrays with S = 1 (sft, or dpo with ``packed``: one ``pack_pair`` row per pair) or 2 (dpo; chosen
    and rejected of one pair on adjacent rows):
      ``input_ids`` int32 [rows * S, length]; ``loss_mask`` / ``attention_mask`` bool [rows * S, length];
      ``valid`` bool [rows]; for DPO with reference log-probs, ``ref_logps`` float32 [rows, 2]; when packed,
      ``segment_ids`` int32 [rows, length] (-1 on padding).
    """
    if packed and data.kind != "dpo":
        raise ValueError("collate: packed=True needs DPO pairs")
    per = 1 if data.kind == "sft" or packed else 2
    if len(indices) > rows:
        raise ValueError(f"collate: {len(indices)} examples do not fit {rows} rows")
    ids = np.full((rows * per, length), pad_id, np.int32)
    loss_mask = np.zeros((rows * per, length), bool)
    attention = np.zeros((rows * per, length), bool)
    segment_ids = np.full((rows, length), -1, np.int32) if packed else None
    for r, i in enumerate(indices):
        parts = [pack_pair(data.ids[i], data.masks[i])] if packed else zip(data.ids[i], data.masks[i])
        for s, (seq, mask, *seg) in enumerate(parts):
            if len(seq) > length:
                raise ValueError(f"collate: example {i} has {len(seq)} tokens, more than the padded length {length}")
            ids[r * per + s, : len(seq)] = seq
            loss_mask[r * per + s, : len(seq)] = mask
            attention[r * per + s, : len(seq)] = True
            if packed:
                segment_ids[r, : len(seq)] = seg[0]
    out = {
        "input_ids": ids,
        "loss_mask": loss_mask,
        "attention_mask": attention,
        "valid": np.arange(rows) < len(indices),
    }
    if packed:
        out["segment_ids"] = segment_ids
    if data.ref_logps is not None:
        ref = np.zeros((rows, 2), np.float32)
        ref[: len(indices)] = data.ref_logps[np.asarray(indices, np.int64)]
        out["ref_logps"] = ref
    return out


class Batches:
    """Global batches of ``batch_size`` examples over epochs in a seeded, resumable order."""

    def __init__(
        self,
        data: TokenizedData,
        batch_size: int,
        *,
        seed: int = 0,
        buckets: Sequence[int] = (),
        group_by_length: bool = True,
        pad_id: int = 0,
        packed: bool = False,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.data, self.batch_size, self.seed, self.packed = data, batch_size, seed, packed
        self.lengths = data.packed_lengths() if packed else data.lengths
        self.buckets = tuple(sorted(buckets)) or (int(self.lengths.max()),)
        if self.lengths.max() > self.buckets[-1]:
            raise ValueError(
                f"an example has {self.lengths.max()} tokens, longer than the largest bucket {self.buckets[-1]}"
            )
        self.group_by_length, self.pad_id = group_by_length, pad_id

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def padded_length(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(self.lengths, self.batch_size, self.seed, epoch, group_by_length=self.group_by_length)

    def iterate(self, start: DataPosition = DataPosition()) -> Iterator[tuple[DataPosition, dict[str, np.ndarray]]]:
        """Yield ``(position after this batch, batch)`` forever, starting at ``start``."""
        epoch, step = start.epoch, start.step
        while True:
            plan = self.epoch(epoch)
            for i in range(step, len(plan)):
                idx = plan[i]
                length = self.padded_length(int(self.lengths[idx].max()))
                batch = collate(self.data, idx, self.batch_size, length, self.pad_id, packed=self.packed)
                nxt = DataPosition(epoch, i + 1) if i + 1 < len(plan) else DataPosition(epoch + 1, 0)
                yield nxt, batch
            epoch, step = epoch + 1, 0
