"""The stages ``spar_jax.main`` runs, one module each, all with the signature ``run(cfg, runtime) -> dict``.

``cfg`` is the typed ``config.RunConfig``; ``runtime`` (``spar_jax.spar.runtime.Runtime``) hands out the engines and
trains. A stage writes under ``cfg.workdir/<name>`` (the loop stages under ``cfg.workdir`` itself) and returns its
summary. ``REGISTRY`` maps each name of ``config.STAGES`` to its module.
"""

from spar_jax.stages import (
    answer,
    calibration,
    evaluate,
    followbench,
    ifeval,
    llmbar,
    refine_inference,
    spar,
    study,
)

REGISTRY = {
    "answer": answer,  # the actor answers a few prompts
    "spar": spar,  # the SPaR loop
    "study": study,  # the loop, its ablations and the rules-judged loop, with the results table
    "evaluate": evaluate,  # the loop's evaluation of one checkpoint
    "refine_inference": refine_inference,  # inference-time tree search
    "ifeval": ifeval,  # IFEval
    "calibration": calibration,  # the refiner's judgments against the IFEval checker
    "llmbar": llmbar,  # the refiner as a judge on LLMBar
    "followbench": followbench,  # FollowBench, judged by a judge model
}
