"""Compile time of the forward pass vs depth (layers run under lax.scan, so it should be flat).

Prints one JSON line per depth: {"layers", "lower_s", "compile_s", "hlo_chars"}.
Run: python benchmarks/compile_time.py [--depths 2 32 80]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
from flax import nnx

from spar_jax.models import Transformer, config_from_hf_dict


def measure(layers: int, hidden: int = 256) -> dict:
    cfg = config_from_hf_dict(
        {
            "model_type": "llama",
            "vocab_size": 1024,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
        }
    )
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    ids = jax.ShapeDtypeStruct((4, 128), jnp.int32)
    t0 = time.perf_counter()
    lowered = fn.lower(state, ids)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {
        "layers": layers,
        "lower_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "hlo_chars": len(lowered.as_text()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 32, 80])
    args = parser.parse_args()
    measure(2)  # warm up tracing caches
    for depth in args.depths:
        print(json.dumps(measure(depth)), flush=True)
