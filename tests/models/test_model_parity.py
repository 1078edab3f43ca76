"""Logits parity with transformers' PyTorch classes, for every supported architecture (fp32, tiny random)."""

import numpy as np
import pytest
import torch
import transformers

from spar_jax.models import from_pretrained

from tiny_checkpoints import ARCHS, write_checkpoint

TOL = 1e-4


def _hf_logits(directory, ids, mask=None, position_ids=None):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=None if mask is None else torch.tensor(mask),
            position_ids=None if position_ids is None else torch.tensor(position_ids),
        )
    return out.logits.numpy()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_logits_match_transformers(arch, tmp_path):
    directory = write_checkpoint(tmp_path / arch, arch, seed=1)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 256, size=(2, 11)).astype(np.int32)
    model = from_pretrained(directory)
    ours = np.asarray(model(ids))
    ref = _hf_logits(directory, ids.astype(np.int64))
    err = np.abs(ours - ref).max()
    print(f"{arch}: max |logits diff| = {err:.2e}")
    assert ours.shape == (2, 11, 256)
    assert err <= TOL


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_left_padded_row_equals_unpadded(arch, tmp_path):
    directory = write_checkpoint(tmp_path / arch, arch, seed=2)
    rng = np.random.default_rng(1)
    full = rng.integers(3, 256, size=(9,)).astype(np.int32)
    short = full[:6]
    pad = 3
    ids = np.stack([full, np.concatenate([np.zeros(pad, np.int32), short])])
    mask = np.stack([np.ones(9, np.int32), np.concatenate([np.zeros(pad, np.int32), np.ones(6, np.int32)])])
    model = from_pretrained(directory)
    ours = np.asarray(model(ids, mask))
    ref_short = _hf_logits(directory, short[None].astype(np.int64))[0]
    ref_full = _hf_logits(directory, full[None].astype(np.int64))[0]
    assert np.abs(ours[1, pad:] - ref_short).max() <= TOL
    assert np.abs(ours[0] - ref_full).max() <= TOL


def test_per_layer_windows_match_transformers(tmp_path):
    """Qwen2 with sliding windows on some layers only (``max_window_layers``): each layer gets its own mask."""
    overrides = {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}
    directory = write_checkpoint(tmp_path / "qwen2_windows", "qwen2", seed=3, **overrides)
    full = write_checkpoint(tmp_path / "qwen2_full", "qwen2", seed=3)
    ids = np.random.default_rng(2).integers(3, 256, size=(2, 11)).astype(np.int32)
    model = from_pretrained(directory)
    assert tuple(model.config.layer_windows()) == (0, 4)
    ours = np.asarray(model(ids))
    ref = _hf_logits(directory, ids.astype(np.int64))
    assert np.abs(ours - ref).max() <= TOL
    # The window matters at this length: without it the logits differ.
    assert np.abs(ours - _hf_logits(full, ids.astype(np.int64))).max() > 100 * TOL
