"""Paper scale: SPaR on LLaMA-3-8B-Instruct (actor and refiner), 3 iterations, the authors' settings and Stage 0.

Weights: the HF checkpoint ``meta-llama/Meta-Llama-3-8B-Instruct`` in a local directory (``launch/fetch_model.sh``
puts it at ``actor.path`` on every TPU worker). Planned for a v5p-8 slice (4 chips, FSDP over all of them):
``python -m spar_jax.plan --config=configs/llama3_8b.py --topology=v5p-8``.

Variants (``--config=configs/NAME.py:VARIANT``; see ``configs/paper.py`` and docs/fidelity.md):
- ``release`` (default): Stage 0 = SFT of actor and refiner on the authors' released data (``CCCCCC/SPaR``, downloaded
  to ``data/SPaR`` and split by ``python -m spar_jax.tools.split_release_sft``), prompts from the release, the
  authors' prompt wording (``python -m spar_jax.tools.import_templates``), their training settings and generation
  caps. Its iteration numbers are the ones to hold against the paper's.
- ``offline``: no released data; generated verifiable prompts and the rule-made Stage-0 bootstrap. Compare it with
  the base model and with other offline runs, not with the paper's SFT or iteration rows.
"""

from configs.paper import PAPER_SETTINGS, V5P_8, paper_config

HF_REPO = "meta-llama/Meta-Llama-3-8B-Instruct"

# config.json of HF_REPO (public architecture numbers): the planner reads the architecture from here, no download.
HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 128000,
    "eos_token_id": 128009, "torch_dtype": "bfloat16",
}  # fmt: skip

PAPER = dict(
    PAPER_SETTINGS,
    base_model=HF_REPO,
    topology="v5p-8",
    ifeval_avg=dict(base=77.9, iter1=80.3, iter2=81.1, iter3=81.8, iter3_with_tree_search=83.7),
)


def get_config(variant: str = "release"):
    return paper_config(
        variant=variant,
        name="llama3_8b",
        actor_path="models/Meta-Llama-3-8B-Instruct",
        **V5P_8,
    )
