"""Runnable stages of ``spar_jax.main``: each takes the typed RunConfig and writes under its workdir."""
