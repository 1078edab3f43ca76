"""Paper scale: SPaR on LLaMA-3-70B-Instruct (actor and refiner), 3 iterations, the authors' settings and Stage 0.

Weights: the HF checkpoint ``meta-llama/Meta-Llama-3-70B-Instruct`` (~141 GB in bfloat16): read it from the GCS
mount (``--config.actor.path=/gcs/BUCKET/models/Meta-Llama-3-70B-Instruct``) or a data disk; a TPU VM boot disk is
too small. Planned for a v5p-128 slice (64 chips; 16-way FSDP x 4-way tensor parallelism):
``python -m spar_jax.plan --config=configs/llama3_70b.py --topology=v5p-128``.

Variants (``--config=configs/NAME.py:VARIANT``; see ``configs/paper.py`` and docs/fidelity.md):
- ``release`` (default): Stage 0 = SFT of actor and refiner on the authors' released data (``CCCCCC/SPaR``, downloaded
  to ``data/SPaR`` and split by ``python -m spar_jax.tools.split_release_sft``), prompts from the release, the
  authors' prompt wording (``python -m spar_jax.tools.import_templates``), their training settings and generation
  caps. Its iteration numbers are the ones to hold against the paper's.
- ``offline``: no released data; generated verifiable prompts and the rule-made Stage-0 bootstrap. Compare it with
  the base model and with other offline runs, not with the paper's SFT or iteration rows.
"""

from configs.paper import PAPER_SETTINGS, paper_config

HF_REPO = "meta-llama/Meta-Llama-3-70B-Instruct"

# config.json of HF_REPO (public architecture numbers): the planner reads the architecture from here, no download.
HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 128000,
    "eos_token_id": 128009, "torch_dtype": "bfloat16",
}  # fmt: skip

PAPER = dict(PAPER_SETTINGS, base_model=HF_REPO, ifeval_avg=dict(base=83.4, iter3=86.1), topology="v5p-128")


def get_config(variant: str = "release"):
    return paper_config(
        variant=variant,
        name="llama3_70b",
        actor_path="models/Meta-Llama-3-70B-Instruct",
        mesh_shape=(1, -1, 4),  # tensor parallelism over 4 chips (64 heads, 8 kv heads), FSDP over the rest
        engine_batch_size=480,  # 96 prompts x 5 or 160 x 3 rows: both divide the 16-way batch axis
        shard_size=960,
    )
