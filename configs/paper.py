"""The paper's run settings, shared by the paper-scale configs (``configs/llama3_8b.py`` and friends, which import it
as ``configs.paper``: run them from the repository root, as every command in the docs does).

``PAPER_SETTINGS`` records Cheng et al. 2024 (Sec. 4, App. B; the authors' public code thu-coai/SPaR, file named
next to each value). ``RELEASE`` locates the authors' released data (HF hub dataset ``CCCCCC/SPaR``). ``paper_config``
builds one backbone's run config in one of two variants:

- ``"release"`` (default, the reproduction): Stage 0 = SFT of actor and refiner on the released strong-model data,
  the loop's prompts from the released data, the authors' judge/refine wording via ``spar.templates_file`` (written
  by ``python -m spar_jax.tools.import_templates``). Comparable with the paper's SFT / iteration rows.
- ``"offline"`` (no released data): our generated verifiable prompts and the rule-made Stage-0 bootstrap
  (``spar_jax.spar.bootstrap``), our wording. Comparable between our own runs (and the base model's numbers), not
  with the paper's iteration rows: Stage 0 and the prompt distribution differ.

Everything is a plain config value; the command line overrides any of them (``--config.spar.initial_sft_actor=...``).
"""

from __future__ import annotations

import ml_collections

from spar_jax.config import default_config

AUTHORS_SETTINGS = dict(
    # src/configs/sft.yaml: lr 2e-6, constant_with_warmup, warmup_ratio 0.1, 5 epochs, cutoff_len 4096,
    # per_device_train_batch_size 2 x gradient_accumulation_steps 4 x 8 GPUs (src/judge.sh, src/infer.sh) = 64.
    sft=dict(learning_rate=2e-6, schedule="constant", warmup_ratio=0.1, epochs=5, batch_size=64, max_length=4096),
    # src/configs/dpo.yaml: lr 2e-7, linear, warmup_ratio 0.1, 1 epoch, pref_beta 0.1, pref_ftx 0.1, cutoff_len 2048,
    # 2 x 2 x 8 GPUs = 32.
    dpo=dict(learning_rate=2e-7, schedule="linear", warmup_ratio=0.1, epochs=1, batch_size=32, max_length=2048,
             beta=0.1, sft_weight=0.1, loss_type="sigmoid"),
    actor_max_new_tokens=2048,  # src/infer.py: SamplingParams(max_tokens=2048), n=5, temperature 0.9, top_p 0.9
    # src/judge.py: max_tokens=2048 and src/ToT/task.py: max_critique_tokens=2048; ours stays 1024 (a judgment rarely
    # needs more): with 2048 the refine prompt (template + instruction + 2048-token response + critique) and its
    # 3072 new tokens would not fit LLaMA-3's 8192-token context.
    judge_max_new_tokens=1024,
    refine_max_new_tokens=3072,  # src/ToT/task.py: max_refine_tokens=3072
    prompts_per_iteration=10000,  # src/infer.sh: num=10000 prompts per inference run
)  # fmt: skip

PAPER_SETTINGS = dict(
    iterations=3,
    dpo=AUTHORS_SETTINGS["dpo"],
    sft=AUTHORS_SETTINGS["sft"],
    mining=dict(n_samples=5, k_votes=5, actor_temperature=0.9, actor_top_p=0.9, judge_temperature=0.7, judge_top_p=1.0),
    search=dict(strategy="bfs", branch=3, keep=2, max_depth=3, threshold=0.5, k_votes=5),
    mixture=dict(cap_refine=4000, cap_tree_judge_yes=1500, cap_tree_judge_no=1000, cap_actor_judge_no=500,
                 cap_actor_judge_yes=2500),
    prompts="instruction-evolved constraint prompts, tens of thousands (released as CCCCCC/SPaR on the HF hub)",
)  # fmt: skip

# The authors' release, downloaded once by the user (no spar_jax code downloads it):
#   huggingface-cli download CCCCCC/SPaR --repo-type dataset --local-dir data/SPaR
# Layout of the hub repository: sft/data.json (the 8k gpt-4o-mini SFT samples, LLaMA-Factory format) and per-model
# iteration data in llama3_8b/{actor,refiner}/ and mistral_7b/{actor,refiner}/ (actor: DPO pairs, refiner: SFT).
# The release has no separate prompt-pool file: the prompts of the released actor data (the pool's prompts on which
# that model failed and a refinement passed) stand in for it. ``split_release_sft`` separates sft/data.json into
# the actor's and the refiner's records (python -m spar_jax.tools.split_release_sft).
RELEASE = dict(
    hub_id="CCCCCC/SPaR",
    local_dir="data/SPaR",
    sft="sft/data.json",
    sft_actor="sft/actor.jsonl",  # written by spar_jax.tools.split_release_sft
    sft_refiner="sft/refiner.jsonl",
    prompt_pool={"llama3_8b": "llama3_8b/actor", "mistral_7b": "mistral_7b/actor"},
    templates="templates.json",  # written by spar_jax.tools.import_templates from a clone of thu-coai/SPaR
)
VARIANTS = ("release", "offline")

# The layout of an 8B-9B backbone on a v5p-8 slice (4 chips), shared by the 8B-9B configs.
V5P_8 = dict(
    mesh_shape=(1, -1, 1),  # FSDP over every chip; batch rows over data x fsdp
    engine_batch_size=120,  # 24 prompts x 5 or 40 x 3 rows: divides 4 and 8 chips
    shard_size=512,
    dpo_grad_accum=2,
    sft_grad_accum=4,
)


def release_path(key: str, model: str = "llama3_8b") -> str:
    """Where ``RELEASE[key]`` lives under the local download (``prompt_pool`` per model; others use LLaMA3-8B's)."""
    rel = RELEASE[key]
    if isinstance(rel, dict):
        rel = rel.get(model, rel["llama3_8b"])
    return f"{RELEASE['local_dir']}/{rel}"


def paper_config(
    *,
    name: str,
    actor_path: str,
    mesh_shape: tuple[int, int, int],
    engine_batch_size: int,
    shard_size: int,
    dpo_grad_accum: int = 1,
    sft_grad_accum: int = 1,
    variant: str = "release",
) -> ml_collections.ConfigDict:
    """A paper-scale SPaR run of one backbone (actor and refiner start from ``actor_path``).

    Training keeps float32 master weights with bfloat16 compute: at the paper's DPO learning rate (2e-7) an Adam step
    is far below bfloat16's resolution, so bfloat16 weights would not move. ``mesh_shape`` is (data, fsdp, tensor);
    ``engine_batch_size`` rows should divide the batch axes (data x fsdp) for both n=5 sampling and k=5 judging.
    ``variant``: "release" (Stage 0 and prompts from the authors' data) or "offline" (see the module docstring).
    """
    if variant not in VARIANTS:
        raise ValueError(f"{name}: unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    c = default_config()
    c.workdir = f"runs/{name}" + ("" if variant == "release" else f"_{variant}")  # launch/run.sh: the GCS mount
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
    c.spar.iterations = PAPER_SETTINGS["iterations"]
    c.spar.shard_size = shard_size
    c.prompts.num_train = AUTHORS_SETTINGS["prompts_per_iteration"]  # the source's first 10k (see per_iteration)
    c.prompts.num_heldout = 500

    a = AUTHORS_SETTINGS
    c.mining.actor_max_new_tokens = a["actor_max_new_tokens"]
    c.mining.judge_max_new_tokens = a["judge_max_new_tokens"]
    c.search.judge_max_new_tokens = a["judge_max_new_tokens"]
    c.search.refine_max_new_tokens = a["refine_max_new_tokens"]
    c.eval.max_new_tokens = a["actor_max_new_tokens"]
    for section in (c.sft, c.sft0):  # both of the authors' SFT runs use src/configs/sft.yaml
        section.update(a["sft"])
        section.grad_accum_steps = sft_grad_accum
    c.dpo.update(a["dpo"])
    c.dpo.grad_accum_steps = dpo_grad_accum

    if variant == "release":
        c.spar.initial_sft_actor = release_path("sft_actor")
        c.spar.initial_sft_refiner = release_path("sft_refiner")
        c.spar.templates_file = release_path("templates")
        for judge in ("calibration", "llmbar"):  # the refiner judges with the wording it was trained on
            c[judge].judge.templates_file = release_path("templates")
        c.prompts.source = release_path("prompt_pool", name)
    else:
        c.prompts.source = "generated"  # offline verifiable prompts (spar_jax.spar.constraint_prompts)
        c.spar.bootstrap_prompts = 8000  # rule-made Stage-0 data in place of the 8k strong-model samples
        c.spar.bootstrap_responses = "actor"
    c.eval.ifeval_source = "google/IFEval"
    return c
