"""Attention kernels: the XLA formula, the Pallas TPU splash kernel, cuDNN flash attention, chosen per backend."""
