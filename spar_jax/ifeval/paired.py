"""Bootstrap intervals over prompts for IFEval's four metrics and their average (pure numpy).

IFEval's metrics are ratios: prompt-level accuracy is a mean over prompts, instruction-level accuracy a ratio of
sums over prompts (followed instructions / instructions). A resample draws prompts with replacement and recomputes
the ratios, so prompts with more instructions weigh more in the instruction-level metrics, as in the full score.
The *paired* bootstrap draws the same prompts for both models, so the interval of a difference reflects how the two
models differ on the same prompts (much tighter than two independent intervals).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRICS = ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict", "instruction_level_loose")


def components(results: Sequence[Any]) -> np.ndarray:
    """Per-prompt sums [n, 5]: prompt strict pass, prompt loose pass, instructions followed (strict, loose), and the
    number of instructions. ``results`` are `ifeval.PromptResult`s (``strict`` / ``loose`` tuples of booleans)."""
    return np.array(
        [[all(r.strict), all(r.loose), sum(r.strict), sum(r.loose), len(r.strict)] for r in results], dtype=np.float64
    )


def metrics_from_sums(sums: np.ndarray, n_prompts: np.ndarray | float) -> np.ndarray:
    """[..., 5] summed components over (resampled) prompts -> [..., 5]: the four metrics and their average."""
    ps, pl = sums[..., 0] / n_prompts, sums[..., 1] / n_prompts
    is_, il = sums[..., 2] / sums[..., 4], sums[..., 3] / sums[..., 4]
    four = np.stack([ps, pl, is_, il], axis=-1)
    return np.concatenate([four, four.mean(axis=-1, keepdims=True)], axis=-1)


def _resampled_sums(comps: Sequence[np.ndarray], n_resamples: int, seed: int, chunk: int = 1000):
    """Yields, per chunk of resamples, the summed components of each model over the same resampled prompts."""
    n = len(comps[0])
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        yield [c[idx].sum(axis=1) for c in comps]


def paired_bootstrap(
    base: np.ndarray, other: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile interval of ``other - base`` for each metric and the average, resampling prompts (paired).

    ``base`` / ``other``: `components` of the same prompts in the same order. Returns
    ``{metric: {"delta", "low", "high"}}`` for the four metrics and ``"average"``; values are fractions.
    """
    if base.shape != other.shape:
        raise ValueError(f"paired_bootstrap: the two models have {base.shape[0]} and {other.shape[0]} prompts")
    n = base.shape[0]
    point = metrics_from_sums(other.sum(0), n) - metrics_from_sums(base.sum(0), n)
    deltas = np.concatenate(
        [
            metrics_from_sums(o, n) - metrics_from_sums(b, n)
            for b, o in _resampled_sums([base, other], n_resamples, seed)
        ]
    )
    return _table(point, deltas, level)


def bootstrap(
    comps: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile interval of one model's metrics: ``{metric: {"delta" (the value), "low", "high"}}``."""
    n = comps.shape[0]
    values = np.concatenate([metrics_from_sums(s, n) for (s,) in _resampled_sums([comps], n_resamples, seed)])
    return _table(metrics_from_sums(comps.sum(0), n), values, level)


def _table(point: np.ndarray, samples: np.ndarray, level: float) -> dict[str, dict[str, float]]:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return {
        name: {"delta": float(point[i]), "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate((*METRICS, "average"))
    }
