"""The DOS objective: Zipf-Sinkhorn target softmaps and the softmap KL distillation loss, on packed point sets.

A *softmap* is, for each prototype k, a distribution over the points of one view: softmax over the POINT axis. The
teacher's softmaps are balanced with a Sinkhorn procedure whose column marginals follow a Zipf prior, so prototype
k receives mass w_k ∝ k^-α in the intermediate iterations; the student is trained to match them with a KL
divergence per prototype.

One path. Training batches are packs (`dos_jax.batching.packing`): one point axis holds several views,
`segment: i32[N]` naming the view of each row (0..M-1; rows whose segment is outside [0, M), or not valid, belong to
no view). Every function computes per segment: sums and log-sum-exps over points are segment reductions, sums over
prototypes are row-wise. `packed_dos_loss` is the training loss. The DESIGN.md contract (`zipf_prior`,
`zipf_sinkhorn`, `softmap`, `softmap_kl`, `dos_loss`) and the clustering baseline's `clustering_targets` /
`clustering_loss` are thin one-segment forms of the same functions (a set is a pack of one view); they accept any
number of leading batch axes (`scores: f32[..., N, K]`, `valid: bool[..., N]`).

Sharded points: every function takes an optional `axis_name`. Inside `shard_map` with the points of each set
split across that mesh axis, every segment sum over points is psum'd (log-sum-exps shift by a pmax'd maximum), so
the result equals the unsharded one.

Numerics: log domain throughout (Sinkhorn on potentials log T = s + u + v[segment]; `lax.fori_loop`), each
log-sum-exp over points shifted by its segment's exact maximum, so results are finite for |scores| <= 100 and
α <= 3 and garbage in invalid rows never reaches a valid output (it is selected away before every reduction).
Given a static bound on the logits small enough for float32 (the train step's teacher: 1 / min τ_T), Sinkhorn's
iterations run instead as matrix products (`dos_jax.sinkhorn_matmul`), the same potentials to float32 rounding.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from dos_jax import choices
from dos_jax import segments
from dos_jax import sinkhorn_matmul

NORMALIZATIONS = choices.NORMALIZATIONS


def zipf_prior(num_prototypes: int, alpha: float) -> jax.Array:
  """Zipf column marginals: w_k = k^-α / Σ_j j^-α for k = 1..K (prototype 0 has rank 1).

  Args:
    num_prototypes: K.
    alpha: Zipf exponent α >= 0 (α = 0 gives the uniform prior 1/K). May be a traced scalar.

  Returns:
    f32[K], positive, sums to 1.
  """
  return jnp.exp(_log_zipf_prior(num_prototypes, alpha))


def _log_zipf_prior(num_prototypes: int, alpha) -> jax.Array:
  """log w_k, computed in the log domain so large α does not underflow."""
  dtype = jnp.result_type(float)
  log_rank = jnp.log(jnp.arange(1, num_prototypes + 1, dtype=dtype))
  logits = -jnp.asarray(alpha, dtype) * log_rank
  return logits - jax.nn.logsumexp(logits)


def _check_iters(num_iters) -> int:
  if not isinstance(num_iters, int) or num_iters < 0:
    raise ValueError(f"sinkhorn_iters must be a non-negative int, got {num_iters!r}")
  return num_iters


# ------------------------------------------------------------------------------------ per-segment functions
def segment_softmap(scores: jax.Array, valid: jax.Array, segment: jax.Array, num_segments: int,
                    *, axis_name: Optional[str] = None) -> jax.Array:
  """Softmax over each segment's valid rows, per prototype: f32[N, K], 0 at rows of no segment."""
  ids = segments.row_ids(valid, segment, num_segments)
  keep = segments.keep(ids, num_segments)
  lse = segments.segment_lse(scores, ids, num_segments, axis_name)
  # Select before the exp: exp of a NaN/inf left in a padded row would give a NaN gradient (0 * NaN) through the
  # outer select.
  return jnp.where(keep, jnp.exp(jnp.where(keep, scores, 0.0) - segments.rows(lse, ids)), 0.0)


def _sinkhorn_potentials(scores, ids, num_segments, log_col_mass, num_iters, axis_name, matmul=False):
  """Sinkhorn per segment on log potentials (the DESIGN.md schedule: rows -> 1/N_valid, columns ->
  exp(log_col_mass), `num_iters` times, then every column to total 1). The initial "total mass 1" normalization
  is a constant the first row step removes, and the last iteration's column step is overridden by the final one,
  so both are skipped: identical result, two fewer passes. Each step is a log-sum-exp, over [N, K] in the log
  domain, or with `matmul` a matrix product (`sinkhorn_matmul.steps`, for logits of bounded range).

  Returns u: f[N] (0 on dropped rows), v: f[M, K]; log T = scores + u[:, None] + v[segment].
  """
  dtype = scores.dtype
  keep = ids < num_segments
  log_n = segments.rows(jnp.log(jnp.maximum(segments.counts(ids, num_segments, dtype, axis_name), 1.0)), ids)
  k = scores.shape[-1]

  def row_step(v):
    u = -log_n - jax.nn.logsumexp(jnp.where(keep[:, None], scores, 0.0) + segments.rows(v, ids), axis=-1)
    return jnp.where(keep, u, 0.0)

  def col_step(u, log_mass):
    return log_mass - segments.segment_lse(scores + u[:, None], ids, num_segments, axis_name)

  if matmul:
    row_step, col_step = sinkhorn_matmul.steps(scores, ids, num_segments, log_n, axis_name)

  log_col_mass = jnp.broadcast_to(log_col_mass.astype(dtype), (num_segments, k))
  if num_iters == 0:
    u = jnp.where(keep, 0.0, 0.0).astype(dtype)
  else:
    u = row_step(jnp.zeros((num_segments, k), dtype))
    u = lax.fori_loop(0, num_iters - 1, lambda _, u: row_step(col_step(u, log_col_mass)), u)
  v = col_step(u, jnp.zeros((), dtype))
  return u, v


def segment_zipf_sinkhorn(scores: jax.Array, valid: jax.Array, segment: jax.Array, num_segments: int,
                          alpha: float, num_iters: int = 3, *, axis_name: Optional[str] = None,
                          logit_bound: Optional[float] = None) -> jax.Array:
  """Zipf-Sinkhorn targets per segment: f32[N, K], each column of each segment a distribution over that
  segment's valid rows; rows of no segment exactly 0.

  logit_bound: a static bound on |scores| at valid rows, or None. When given and small enough for float32
  (`sinkhorn_matmul.usable`: 1/τ_T up to ~30 for the teacher's cosines), the iterations run as matrix products
  (`dos_jax.sinkhorn_matmul`): the same potentials to float32 rounding, without the per-iteration passes of exp
  over [N, K]. The final targets are computed from the potentials as in the log domain either way."""
  num_iters = _check_iters(num_iters)
  ids = segments.row_ids(valid, segment, num_segments)
  log_w = _log_zipf_prior(scores.shape[-1], alpha)
  matmul = logit_bound is not None and sinkhorn_matmul.usable(logit_bound, *scores.shape)
  u, v = _sinkhorn_potentials(scores, ids, num_segments, log_w, num_iters, axis_name, matmul=matmul)
  keep = segments.keep(ids, num_segments)
  return jnp.where(keep, jnp.exp(jnp.where(keep, scores, 0.0) + u[:, None] + segments.rows(v, ids)), 0.0)


def segment_softmap_kl(target: jax.Array, student_scores: jax.Array, valid: jax.Array, segment: jax.Array,
                       num_segments: int, *, axis_name: Optional[str] = None) -> jax.Array:
  """f32[M]: (1/K) Σ_k KL(target[seg, k] ‖ softmap(student)[seg, k]) per segment (0 for an empty one)."""
  ids = segments.row_ids(valid, segment, num_segments)
  keep = segments.keep(ids, num_segments)
  lse = segments.segment_lse(student_scores, ids, num_segments, axis_name)
  log_p = jnp.where(keep, student_scores, 0.0) - segments.rows(lse, ids)
  target = jnp.where(keep, target, 0.0)
  terms = jnp.where(keep, jax.scipy.special.xlogy(target, target) - target * log_p, 0.0)
  return segments.seg_sum(jnp.sum(terms, axis=-1), ids, num_segments, axis_name) / student_scores.shape[-1]


def segment_clustering_targets(scores: jax.Array, valid: jax.Array, segment: jax.Array, num_segments: int,
                               num_iters: int = 3, *, axis_name: Optional[str] = None) -> jax.Array:
  """Uniform Sinkhorn-Knopp targets of the clustering baseline per segment (SwAV/DINO schedule: `num_iters`
  times columns -> 1/K, rows -> 1/N_valid, then rows to 1; the last row scaling is replaced by the final one).
  f32[N, K]: each valid row a distribution over prototypes, rows of no segment 0."""
  num_iters = _check_iters(num_iters)
  ids = segments.row_ids(valid, segment, num_segments)
  keep = ids < num_segments
  dtype = scores.dtype
  k = scores.shape[-1]
  log_k = jnp.log(jnp.asarray(k, dtype))
  log_n = segments.rows(jnp.log(jnp.maximum(segments.counts(ids, num_segments, dtype, axis_name), 1.0)), ids)
  safe = jnp.where(keep[:, None], scores, 0.0)

  def col_step(u):
    return -log_k - segments.segment_lse(safe + u[:, None], ids, num_segments, axis_name)

  def row_step(v, log_mass):
    return jnp.where(keep, log_mass - jax.nn.logsumexp(safe + segments.rows(v, ids), axis=-1), 0.0)

  u = jnp.where(keep, 0.0, 0.0).astype(dtype)  # derived from the rows: varying like them inside shard_map
  if num_iters > 0:
    u = lax.fori_loop(0, num_iters - 1, lambda _, u: row_step(col_step(u), -log_n), u)
    v = col_step(u)
  else:
    v = jnp.zeros((num_segments, k), dtype)
  u = row_step(v, jnp.zeros((), dtype))
  return jnp.where(keep[:, None], jnp.exp(safe + u[:, None] + segments.rows(v, ids)), 0.0)


def segment_clustering_loss(target: jax.Array, student_scores: jax.Array, valid: jax.Array, segment: jax.Array,
                            num_segments: int, *, axis_name: Optional[str] = None) -> jax.Array:
  """f32[M]: per segment, the mean over its valid rows of -Σ_k target log softmax_k(student) (0 when empty)."""
  ids = segments.row_ids(valid, segment, num_segments)
  keep = ids < num_segments
  log_p = jax.nn.log_softmax(jnp.where(keep[:, None], student_scores, 0.0), axis=-1)
  ce = jnp.where(keep, -jnp.sum(jnp.where(keep[:, None], target, 0.0) * log_p, axis=-1), 0.0)
  n = segments.counts(ids, num_segments, student_scores.dtype, axis_name)
  return segments.seg_sum(ce, ids, num_segments, axis_name) / jnp.maximum(n, 1.0)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x: f[N, K], index: i32[M'] with sentinel N -> f[M', K] (sentinel rows gather zeros)."""
  # Fill mode, not an appended zero row: the append would copy all of x (see blocks.take_rows).
  return x.at[index].get(mode="fill", fill_value=0, wrap_negative_indices=False)


def packed_dos_loss(student_cos: jax.Array, teacher_cos: jax.Array, target_index: jax.Array,
                    target_valid: jax.Array, cross_index: jax.Array, cross_valid: jax.Array,
                    student_valid: jax.Array, segment: jax.Array, view_valid: jax.Array, *, teacher_temp,
                    student_temp, alpha, num_iters: int = 3, normalization: str = "softmap",
                    cross_view: bool = True, axis_name: Optional[str] = None) -> Tuple[jax.Array, Dict[str, Any]]:
  """The DOS distillation loss of a batch of packs (THE training loss; `dos_loss` is its one-view-per-set form).

  For each view m of each pack: the teacher logits (cos / τ_T) gathered at the student's target points (the same
  view's teacher slots, `target_index`) are balanced per view by Zipf-Sinkhorn into target softmaps, and the
  same-view term is the view's softmap KL against the student (cos / τ_S). The cross-view term does the same with
  `cross_index` (the nearest point of the scene's other view in the same pack). Terms are weighted 1/2 each when
  `cross_view`, else the same-view term alone. Under normalization='clustering' the targets are per-point
  uniform Sinkhorn-Knopp distributions over prototypes and the term is their cross-entropy (the baseline).
  Teacher targets carry no gradient. This is `packed_dos_loss_at_rows` of the teacher's cosines gathered at
  `target_index` / `cross_index`; the train step gives that function the teacher evaluated at those slots alone.

  Normalization: each term is the MEAN over the real views of the batch (`view_valid`) of the per-view values:
  every view weighs the same whatever its size and however many views a step holds (packs filled by budget hold
  a varying number), as the per-view batch always did, so the gradient scale does not depend on the fill.

  Args:
    student_cos: f32[G, Ns, K] (G packs). teacher_cos: f32[G, Nt, K].
    target_index / cross_index: i32[G, Ns] slot in the pack's teacher set (sentinel Nt).
    target_valid / cross_valid / student_valid: bool[G, Ns].
    segment: i32[G, Ns] view of each student row within its pack (0..M-1; M or more = padding).
    view_valid: bool[G, M] real views (M static).
    teacher_temp: τ_T (may be traced). student_temp: τ_S. alpha: Zipf exponent. num_iters: static.
    normalization: 'softmap' (DOS) or 'clustering'. cross_view: include the cross-view term (static).
    axis_name: mesh axis sharding the student rows of each pack (inside shard_map), or None.

  Returns:
    (loss f32[], aux): 'loss_same', 'loss_cross' (f32[], 0 without cross_view), 'views' (f32[] real views),
    'loss_per_view' f32[G, M] (same-view term, 0 at empty views), and for `prototype_diagnostics`
    'teacher_logits' / 'targets' f32[G, Ns, K] (same view) and 'valid' bool[G, Ns].
  """
  at = lambda index: jax.vmap(_gather)(teacher_cos, index)  # noqa: E731
  return packed_dos_loss_at_rows(
      student_cos, at(target_index), target_valid, at(cross_index) if cross_view else None, cross_valid,
      student_valid, segment, view_valid, teacher_temp=teacher_temp, student_temp=student_temp, alpha=alpha,
      num_iters=num_iters, normalization=normalization, axis_name=axis_name)


def packed_dos_loss_at_rows(student_cos: jax.Array, teacher_same: jax.Array, target_valid: jax.Array,
                            teacher_cross: Optional[jax.Array], cross_valid: jax.Array, student_valid: jax.Array,
                            segment: jax.Array, view_valid: jax.Array, *, teacher_temp, student_temp, alpha,
                            num_iters: int = 3, normalization: str = "softmap",
                            axis_name: Optional[str] = None,
                            min_teacher_temp: Optional[float] = None) -> Tuple[jax.Array, Dict[str, Any]]:
  """`packed_dos_loss` given the teacher's cosines already at the student's rows.

  `min_teacher_temp`: a static lower bound on `teacher_temp` (the schedule's smallest), or None. With it the
  teacher logits are bounded by 1 / min_teacher_temp (cosines), and Zipf-Sinkhorn's iterations run as matrix
  products where that bound allows (`segment_zipf_sinkhorn(logit_bound=...)`): same targets to float32 rounding.

  Args:
    student_cos: f32[G, Ns, K].
    teacher_same: f32[G, Ns, K] the teacher's cosines at each student row's target slot (any value where
      `target_valid` is False). teacher_cross: the same at the cross-view slots, or None for no cross-view term.
    target_valid / cross_valid / student_valid, segment, view_valid, teacher_temp, student_temp, alpha, num_iters,
      normalization, axis_name: as `packed_dos_loss`.

  Returns:
    (loss, aux) as `packed_dos_loss`.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  num_segments = view_valid.shape[-1]
  student_logits = student_cos / student_temp
  view_w = view_valid.astype(student_logits.dtype)
  views = jnp.sum(view_w)
  # |cos| <= 1 up to rounding: 1 + 1e-6 covers it.
  bound = None if min_teacher_temp is None else (1.0 + 1e-6) / float(min_teacher_temp)

  def per_pack(t, s, ok, seg):
    if normalization == "softmap":
      targets = lax.stop_gradient(segment_zipf_sinkhorn(t, ok, seg, num_segments, alpha, num_iters,
                                                        axis_name=axis_name, logit_bound=bound))
      return segment_softmap_kl(targets, s, ok, seg, num_segments, axis_name=axis_name), targets
    targets = lax.stop_gradient(segment_clustering_targets(t, ok, seg, num_segments, num_iters,
                                                           axis_name=axis_name))
    return segment_clustering_loss(targets, s, ok, seg, num_segments, axis_name=axis_name), targets

  def one_term(teacher, valid):
    logits = lax.stop_gradient(teacher) / teacher_temp
    valid = valid & student_valid
    per_view, targets = jax.vmap(per_pack)(logits, student_logits, valid, segment)
    return per_view * view_w, logits, targets, valid

  same, logits_same, targets_same, valid_same = one_term(teacher_same, target_valid)
  loss_same = jnp.sum(same) / jnp.maximum(views, 1.0)
  if teacher_cross is not None:
    loss_cross = jnp.sum(one_term(teacher_cross, cross_valid)[0]) / jnp.maximum(views, 1.0)
    loss = 0.5 * (loss_same + loss_cross)
  else:
    loss_cross = jnp.zeros((), loss_same.dtype)
    loss = loss_same
  aux = dict(loss_same=loss_same, loss_cross=loss_cross, views=views, loss_per_view=same,
             teacher_logits=logits_same, targets=targets_same, valid=valid_same)
  return loss, aux


# ------------------------------------------------------------------- per-set forms (one view = one segment)
def _per_set(fn, *arrays, axis_name=None):
  """fn(*one-set arrays, segment, 1) over any leading axes of `arrays` ([..., N, ...])."""
  lead = arrays[0].shape[:-2]  # arrays[0] is always f[..., N, K]
  n = arrays[0].shape[-2]
  flat = [a.reshape((-1,) + a.shape[len(lead):]) for a in arrays]
  one = functools.partial(fn, axis_name=axis_name)
  out = jax.vmap(lambda *xs: one(*xs, jnp.zeros((n,), jnp.int32), 1))(*flat)
  return out.reshape(lead + out.shape[1:])


def zipf_sinkhorn(scores: jax.Array, valid: jax.Array, alpha: float, num_iters: int = 3,
                  *, axis_name: Optional[str] = None) -> jax.Array:
  """Zipf-Sinkhorn target softmaps (DESIGN.md contract): `segment_zipf_sinkhorn` of one set.

  Start from Q = exp(scores) on valid rows (total mass 1); repeat `num_iters` times: (a) scale rows so each valid
  point has mass 1/N_valid, (b) scale columns so column k has mass w_k = zipf_prior(K, α)[k]; finally scale each
  column to sum to 1. Log domain, `lax.fori_loop` (finite for |scores| <= 100 and α <= 3). Differentiable, but a
  target: wrap it in `lax.stop_gradient` (the losses do).

  Args:
    scores: f32[..., N, K] teacher logits (cosine / τ_T).
    valid: bool[..., N] real points; padded rows are ignored and come out exactly 0.
    alpha: Zipf exponent (0 = uniform Sinkhorn); may be traced.
    num_iters: number of (row, column) scaling rounds, a static int >= 0.
    axis_name: mesh axis over which the N points are sharded (inside shard_map), or None.

  Returns:
    f32[..., N, K]: every column is a distribution over the valid points (sums to 1 across all shards).
  """
  fn = lambda s, v, seg, m, axis_name: segment_zipf_sinkhorn(s, v, seg, m, alpha, num_iters, axis_name=axis_name)
  return _per_set(fn, scores, valid, axis_name=axis_name)


def softmap(scores: jax.Array, valid: jax.Array, *, axis_name: Optional[str] = None) -> jax.Array:
  """Softmax over the POINT axis for each prototype (the student's prediction; DESIGN.md contract).

  Args:
    scores: f32[..., N, K] logits already divided by τ_S.
    valid: bool[..., N]; padded rows come out exactly 0.
    axis_name: mesh axis over which the points are sharded, or None.

  Returns:
    f32[..., N, K], each column sums to 1 over the valid points.
  """
  return _per_set(segment_softmap, scores, valid, axis_name=axis_name)


def softmap_kl(target: jax.Array, student_scores: jax.Array, valid: jax.Array,
               *, axis_name: Optional[str] = None) -> jax.Array:
  """(1/K) Σ_k KL(target[:, k] ‖ softmap(student_scores, valid)[:, k]), via log-softmax, 0·log 0 = 0 (contract).

  Args:
    target: f32[..., N, K] target softmaps (columns sum to 1 over valid points; padded rows ignored).
    student_scores: f32[..., N, K] student logits (cosine / τ_S).
    valid: bool[..., N].
    axis_name: mesh axis over which the points are sharded, or None.

  Returns:
    f32[...] (a scalar for one set). A set with no valid point contributes 0.
  """
  return _per_set(segment_softmap_kl, target, student_scores, valid, axis_name=axis_name)[..., 0]


def zipf_softmap_kl(teacher_scores: jax.Array, student_scores: jax.Array, valid: jax.Array, alpha: float,
                    num_iters: int = 3, *, axis_name: Optional[str] = None) -> Tuple[jax.Array, jax.Array]:
  """`softmap_kl(stop_gradient(zipf_sinkhorn(teacher, valid, α)), student, valid)`: (kl f32[...], targets
  f32[..., N, K]), what one view's DOS term computes."""
  targets = lax.stop_gradient(zipf_sinkhorn(lax.stop_gradient(teacher_scores), valid, alpha, num_iters,
                                            axis_name=axis_name))
  return softmap_kl(targets, student_scores, valid, axis_name=axis_name), targets


def clustering_targets(scores: jax.Array, valid: jax.Array, num_iters: int = 3,
                       *, axis_name: Optional[str] = None) -> jax.Array:
  """Uniform Sinkhorn-Knopp targets of the 'clustering' baseline (DINO/Sonata style), one set per leading index.

  Returns f32[..., N, K]: rows of valid points sum to 1 over prototypes, padded rows exactly 0.
  """
  fn = lambda s, v, seg, m, axis_name: segment_clustering_targets(s, v, seg, m, num_iters, axis_name=axis_name)
  return _per_set(fn, scores, valid, axis_name=axis_name)


def clustering_loss(target: jax.Array, student_scores: jax.Array, valid: jax.Array,
                    *, axis_name: Optional[str] = None) -> jax.Array:
  """Cross-entropy of per-point prototype distributions, averaged over valid points: f32[...] (0 for an empty
  set)."""
  return _per_set(segment_clustering_loss, target, student_scores, valid, axis_name=axis_name)[..., 0]


def dos_loss(student_cos: jax.Array, teacher_cos: jax.Array, target_index: jax.Array, target_valid: jax.Array,
             cross_index: jax.Array, cross_valid: jax.Array, student_valid: jax.Array, *, teacher_temp,
             student_temp, alpha, num_iters: int = 3, normalization: str = "softmap", cross_view: bool = True,
             axis_name: Optional[str] = None) -> Tuple[jax.Array, Dict[str, Any]]:
  """The DOS loss of B scenes x V views given per view: `packed_dos_loss` with scene b as a pack of V segments.

  Same terms as `packed_dos_loss`; the cross-view term of view v uses the teacher of view (v + 1) mod V (the other
  view when V == 2, which cross_view requires). Averaged over B and V.

  Args:
    student_cos: f32[B, V, Ns, K]; teacher_cos: f32[B, V, Nt, K].
    target_index: i32[B, V, Ns] slot in the same view's teacher set, sentinel Nt.
    target_valid, cross_valid, student_valid: bool[B, V, Ns].
    cross_index: i32[B, V, Ns] slot in the other view's teacher set, sentinel Nt.
    teacher_temp, student_temp, alpha, num_iters, normalization, cross_view: as `packed_dos_loss`.
    axis_name: when the Ns student points of each set are sharded across this mesh axis (inside shard_map), the
      student and index arrays hold this device's slice and `teacher_cos` the full teacher sets.

  Returns:
    (loss f32[], aux) as `packed_dos_loss`, with 'teacher_logits' / 'targets' f32[B, V, Ns, K] and 'valid'
    bool[B, V, Ns].
  """
  if student_cos.ndim != 4 or teacher_cos.ndim != 4:
    raise ValueError(f"dos_loss expects [B, V, N, K] cosines, got student {student_cos.shape} and "
                     f"teacher {teacher_cos.shape}")
  b, v, ns, k = student_cos.shape
  nt = teacher_cos.shape[2]
  if cross_view and v != 2:
    raise ValueError(f"cross_view=True needs data.num_views == 2, got {v} views")

  def to_pack(index, view_of):
    shifted = index + (view_of * nt)[None, :, None]
    return jnp.where(index < nt, shifted, v * nt).reshape(b, v * ns)

  views = jnp.arange(v)
  segment = jnp.broadcast_to(views[None, :, None], (b, v, ns)).reshape(b, v * ns)
  loss, aux = packed_dos_loss(
      student_cos.reshape(b, v * ns, k), teacher_cos.reshape(b, v * nt, k), to_pack(target_index, views),
      target_valid.reshape(b, v * ns), to_pack(cross_index, (views + 1) % v), cross_valid.reshape(b, v * ns),
      student_valid.reshape(b, v * ns), segment, jnp.ones((b, v), bool), teacher_temp=teacher_temp,
      student_temp=student_temp, alpha=alpha, num_iters=num_iters, normalization=normalization,
      cross_view=cross_view, axis_name=axis_name)
  for key in ("teacher_logits", "targets"):
    aux[key] = aux[key].reshape(b, v, ns, k)
  aux["valid"] = aux["valid"].reshape(b, v, ns)
  return loss, aux
