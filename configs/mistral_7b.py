"""Paper scale: SPaR on Mistral-7B-Instruct (actor and refiner), 3 iterations, the authors' settings and Stage 0.

Weights: ``mistralai/Mistral-7B-Instruct-v0.3`` (the paper names "Mistral-7B-Instruct" without a version; v0.3 is
the latest 7B instruct release with HF-format weights) in a local directory (``launch/fetch_model.sh`` puts it at
``actor.path`` on every TPU worker). Planned for a v5p-8 slice (4 chips, FSDP over all of them):
``python -m spar_jax.plan --config=configs/mistral_7b.py --topology=v5p-8``.

Variants (``--config=configs/NAME.py:VARIANT``; see ``configs/paper.py`` and docs/fidelity.md):
- ``release`` (default): Stage 0 = SFT of actor and refiner on the authors' released data (``CCCCCC/SPaR``, downloaded
  to ``data/SPaR`` and split by ``python -m spar_jax.tools.split_release_sft``), prompts from the release, the
  authors' prompt wording (``python -m spar_jax.tools.import_templates``), their training settings and generation
  caps. Its iteration numbers are the ones to hold against the paper's.
- ``offline``: no released data; generated verifiable prompts and the rule-made Stage-0 bootstrap. Compare it with
  the base model and with other offline runs, not with the paper's SFT or iteration rows.
"""

from configs.paper import PAPER_SETTINGS, V5P_8, paper_config

HF_REPO = "mistralai/Mistral-7B-Instruct-v0.3"

# config.json of HF_REPO (public architecture numbers): the planner reads the architecture from here, no download.
HF_CONFIG = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-5,
    "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "bfloat16",
}  # fmt: skip

PAPER = dict(PAPER_SETTINGS, base_model=HF_REPO, ifeval_avg=dict(base=57.5, iter3=75.5), topology="v5p-8")


def get_config(variant: str = "release"):
    return paper_config(
        variant=variant,
        name="mistral_7b",
        actor_path="models/Mistral-7B-Instruct-v0.3",
        **V5P_8,
    )
