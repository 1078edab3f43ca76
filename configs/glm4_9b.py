"""Paper scale: SPaR on GLM-4-9B-Chat (actor and refiner), 3 iterations, the authors' settings and Stage 0.

Weights: the transformers-format checkpoint ``THUDM/glm-4-9b-chat-hf`` (model_type "glm") in a local directory
(``launch/fetch_model.sh`` puts it at ``actor.path`` on every TPU worker). Planned for a v5p-8 slice (4 chips, FSDP
over all of them; GLM-4 has only 2 kv heads, so tensor parallelism beyond 2 would replicate them):
``python -m spar_jax.plan --config=configs/glm4_9b.py --topology=v5p-8``.

Variants (``--config=configs/NAME.py:VARIANT``; see ``configs/paper.py`` and docs/fidelity.md):
- ``release`` (default): Stage 0 = SFT of actor and refiner on the authors' released data (``CCCCCC/SPaR``, downloaded
  to ``data/SPaR`` and split by ``python -m spar_jax.tools.split_release_sft``), prompts from the release, the
  authors' prompt wording (``python -m spar_jax.tools.import_templates``), their training settings and generation
  caps. Its iteration numbers are the ones to hold against the paper's.
- ``offline``: no released data; generated verifiable prompts and the rule-made Stage-0 bootstrap. Compare it with
  the base model and with other offline runs, not with the paper's SFT or iteration rows.
"""

from configs.paper import PAPER_SETTINGS, V5P_8, paper_config

HF_REPO = "THUDM/glm-4-9b-chat-hf"

# config.json of HF_REPO (public architecture numbers): the planner reads the architecture from here, no download.
HF_CONFIG = {
    "architectures": ["GlmForCausalLM"], "model_type": "glm", "vocab_size": 151552, "hidden_size": 4096,
    "intermediate_size": 13696, "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 2,
    "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1.5625e-07,
    "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "attention_bias": True, "tie_word_embeddings": False,
    "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329, "torch_dtype": "bfloat16",
}  # fmt: skip

PAPER = dict(PAPER_SETTINGS, base_model=HF_REPO, ifeval_avg=dict(base=74.2, iter3=79.1), topology="v5p-8")


def get_config(variant: str = "release"):
    return paper_config(
        variant=variant,
        name="glm4_9b",
        actor_path="models/glm-4-9b-chat-hf",
        **V5P_8,
    )
