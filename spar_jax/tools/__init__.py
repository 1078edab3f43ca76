"""Command-line tools around a SPaR run (``python -m spar_jax.tools.<name>``)."""
