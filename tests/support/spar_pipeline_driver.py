"""The SPaR pipeline on a tiny random model (the actor, sampled by the real engine; both models trained for real)
with a scripted, deterministic refiner engine. Used in-process by tests and as a subprocess for kill/resume:

    python tests/support/spar_pipeline_driver.py WORKDIR MODEL_DIR [--scripted]

``--scripted`` scripts the actor too and replaces training by a recording stand-in that writes a small checkpoint
after ``SPAR_TEST_TRAIN_SECONDS`` (default 0): the pipeline's files and decisions without any model compute, for the
multi-process kill/resume test (joined by ``jax.distributed`` when ``JAX_COORDINATOR_ADDRESS`` is set).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from spar_fakes import TEMPLATES, ScriptedEngine, vote_text  # noqa: E402


def _h(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16)


def _judge(instruction, response, n):
    # Refined texts mostly pass; the actor's own outputs mostly fail; a few votes are mixed or invalid.
    if response.startswith("refined"):
        level = int(response.split("-")[1])
        pattern = ["yyy", "yyn", "nny", "nnn"][min(level, 3)] if _h(response) % 3 else "ynx"
    else:
        pattern = ["nnn", "nny", "yyn", "nnx"][_h(response) % 4]
    return [vote_text(pattern[i % 3], f"{_h(response) % 97}-{i}") for i in range(n)]


def _refine(instruction, parent, critique, n):
    depth = int(parent.split("-")[1]) + 1 if parent.startswith("refined") else 0
    return [
        f"thinking about it\n[[start]]\nrefined-{(depth + i + _h(parent)) % 3}-{_h(parent + str(i)) % 1000}\n[[end]]"
        for i in range(n)
    ]


def make_config(workdir: str, model_dir: str):
    from spar_jax.config import default_config
    from spar_jax.files import atomic_open

    templates = os.path.join(workdir, "templates.json")
    # Every process of a multi-process run writes the same file: atomically, so that none reads another's half-write.
    with atomic_open(templates) as f:
        json.dump(TEMPLATES.to_dict(), f)
    c = default_config()
    c.workdir = workdir
    c.seed = 5
    c.stages = ("spar",)
    c.actor.path = model_dir
    c.engine.batch_size = 8
    c.engine.progress = False
    c.prompts.num_train = 6
    c.prompts.num_heldout = 3
    c.spar.iterations = 1
    c.eval.ifeval_source = "google/IFEval"  # the Hub is offline in tests: the report must say it was skipped
    c.spar.shard_size = 3
    c.spar.templates_file = templates
    c.mining.n_samples = 2
    c.mining.k_votes = 3
    c.mining.actor_max_new_tokens = 8
    c.mining.judge_max_new_tokens = 8
    c.mining.truncated_roots = True  # a tiny random model never stops within 8 tokens: every sample is cut
    c.search.k_votes = 3
    for t in (c.dpo, c.sft):
        t.batch_size = 2
        t.max_length = 256
        t.max_prompt_length = 128
        t.learning_rate = 1e-4
        t.save_every = 1
        t.max_steps = 2
    c.eval.max_new_tokens = 8
    return c


def runtime_for(cfg):
    from spar_jax.spar.runtime import Runtime

    refiner = ScriptedEngine(judge=_judge, refine=_refine)
    return Runtime(cfg, engine_factory=lambda role, path, spec: refiner if role == "refiner" else None)


def fake_checkpoint(directory: str, hidden: int = 8) -> str:
    """A stand-in checkpoint directory (config.json + a weights file), written by process 0 only."""
    from spar_jax import files

    files.write_json(os.path.join(directory, "config.json"), {"hidden_size": hidden})
    files.write_text(os.path.join(directory, "model.safetensors"), "0" * hidden)
    return str(directory)


def scripted_runtime(cfg, train_seconds: float = 0.0):
    """Scripted actor and refiner engines; ``train`` records its call and writes a stand-in checkpoint."""
    import time

    from spar_jax.spar.runtime import Runtime

    class ScriptedRuntime(Runtime):
        def __init__(self):
            actor = ScriptedEngine(actor=lambda instruction, n: [f"answer {i} to {instruction[:20]}" for i in range(n)])
            refiner = ScriptedEngine(judge=_judge, refine=_refine)
            super().__init__(cfg, engine_factory=lambda role, path, spec: actor if role == "actor" else refiner)
            self.engines = {"actor": actor, "refiner": refiner}
            self.trained = []

        def train(self, kind, data_path, init_path, out_dir, *, role, seed, initial=False):
            self.trained.append(os.path.relpath(out_dir, cfg.workdir))
            time.sleep(train_seconds)
            fake_checkpoint(os.path.join(out_dir, "hf"), hidden=9)
            return {"steps": 1, "examples": 1}

    return ScriptedRuntime()


def run(workdir: str, model_dir: str, scripted: bool = False) -> dict:
    from spar_jax import config as config_lib
    from spar_jax import workdir_lock
    from spar_jax.spar.pipeline import Pipeline

    cfg = config_lib.parse(make_config(workdir, model_dir))
    if scripted:
        runtime = scripted_runtime(cfg, float(os.environ.get("SPAR_TEST_TRAIN_SECONDS", "0")))
    else:
        runtime = runtime_for(cfg)
    with workdir_lock.hold(workdir):  # as spar_jax.main holds it: a killed run's lock is taken over on resume
        return Pipeline(cfg, runtime).run()


def install_kill_hook(point: str) -> None:
    """SIGKILL this process at ``point``: ``export:STAGE`` inside the HF export of training stage STAGE (its first
    weights file half written), ``report`` when the run's final report starts (every stage finished)."""
    import signal

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point.startswith("export:"):
        import safetensors.numpy

        marker, save_file = os.path.join(point.split(":", 1)[1], ".tmp-save-hf-"), safetensors.numpy.save_file

        def torn(tensors, path, metadata=None):
            if marker in path:
                open(path, "wb").write(b"partial")
                die()
            return save_file(tensors, path, metadata=metadata)

        safetensors.numpy.save_file = torn
    elif point == "report":
        from spar_jax.spar import report

        report.write_report = lambda *args, **kwargs: die()
    else:
        raise ValueError(f"unknown kill point {point!r}")


if __name__ == "__main__":
    if os.environ.get("SPAR_TEST_KILL_AT"):
        install_kill_hook(os.environ["SPAR_TEST_KILL_AT"])
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        import jax

        from spar_jax.parallel import maybe_initialize_distributed

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        maybe_initialize_distributed()
    run(sys.argv[1], sys.argv[2], scripted="--scripted" in sys.argv[3:])
