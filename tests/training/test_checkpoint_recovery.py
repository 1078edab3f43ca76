"""Checkpoints that survive a kill: an unreadable latest step falls back to the previous one (with a warning naming
it), and the temp directory of a killed save is removed when the store opens again. Real Orbax on a tiny state."""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax.training.checkpoints import CheckpointStore, signature


def _state(step):
    return {"step": jnp.asarray(step, jnp.int32), "params": {"w": jnp.full((4, 3), float(step))}}


def _abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _saved_store(directory):
    store = CheckpointStore(str(directory), save_every=1, keep=3, async_save=False)
    sig = signature(_state(0)["params"])
    for step in (1, 2):
        store.save(step, _state(step), {"signature": sig, "position": step}, force=True)
    store.wait()
    return store, sig


def test_an_unreadable_latest_step_falls_back_to_the_previous_one(tmp_path, caplog):
    store, sig = _saved_store(tmp_path / "ckpt")
    store.close()
    state_dir = tmp_path / "ckpt" / "2" / "state"
    for name in os.listdir(state_dir):  # a half-copied step: the directory is there, its contents are not
        path = state_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    store = CheckpointStore(str(tmp_path / "ckpt"), save_every=1, keep=3, async_save=False)
    assert store.latest_step() == 2
    with caplog.at_level(logging.WARNING):
        state, meta = store.restore(2, _abstract(), sig)
    assert int(state["step"]) == 1 and meta["position"] == 1
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 1.0))
    assert "checkpoint step 2 is unreadable" in caplog.text and "restoring step 1 instead" in caplog.text
    store.close()


def test_no_readable_step_is_one_clear_error(tmp_path):
    store, sig = _saved_store(tmp_path / "ckpt")
    store.close()
    for step in ("1", "2"):
        shutil.rmtree(tmp_path / "ckpt" / step / "state")
    store = CheckpointStore(str(tmp_path / "ckpt"), save_every=1, keep=3, async_save=False)
    with pytest.raises(ValueError, match=r"ckpt: no readable checkpoint \(step 1: .*delete the directory"):
        store.restore(2, _abstract(), sig)
    store.close()


# Both names Orbax gives a save in progress: with a timestamp suffix, and without (the one this Orbax left when a
# save died of a full disk).
@pytest.mark.parametrize("name", ["3.orbax-checkpoint-tmp-1234567890", "3.orbax-checkpoint-tmp"])
def test_a_killed_saves_temp_directory_is_removed_at_start_up(tmp_path, name):
    store, _ = _saved_store(tmp_path / "ckpt")
    store.close()
    stale = tmp_path / "ckpt" / name
    (stale / "state").mkdir(parents=True)
    (stale / "state" / "partial").write_bytes(b"\0" * 1024)
    store = CheckpointStore(str(tmp_path / "ckpt"), save_every=1, keep=3, async_save=False)
    assert not stale.exists() and store.latest_step() == 2
    store.close()


def test_a_save_pretrained_killed_midway_keeps_the_old_export_and_the_next_save_completes(tmp_path):
    """SIGKILL inside save_pretrained (after the first weights file is half written): the previous export stays whole
    and loadable, and the next save replaces it and removes the killed save's temp directory."""
    import subprocess
    import sys

    from spar_jax.models import from_pretrained, save_pretrained

    from tiny_checkpoints import write_checkpoint

    source = write_checkpoint(tmp_path / "src", "llama", seed=4)
    target = tmp_path / "run" / "hf"
    save_pretrained(from_pretrained(source), target)
    before = sorted(os.listdir(target))
    code = (
        "import os, signal, safetensors.numpy as st\n"
        "from spar_jax.models import from_pretrained, save_pretrained\n"
        "def torn(tensors, path, metadata=None):\n"
        "    open(path, 'wb').write(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "st.save_file = torn\n"
        f"save_pretrained(from_pretrained({str(source)!r}), {str(target)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [n for n in os.listdir(tmp_path / "run") if n.startswith(".tmp-save-hf-")]
    assert len(leftovers) == 1 and sorted(os.listdir(target)) == before
    from_pretrained(str(target))  # the old export is intact
    save_pretrained(from_pretrained(source), target)
    assert sorted(os.listdir(tmp_path / "run")) == ["hf"]
    from_pretrained(str(target))
