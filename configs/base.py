"""The full schema with defaults: every key any config may set (see spar_jax/config.py)."""

from spar_jax.config import default_config


def get_config():
    return default_config()
