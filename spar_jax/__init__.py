"""spar_jax: SPaR (Self-Play with Tree-Search Refinement) in JAX/Flax NNX."""

__version__ = "0.1.0"
