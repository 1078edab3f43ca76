"""spar_jax: SPaR (Self-Play with Tree-Search Refinement) in JAX/Flax NNX."""

__version__ = "0.1.0"


def _quiet_transformers() -> None:
    """Drop transformers' "PyTorch was not found" advice: spar_jax uses its tokenizers and configs only, so on a
    torch-less TPU host the message reads like a failure while nothing is wrong. Other warnings still show."""
    import logging

    class _NoTorchAdvice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "PyTorch was not found" not in record.getMessage()

    logging.getLogger("transformers").addFilter(_NoTorchAdvice())


_quiet_transformers()
