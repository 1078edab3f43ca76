"""One process of a multi-process (or the single-process reference) run of sampling, a DPO step, an Orbax
checkpoint round trip and an HF export on a (data, fsdp, tensor) mesh over every global device.

    python tests/support/multihost_driver.py MODEL_DIR OUT_DIR MESH          # MESH like 2,2,2

Multi-process: set ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` (joined by
``spar_jax.parallel.maybe_initialize_distributed``) and ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
Every process writes ``OUT_DIR/result_<process index>.json``; the checkpoint (``OUT_DIR/ckpt``) and the export
(``OUT_DIR/hf``) are shared. Used by ``tests/test_multihost.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))  # PAIRS
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPT_IDS = [[5, 77, 300, 4096, 12], list(range(100, 123)), [49000, 7]]
CHAT_PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three."}]]
MAX_NEW_TOKENS = 8


def _host(tree):
    """Full host copies of (possibly non-fully-addressable) global arrays: the export's own gather helper."""
    import jax

    from spar_jax.models.weights import _host_array

    return jax.tree.map(_host_array, tree)


def _checksums(tree) -> dict[str, list[float]]:
    """{path: [sum, sum of |x|]} in float64 for every leaf of a host pytree."""
    import jax
    import numpy as np

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf).astype(np.float64)
        out[jax.tree_util.keystr(path)] = [float(a.sum()), float(np.abs(a).sum())]
    return out


def run(model_dir: str, out_dir: str, mesh_shape: tuple[int, ...]) -> dict:
    import jax

    from spar_jax.parallel import make_mesh, maybe_initialize_distributed

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives (jax's default)
    distributed = maybe_initialize_distributed()  # JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
    import numpy as np
    import safetensors.numpy
    from jax.experimental import multihost_utils
    from test_training_trainer import PAIRS, _config

    from spar_jax.models import from_pretrained, load_tokenizer, pretrained
    from spar_jax.sampling import Engine, hosts
    from spar_jax.training import Trainer, load_data

    times = {}
    clock = time.perf_counter()
    mesh = make_mesh(mesh_shape)
    tokenizer = load_tokenizer(model_dir)
    model = from_pretrained(model_dir, mesh=mesh)
    q = model.layers.q[...]
    local_q = {str(shard.index): shard.data.size for shard in q.addressable_shards}  # distinct blocks on this process
    result = {
        "distributed": distributed,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mesh_shape": dict(mesh.shape),
        "mesh_is_global": hosts.is_global(mesh),
        "q_spec": str(q.sharding.spec),
        "q_fully_addressable": q.is_fully_addressable,
        # the fraction of q's elements held by this process (0.5: the parameters are split between the processes)
        "q_local_fraction": sum(local_q.values()) / q.size,
    }

    # 1. Greedy sampling: every process passes the same requests and gets every result back, in order.
    engine = Engine(
        model,
        tokenizer,
        mesh=mesh,
        batch_size=4,
        max_length=64,
        length_buckets=(48,),
        new_token_buckets=(MAX_NEW_TOKENS,),
        progress=False,
    )  # one compiled shape
    results = engine.generate(PROMPT_IDS + CHAT_PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
    result["sampling"] = [
        {"prompt": r.prompt_token_ids, "tokens": c.token_ids, "logprobs": c.logprobs, "finish": c.finish_reason}
        for r in results
        for c in r.completions
    ]
    result["sampling_batches"] = engine.stats.batches
    times["sampling"] = time.perf_counter() - clock

    # 2. One DPO step (reference log-probs first), saving an Orbax checkpoint at the step (force-saved at the end).
    clock = time.perf_counter()
    ckpt = os.path.join(out_dir, "ckpt")
    cfg = _config(checkpoint_dir=ckpt, save_every=1, keep_checkpoints=1)
    trainer = Trainer(model, load_data(PAIRS, tokenizer, cfg), cfg, tokenizer=tokenizer)
    metrics = trainer.fit()
    trainer.close()
    result["metrics"] = {k: float(v) for k, v in metrics.items() if k not in ("tokens_per_s", "step_time_s")}
    result["ref_logps"] = np.asarray(trainer.data.ref_logps).tolist()
    result["trained_q_spec"] = str(trainer.state["params"]["layers"]["q"].sharding.spec)
    saved = _host(trainer.state)
    result["saved_checksums"] = _checksums(saved)
    times["train"] = time.perf_counter() - clock

    # 3. A fresh trainer over the same directory restores step 1 (state, data position) from the checkpoint.
    clock = time.perf_counter()
    fresh = from_pretrained(model_dir, mesh=mesh)
    restored_trainer = Trainer(fresh, load_data(PAIRS, tokenizer, cfg), cfg, tokenizer=tokenizer)
    restored = _host(restored_trainer.state)
    result["restored_step"] = restored_trainer.step
    result["restored_position"] = [restored_trainer.position.epoch, restored_trainer.position.step]
    same_structure = jax.tree.structure(restored) == jax.tree.structure(saved)
    result["restored_same_structure"] = same_structure
    result["restored_max_abs_diff"] = (
        max(
            float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved))
        )
        if same_structure
        else None
    )
    result["restored_shardings_match"] = all(
        r.sharding.is_equivalent_to(s.sharding, r.ndim)
        for r, s in zip(jax.tree.leaves(restored_trainer.state), jax.tree.leaves(trainer.state))
    )
    times["restore"] = time.perf_counter() - clock

    # 4. HF export from the restored trainer: every process takes part in the gathers, exactly one writes files.
    clock = time.perf_counter()
    writes, metadata_writes = [], []
    save_file, write_metadata = safetensors.numpy.save_file, pretrained._write_metadata

    def counting_save_file(tensors, filename, *args, **kwargs):
        writes.append(os.path.basename(filename))
        return save_file(tensors, filename, *args, **kwargs)

    def counting_write_metadata(directory, *args, **kwargs):
        metadata_writes.append(directory)
        return write_metadata(directory, *args, **kwargs)

    safetensors.numpy.save_file, pretrained._write_metadata = counting_save_file, counting_write_metadata
    try:
        restored_trainer.export(os.path.join(out_dir, "hf"))
    finally:
        safetensors.numpy.save_file, pretrained._write_metadata = save_file, write_metadata
    restored_trainer.close()
    multihost_utils.sync_global_devices("export done")  # process 0's files are in place for everyone
    result["export_writes"] = writes  # safetensors files this process wrote
    result["export_metadata_writes"] = len(metadata_writes)  # config / index / tokenizer writes by this process
    result["export_files"] = sorted(os.listdir(os.path.join(out_dir, "hf")))
    times["export"] = time.perf_counter() - clock
    result["times"] = times

    with open(os.path.join(out_dir, f"result_{jax.process_index()}.json"), "w") as f:
        json.dump(result, f)
    multihost_utils.sync_global_devices("driver done")  # nobody tears the coordination service down early
    return result


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], tuple(int(s) for s in sys.argv[3].split(",")))
