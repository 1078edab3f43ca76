"""The slot-step model (spar_jax/planning/slot_model.py) by hand and against the engine's own counters."""

import pytest

from spar_jax.planning import slot_model as SM
from spar_jax.sampling import buckets

from tiny_checkpoints import write_checkpoint


def test_slot_steps_by_hand():
    # Two slots, lengths 5, 2, 3, 1 in queue order: slot A runs 5 (steps 0-4), slot B runs 2 (0-1) then 3 (1-3)
    # then 1 (at 3, no decode step). Last finish at step 4: 2 * 4 + 4 samples.
    assert SM.continuous_slot_steps([5, 2, 3, 1], 2) == 12
    assert SM.utilization([5, 2, 3, 1], 12) == pytest.approx(11 / 12)
    # Static, two rows per batch: max(5, 2) * 2 + max(3, 1) * 2.
    assert SM.static_slot_steps([5, 2, 3, 1], 2) == 16
    # n = 2 samples per prompt, one prompt row per batch: same grouping.
    assert SM.static_slot_steps([5, 2, 3, 1], 1, n=2) == 16
    # A padded last batch counts its padding rows.
    assert SM.static_slot_steps([4, 4, 4], 2) == 16
    with pytest.raises(ValueError, match="slots must be >= 1"):
        SM.continuous_slot_steps([1], 0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from spar_jax.models import from_pretrained

    return from_pretrained(write_checkpoint(tmp_path_factory.mktemp("tiny") / "model", "llama", seed=4))


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_the_model_predicts_the_engines_slot_steps_exactly(model, batching):
    """Sampled, 2 samples per prompt, stop ids that end some samples early: from the returned lengths alone, in the
    engine's order, the model gives the engine's decode_slot_steps."""
    from spar_jax.sampling import Engine

    engine = Engine(model, None, batch_size=4, batching=batching, eos_token_ids=list(range(5, 13)), progress=False)
    prompts = [[3 + i % 7] * (2 + i) for i in range(10)]
    results = engine.generate(prompts, max_new_tokens=20, temperature=1.0, n=2, seed=2)
    lengths = {i: [len(c.token_ids) for c in r.completions] for i, r in enumerate(results)}
    assert len({x for v in lengths.values() for x in v}) > 3  # lengths vary
    if batching == "continuous":
        queue = buckets.plan_batches([len(p) for p in prompts], length_buckets=engine.length_buckets, max_rows=10)
        steps = SM.continuous_slot_steps([x for b in queue for i in b.indices for x in lengths[i]], 4)
    else:
        steps = sum(
            SM.static_slot_steps([x for i in b.indices for x in lengths[i]], b.rows, 2)
            for b in buckets.plan_batches([len(p) for p in prompts], length_buckets=engine.length_buckets, max_rows=2)
        )
    assert engine.stats.decode_slot_steps == steps
    assert engine.stats.generated_tokens == sum(map(sum, lengths.values()))
