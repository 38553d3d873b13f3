"""The DOS objective on PACKED point sets: softmaps, Zipf-Sinkhorn and the KL per segment (view).

A packed set (`dos_jax.batching.packing`) holds the M views of a pack in one point axis, `segment: i32[N]` naming
the view of each row (0..M-1; any value outside [0, M) is ignored, e.g. M for padding). Every function here
equals the per-set function of `dos_jax.objective` applied to each segment's rows alone (tested per segment to
float32 rounding): sums and log-sum-exps over points become segment reductions, sums over prototypes are
unchanged. The per-set contract in `dos_jax.objective` stays as it is; this is the segment-aware form beside it.

Shapes are for ONE packed set (`scores: f32[N, K]`, `valid/segment: [N]`); use `jax.vmap` over packs.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from dos_jax import objective


def _ids(valid: jax.Array, segment: jax.Array, num_segments: int) -> jax.Array:
  """Segment of each row, `num_segments` (a dropped extra segment) for invalid or out-of-range rows."""
  ok = valid & (segment >= 0) & (segment < num_segments)
  return jnp.where(ok, segment, num_segments).astype(jnp.int32)


def _segment_lse(x: jax.Array, ids: jax.Array, num_segments: int) -> jax.Array:
  """log Σ_{i in segment m} exp(x_ik): f[M, K], 0 for an empty segment. x: f[N, K], ids: i32[N] (M = dropped)."""
  m = lax.stop_gradient(jax.ops.segment_max(x, ids, num_segments=num_segments + 1))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  total = jax.ops.segment_sum(jnp.exp(x - m[ids]), ids, num_segments=num_segments + 1)
  lse = m + jnp.log(jnp.where(total > 0, total, 1.0))
  return lse[:num_segments]


def _rows(per_segment: jax.Array, ids: jax.Array) -> jax.Array:
  """per_segment: f[M, ...] -> f[N, ...] the row's segment value (0 for dropped rows)."""
  padded = jnp.concatenate([per_segment, jnp.zeros((1,) + per_segment.shape[1:], per_segment.dtype)])
  return padded[ids]


def segment_counts(valid: jax.Array, segment: jax.Array, num_segments: int) -> jax.Array:
  """Valid rows per segment: f32[M]."""
  ids = _ids(valid, segment, num_segments)
  return jax.ops.segment_sum(jnp.ones(ids.shape, jnp.float32), ids, num_segments=num_segments + 1)[:num_segments]


def segment_softmap(scores: jax.Array, valid: jax.Array, segment: jax.Array, num_segments: int) -> jax.Array:
  """`objective.softmap` per segment: softmax over each segment's valid rows, per prototype; f32[N, K], 0 at
  invalid rows."""
  ids = _ids(valid, segment, num_segments)
  lse = _segment_lse(scores, ids, num_segments)
  keep = (ids < num_segments)[:, None]
  return jnp.where(keep, jnp.exp(scores - _rows(lse, ids)), 0.0)


def _potentials(scores, ids, num_segments, log_col_mass, num_iters):
  """Log-domain Sinkhorn per segment, the schedule of `objective._sinkhorn_potentials`.

  Returns u: f[N] (0 on dropped rows), v: f[M, K]; log T = scores + u[:, None] + v[segment].
  """
  dtype = scores.dtype
  counts = jax.ops.segment_sum(jnp.ones(ids.shape, dtype), ids, num_segments=num_segments + 1)[:num_segments]
  log_n = _rows(jnp.log(jnp.maximum(counts, 1.0)), ids)
  keep = ids < num_segments
  k = scores.shape[-1]

  def row_step(v):
    u = -log_n - jax.nn.logsumexp(scores + _rows(v, ids), axis=-1)
    return jnp.where(keep, u, 0.0)

  def col_step(u, log_mass):
    x = jnp.where(keep[:, None], scores + u[:, None], -jnp.inf)
    return log_mass - _segment_lse(x, ids, num_segments)

  log_col_mass = jnp.broadcast_to(log_col_mass.astype(dtype), (num_segments, k))
  if num_iters == 0:
    u = jnp.zeros(ids.shape, dtype)
  else:
    u = row_step(jnp.zeros((num_segments, k), dtype))
    u = lax.fori_loop(0, num_iters - 1, lambda _, u: row_step(col_step(u, log_col_mass)), u)
  v = col_step(u, jnp.zeros((), dtype))
  return u, v


def segment_zipf_sinkhorn(scores: jax.Array, valid: jax.Array, segment: jax.Array, num_segments: int,
                          alpha: float, num_iters: int = 3) -> jax.Array:
  """`objective.zipf_sinkhorn` per segment: f32[N, K] targets, each column of each segment a distribution over
  that segment's valid rows; invalid rows exactly 0."""
  num_iters = _iters(num_iters)
  ids = _ids(valid, segment, num_segments)
  log_w = objective._log_zipf_prior(scores.shape[-1], alpha)  # pylint: disable=protected-access
  u, v = _potentials(scores, ids, num_segments, log_w, num_iters)
  log_t = scores + u[:, None] + _rows(v, ids)
  return jnp.where((ids < num_segments)[:, None], jnp.exp(log_t), 0.0)


def segment_softmap_kl(target: jax.Array, student_scores: jax.Array, valid: jax.Array, segment: jax.Array,
                       num_segments: int) -> jax.Array:
  """`objective.softmap_kl` per segment: f32[M], (1/K) Σ_k KL(target[seg, k] ‖ softmap(student)[seg, k])."""
  ids = _ids(valid, segment, num_segments)
  keep = (ids < num_segments)[:, None]
  lse = _segment_lse(jnp.where(keep, student_scores, -jnp.inf), ids, num_segments)
  log_p = student_scores - _rows(lse, ids)
  terms = jnp.where(keep, jax.scipy.special.xlogy(target, target) - target * log_p, 0.0)
  kl = jax.ops.segment_sum(jnp.sum(terms, axis=-1), ids, num_segments=num_segments + 1)[:num_segments]
  return kl / student_scores.shape[-1]


def segment_zipf_softmap_kl(teacher_scores: jax.Array, student_scores: jax.Array, valid: jax.Array,
                            segment: jax.Array, num_segments: int, alpha: float,
                            num_iters: int = 3) -> Tuple[jax.Array, jax.Array]:
  """`softmap_kl(stop_gradient(zipf_sinkhorn(teacher)), student)` per segment: (kl f32[M], targets f32[N, K])."""
  targets = lax.stop_gradient(segment_zipf_sinkhorn(lax.stop_gradient(teacher_scores), valid, segment,
                                                    num_segments, alpha, num_iters))
  return segment_softmap_kl(targets, student_scores, valid, segment, num_segments), targets


def _iters(num_iters) -> int:
  if not isinstance(num_iters, int) or num_iters < 0:
    raise ValueError(f"sinkhorn_iters must be a non-negative int, got {num_iters!r}")
  return num_iters


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x: f[N, K], index: i32[M'] with sentinel N -> f[M', K] (sentinel rows gather zeros)."""
  return jnp.pad(x, ((0, 1), (0, 0)))[index]


def packed_dos_loss(student_cos: jax.Array, teacher_cos: jax.Array, target_index: jax.Array,
                    target_valid: jax.Array, cross_index: jax.Array, cross_valid: jax.Array,
                    student_valid: jax.Array, segment: jax.Array, num_segments: int, *, teacher_temp,
                    student_temp, alpha, num_iters: int = 3, normalization: str = "softmap",
                    cross_view: bool = True) -> Tuple[jax.Array, Dict[str, Any]]:
  """`objective.dos_loss` on packed batches: the same per-view terms, averaged over all G x M views.

  Args:
    student_cos: f32[G, Ns, K] (G packs; Ns the packed student capacity). teacher_cos: f32[G, Nt, K].
    target_index / cross_index: i32[G, Ns] slot in the SAME packed teacher set (sentinel Nt): the same view's
      point, or the other view's matched point.
    target_valid / cross_valid / student_valid: bool[G, Ns].
    segment: i32[G, Ns] view of each student row within its pack (0..M-1; M = padding).
    num_segments: M, views per pack (static).
    Other arguments as `objective.dos_loss`; normalization must be 'softmap'.

  Returns:
    (loss f32[], aux) with aux as `objective.dos_loss` (targets / teacher logits packed [G, Ns, K]) plus
    'loss_per_view' f32[G, M] (same-view term, for tests).
  """
  if normalization != "softmap":
    raise ValueError("data.packing=True supports normalization='softmap' only (the clustering baseline "
                             "runs unpacked)")
  student_logits = student_cos / student_temp
  teacher_logits_all = lax.stop_gradient(teacher_cos) / teacher_temp

  def one_term(index, valid):
    logits = jax.vmap(_gather)(teacher_logits_all, index)
    valid = valid & student_valid
    per_view, targets = jax.vmap(
        lambda t, s, ok, seg: segment_zipf_softmap_kl(t, s, ok, seg, num_segments, alpha, num_iters))(
            logits, student_logits, valid, segment)
    return per_view, logits, targets, valid

  same, logits_same, targets_same, valid_same = one_term(target_index, target_valid)
  loss_same = jnp.mean(same)
  if cross_view:
    loss_cross = jnp.mean(one_term(cross_index, cross_valid)[0])
    loss = 0.5 * (loss_same + loss_cross)
  else:
    loss_cross = jnp.zeros((), loss_same.dtype)
    loss = loss_same
  aux = dict(loss_same=loss_same, loss_cross=loss_cross, teacher_logits=logits_same, targets=targets_same,
             valid=valid_same, loss_per_view=same)
  return loss, aux
