"""Reductions over the point axis of packed rows, per segment (one view of a pack = one segment).

`ids = row_ids(valid, segment, M)` names each row's segment, M (a dropped extra segment) for rows that are not
valid or not in [0, M). Sums and maxima over a segment's rows drop those rows; inside `shard_map` with the rows
split over `axis_name`, they are psum'd / pmax'd so the result equals the unsharded one. Used by
`dos_jax.objective` and `dos_jax.sinkhorn_matmul`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def row_ids(valid: jax.Array, segment: jax.Array, num_segments: int) -> jax.Array:
  """i32[N]: the row's segment, `num_segments` (a dropped extra segment) for invalid or out-of-range rows."""
  ok = valid & (segment >= 0) & (segment < num_segments)
  return jnp.where(ok, segment, num_segments).astype(jnp.int32)


def keep(ids, num_segments, ndim=2):
  """bool mask of the rows in a segment, shaped to broadcast against an array of `ndim` dims."""
  return (ids < num_segments).reshape(ids.shape + (1,) * (ndim - 1))


def seg_sum(x: jax.Array, ids: jax.Array, num_segments: int, axis_name=None) -> jax.Array:
  """Σ over the rows of each segment: x f[N, ...] -> f[M, ...] (dropped rows excluded; psum over axis_name).
  One segment (the per-set forms) is a masked dense sum: same value, no scatter."""
  if num_segments == 1:
    out = jnp.sum(jnp.where(keep(ids, 1, x.ndim), x, 0), axis=0, keepdims=True)
  else:
    out = jax.ops.segment_sum(x, ids, num_segments=num_segments)  # ids == num_segments (dropped rows) drop out
  return out if axis_name is None else lax.psum(out, axis_name)


def seg_max(x: jax.Array, ids: jax.Array, num_segments: int, axis_name=None) -> jax.Array:
  """max over the rows of each segment, -inf for an empty one (pmax over axis_name)."""
  if num_segments == 1:
    out = jnp.max(jnp.where(keep(ids, 1, x.ndim), x, -jnp.inf), axis=0, keepdims=True)
  else:
    out = jax.ops.segment_max(x, ids, num_segments=num_segments)
  return out if axis_name is None else lax.pmax(out, axis_name)


def rows(per_segment: jax.Array, ids: jax.Array) -> jax.Array:
  """per_segment: f[M, ...] -> f[N, ...] each row's segment value (0 for dropped rows).

  A matrix f[M, K] must be finite: it is read through a one-hot product (a row's one-hot [N, M] times it, HIGHEST
  precision: 1 * x + 0 * the others is x exactly), where a gather of [N, K] rows would be written out whole and
  read again by every consumer. Compiled for a TPU at scannet's pack ([43784, 1024], M = 32), exp(s + u + rows(v))
  is estimated at 0.83 M cycles and 0.36 GB accessed against the gather's 1.23 M and 2.15 GB: the product fuses
  into its consumer, and the compiler charges a gathered 1024-wide row eight tiles (benchmarks/RESULTS.md)."""
  if per_segment.shape[0] == 1:
    return jnp.where(keep(ids, 1, per_segment.ndim), per_segment[0], 0)
  if per_segment.ndim == 2:
    member = (ids[:, None] == jnp.arange(per_segment.shape[0], dtype=ids.dtype)[None, :]).astype(per_segment.dtype)
    return jnp.einsum("nm,mk->nk", member, per_segment, precision=lax.Precision.HIGHEST)
  return per_segment.at[ids].get(mode="fill", fill_value=0, wrap_negative_indices=False)


def segment_lse(x: jax.Array, ids: jax.Array, num_segments: int, axis_name=None) -> jax.Array:
  """log Σ_{rows i of segment m} exp(x_ik): f[M, K], 0 for an empty segment. Dropped rows are excluded before
  the exp, so any value there (inf, nan) is ignored."""
  x = jnp.where(keep(ids, num_segments), x, -jnp.inf)
  m = lax.stop_gradient(seg_max(x, ids, num_segments, axis_name))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  total = seg_sum(jnp.exp(x - rows(m, ids)), ids, num_segments, axis_name)
  return m + jnp.log(jnp.where(total > 0, total, 1.0))


def counts(ids, num_segments, dtype, axis_name=None):
  """f[M]: valid rows per segment."""
  return seg_sum(jnp.ones(ids.shape, dtype), ids, num_segments, axis_name)
