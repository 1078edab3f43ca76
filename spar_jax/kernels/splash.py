"""Causal self-attention through the Pallas TPU splash-attention kernel that ships with jax.

Shapes: B batch, T tokens, H query heads, K kv heads (H a multiple of K), D head dim.

The kernel never materializes the [H, T, T] scores: it walks (query block, key block) tiles, skips the tiles its
static mask (causal, or a causal local window) leaves empty, and applies per-token *segment ids* inside the tiles
it computes (a query sees a key only when their ids are equal). The model's masks map onto that as follows:

- padding (left-padded prompts, right-padded training rows): id 1 on real tokens, 0 on padding, so a real query
  never sees a padding key; a padding query sees padding keys (its output is arbitrary and no real token reads it,
  as in ``layers.causal_attention``);
- a sliding window of W tokens: ``LocalMask`` with W - 1 keys to the left (the query itself is the W-th);
- packed shared-prefix rows (``spar_jax.training.batches.pack_pair``: segment 0 the shared prefix, then branches
  1..n, -1 padding): a branch token sees the prefix and its own branch, which equal ids cannot express in one call.
  The kernel runs once per branch c with ids "prefix or branch c" = 1, "another branch" = 2, padding = 0; call c
  is exact for the prefix and for branch c, and each token takes its output from its branch's call. That costs n
  kernel calls (two for a DPO pair) over the row instead of one.

The kernel does not scale the queries: they are multiplied by D ** -0.5 here. T is padded up to a multiple of the
block (the padding gets id 0 and is cut off again). With a ``ShardingContext`` the kernel runs under ``shard_map``,
one call per device on its batch rows and heads (a Pallas call is not partitioned by the compiler).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from spar_jax.parallel import ShardingContext

# Tokens per kernel tile (queries and keys), the lane width multiple the TPU kernel needs.
LANES = 128
DEFAULT_BLOCK = 512
# Branches of a packed shared-prefix row (pack_pair: the chosen and the rejected response).
PACKED_BRANCHES = 2


def tile(t: int, block: int = DEFAULT_BLOCK) -> int:
    """The kernel's tile for T tokens: ``block``, or T rounded up to a multiple of ``LANES`` when that is smaller."""
    return min(block, -(-t // LANES) * LANES)


def _kernel(heads: int, t: int, window: int, block: int, interpret: bool):
    """A splash kernel for ``heads`` heads of T (a multiple of ``block``) tokens, causal within ``window`` (0 = all)."""
    shape = (t, t)
    mask = sa.CausalMask(shape) if window == 0 else sa.LocalMask(shape, (window - 1, 0), offset=0)
    sizes = sa.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return sa.make_splash_mha(
        sa.MultiHeadMask((mask,) * heads), block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def _segment_calls(valid: jax.Array, segment_ids: jax.Array | None) -> list[tuple[jax.Array, jax.Array | None]]:
    """(ids int32 [B, T], tokens bool [B, T] that take this call's output, or None for all) per kernel call."""
    if segment_ids is None:
        return [(valid.astype(jnp.int32), None)]
    seg = segment_ids
    calls = []
    for c in range(1, PACKED_BRANCHES + 1):
        ids = jnp.where((seg == 0) | (seg == c), 1, jnp.where(seg < 0, 0, 2))
        ids = jnp.where(valid, ids, 0).astype(jnp.int32)
        calls.append((ids, (seg == c) | ((seg <= 0) if c == 1 else False)))
    return calls


def _local(q, k, v, ids, *, window: int, block: int, interpret: bool):
    """The kernel on local arrays: q [B, H, T, D] (scaled), k/v [B, K, T, D], ids int32 [B, T]; T a multiple of
    ``block``. Returns [B, H, T, D]."""
    kernel = _kernel(q.shape[1], q.shape[2], window, block, interpret)
    return jax.vmap(lambda q, k, v, i: kernel(q, k, v, segment_ids=sa.SegmentIds(i, i)))(q, k, v, ids)


def causal_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    valid: jax.Array,
    segment_ids: jax.Array | None = None,
    window: int = 0,
    block: int = DEFAULT_BLOCK,
    interpret: bool = False,
    shard: ShardingContext | None = None,
) -> jax.Array:
    """Causal grouped-query self-attention with the splash kernel.

    Args:
      q: [B, T, H, D] queries; k, v: [B, K, T, D] keys and values (head-major, as the model holds them).
      valid: bool [B, T], True on real tokens.
      segment_ids: None, or int [B, T] packed shared-prefix segments (see the module docstring).
      window: a static sliding window in tokens (0 = unlimited). Windows count token slots, so they equal the
        model's position windows only without packing; the caller refuses the combination.
      block: the largest tile (``tile``); interpret: run the kernel in the Pallas interpreter (any backend).
      shard: the model's sharding context; None runs on the arrays' devices as they are.
    Returns:
      [B, T, H, D] in q's dtype. Tokens that see no real key (padding) hold arbitrary values.
    """
    b, t, h, d = q.shape
    blk = tile(t, block)
    pad = -t % blk
    qh = (q * jnp.asarray(d**-0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B, H, T, D]
    widths = ((0, 0), (0, 0), (0, pad), (0, 0))
    qh, kh, vh = (jnp.pad(x, widths) for x in (qh, k, v))
    local = functools.partial(_local, window=window, block=blk, interpret=interpret)
    if shard is not None and shard.mesh.size > 1:
        local = _sharded(local, shard, qh.shape, kh.shape)
    out = None
    for ids, take in _segment_calls(valid, segment_ids):
        o = local(qh, kh, vh, jnp.pad(ids, ((0, 0), (0, pad))))[:, :, :t].transpose(0, 2, 1, 3)
        out = o if take is None else jnp.where(take[:, :, None, None], o, 0 if out is None else out)
    return out.astype(q.dtype)


def _sharded(local, shard: ShardingContext, q_shape, kv_shape):
    """``local`` under ``shard_map``: batch rows and heads split as the model's rules split them."""
    q_spec = shard.spec(("batch", "heads", "length", "head_dim"), q_shape)
    kv_spec = shard.spec(("batch", "kv_heads", "length", "head_dim"), kv_shape)
    if q_spec[1] != kv_spec[1]:
        raise ValueError(
            f"attention_impl='splash': the query heads ({q_shape[1]}) and kv heads ({kv_shape[1]}) are split "
            f"differently over the mesh ({q_spec[1]} vs {kv_spec[1]}); use attention_impl='xla' or a tensor axis "
            "that divides the kv heads"
        )
    ids_spec = jax.sharding.PartitionSpec(q_spec[0], None)
    return jax.shard_map(
        local, mesh=shard.mesh, in_specs=(q_spec, kv_spec, kv_spec, ids_spec), out_specs=q_spec, check_vma=False
    )
