"""The paper's run settings, shared by the paper-scale configs (``configs/llama3_8b.py`` and friends).

``PAPER_SETTINGS`` records Cheng et al. 2024 (Sec. 4, App. B; ``../shared/docs/spar_method.md``); the schema's
defaults (``spar_jax.config.default_config``) already equal those the schema has, and the tests check that.
``paper_config`` builds one model's run config: the same loop, dtypes and remat for every backbone, with the model's
path, mesh and batch sizes as arguments.
"""

from __future__ import annotations

import ml_collections

from spar_jax.config import default_config

PAPER_SETTINGS = dict(
    iterations=3,
    dpo=dict(learning_rate=2e-7, schedule="linear", warmup_ratio=0.1, epochs=1, batch_size=32, max_length=2048,
             beta=0.1, sft_weight=0.1, loss_type="sigmoid"),
    sft=dict(learning_rate=2e-6, schedule="constant", warmup_ratio=0.1, epochs=3, max_length=4096),
    mining=dict(n_samples=5, k_votes=5, actor_temperature=0.9, actor_top_p=0.9, judge_temperature=0.7, judge_top_p=1.0),
    search=dict(strategy="bfs", branch=3, keep=2, max_depth=3, threshold=0.5, k_votes=5),
    mixture=dict(cap_refine=4000, cap_tree_judge_yes=1500, cap_tree_judge_no=1000, cap_actor_judge_no=500,
                 cap_actor_judge_yes=2500),
    prompts="instruction-evolved constraint prompts, tens of thousands (released as CCCCCC/SPaR on the HF hub)",
)  # fmt: skip


def paper_config(*, name: str, actor_path: str, mesh_shape: tuple[int, int, int], engine_batch_size: int,
                 shard_size: int, dpo_grad_accum: int = 1, sft_grad_accum: int = 1) -> ml_collections.ConfigDict:
    """A paper-scale SPaR run of one backbone (actor and refiner start from ``actor_path``).

    Training keeps float32 master weights with bfloat16 compute: at the paper's DPO learning rate (2e-7) an Adam step
    is far below bfloat16's resolution, so bfloat16 weights would not move. ``mesh_shape`` is (data, fsdp, tensor);
    ``engine_batch_size`` rows should divide the batch axes (data x fsdp) for both n=5 sampling and k=5 judging.
    """
    c = default_config()
    c.workdir = f"runs/{name}"  # launch/run.sh points this at the GCS mount (gs://BUCKET/... via gcsfuse)
    c.stages = ("spar",)  # each iteration evaluates the new actor (held-out prompts + IFEval)
    for role in (c.actor, c.refiner):
        role.dtype = "bfloat16"
        role.param_dtype = "float32"
        role.remat = "full"
    c.actor.path = actor_path
    c.refiner.path = ""  # the refiner starts from the same checkpoint
    c.mesh.shape = mesh_shape
    c.engine.batch_size = engine_batch_size
    c.engine.progress = False  # logs of a pod run go to files
    c.prompts.source = "generated"  # offline verifiable prompts; point at the paper's prompt JSONL to reproduce it
    c.prompts.num_train = 10000
    c.prompts.num_heldout = 500
    c.spar.iterations = PAPER_SETTINGS["iterations"]
    c.spar.shard_size = shard_size
    c.dpo.grad_accum_steps = dpo_grad_accum
    c.sft.grad_accum_steps = sft_grad_accum
    c.sft0.grad_accum_steps = sft_grad_accum
    c.eval.ifeval_source = "google/IFEval"
    return c
