"""Paper-scale planning: TPU slices, per-chip memory from the real shardings, stage times, ahead-of-time lowering.

Entry point: ``python -m spar_jax.plan`` (see ``spar_jax/plan.py``).
"""
