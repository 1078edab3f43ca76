"""What a benchmark's numbers depend on, measured in the same run: the CPU and the fp32 matmul rate each library
reaches on it (the prefill and the training step are matmul-bound, so ratios against PyTorch follow these rates).

Imported by the scripts next to it (``python benchmarks/NAME.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

import platform
import statistics
import time


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_info() -> dict[str, str]:
    """The CPU's model name and widest float SIMD ("avx512", "avx2", "avx", "neon" or "other"), from /proc/cpuinfo
    where there is one (the machines behind this project's benchmark tables have differed in matmul rates)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = next(
        (
            name
            for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("neon", "asimd"))
            if flag in flags
        ),
        "other",
    )
    return {"cpu": model, "simd": simd}


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Median fp32 GFLOP/s of an n x n x n matmul in jax (XLA) and in torch."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ta = torch.randn(n, n)
    torch.mm(ta, ta)
    jt = statistics.median(timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    tt = statistics.median(timed(lambda: torch.mm(ta, ta)) for _ in range(repeats))
    return {"jax_gflops": 2 * n**3 / jt / 1e9, "torch_gflops": 2 * n**3 / tt / 1e9}
