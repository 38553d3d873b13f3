"""The DOS objective: Zipf-Sinkhorn target softmaps and the softmap KL distillation loss.

A *softmap* is, for each prototype k, a distribution over the points of one point set (one view of one scene):
softmax over the POINT axis. The teacher's softmaps are balanced with a Sinkhorn procedure whose column marginals
follow a Zipf prior, so prototype k receives mass w_k ∝ k^-α in the intermediate iterations; the student is
trained to match them with a KL divergence per prototype.

All functions are pure, jit-able, and vmap-able. They also accept any number of leading batch axes directly
(`scores: f32[..., N, K]`, `valid: bool[..., N]`): the point axis is always -2 and the prototype axis -1.

Sharded points: `zipf_sinkhorn`, `softmap`, `softmap_kl` and `clustering_*` take an optional `axis_name`. Inside
`shard_map` with the points of each set split across that mesh axis, every sum over points becomes a psum
(log-sum-exps use a pmax'd shift), so the result equals the unsharded one.

Implementation notes (float32/float64 inputs):
  * Sinkhorn runs in the log domain on potentials, log Q_ik = s_ik + u_i + v_k, so no N x K array is written
    inside the loop: each half-step is one fused log-sum-exp over `scores` plus a vector, shifted by a cheap upper
    bound of its maximum (row/column maxima of `scores` computed once). If a bound is too loose for float range
    (only for extreme score spreads), that log-sum-exp is recomputed exactly (`lax.cond`), so results never
    depend on it.
  * `dos_loss` uses `zipf_softmap_kl`, which reads log T straight from the potentials (no targets written out, a
    custom VJP for the student gradient); it equals `softmap_kl(stop_gradient(zipf_sinkhorn(...)), ...)`.
  * Padded rows may hold anything (an encoder's leftovers, even NaN or ±inf): every expression that reads an
    N x K input selects 0 into its padded rows first (`_clean`), so no padded value reaches a valid output, the
    loss or a gradient, and a padded entry's gradient is exactly 0. The select sits inside each fused pass (it is
    re-built where the input is read, never stored), so it costs no N x K write; the masking that follows it stays
    arithmetic (finite potentials, no selects).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from dos_jax import choices

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


# Padded rows carry this finite potential instead of -inf, so exp() gives exactly 0 there while products such as
# T * log T stay 0 * (finite) = 0 inside fused reductions, with no select over an N x K array.
_NEG = -1e30


def _clean(x, valid):
  """x: f[..., N, K] with its padded rows (valid: bool[..., N] False) set to 0, by a select: a NaN or inf there
  must not meet the arithmetic masks below (NaN * 0 = NaN), and a select passes no gradient to padded entries.
  Call it where x is read (inside the fused pass), not once up front: a stored copy would be an N x K write."""
  return jnp.where(valid[..., :, None], x, jnp.zeros((), x.dtype))


def _row_bias(valid, dtype):
  """0 on valid rows, _NEG on padded ones: f[..., N]. Arithmetic rather than a select, so XLA:CPU can fuse its
  broadcast into the (YNNPACK) reductions that read it instead of writing an N x K temporary."""
  return (valid.astype(dtype) - 1) * (-_NEG)


def _count_valid(valid, axis_name=None):
  n = jnp.sum(valid, axis=-1).astype(jnp.result_type(float))
  if axis_name is not None:
    n = lax.psum(n, axis_name)
  return n


def _tiny(dtype):
  # A shifted sum-exp below this may have lost terms to underflow: fall back to the exact shift.
  return float(jnp.finfo(dtype).tiny) * 1e8


def _bounded_lse(make_x, axis, bound, check, axis_name=None):
  """log Σ exp(x) along `axis` in ONE fused pass, shifted by a precomputed upper bound of the maximum.

  The usual two-pass log-sum-exp (max, then sum-exp) makes XLA materialise the N x K operand that both passes
  read; with a cheap bound (built from per-row/column maxima computed once) the sum-exp is a single fusion that
  never writes N x K. Terms are <= 1 so nothing overflows; if the bound was too loose (some checked sum fell
  below `_tiny`, possible only for extreme score ranges), the exact two-pass version is used instead (`lax.cond`,
  decided jointly across `axis_name`), so results never depend on the bound.

  Args:
    make_x: () -> f[..., N, K] the operand expression (re-built inside each branch, fused by XLA).
    axis: -2 (points; psum'd over `axis_name`) or -1 (prototypes).
    bound: f[...] (shape of the reduction output), >= the true maximum wherever `check` holds.
    check: bool broadcastable to the output: entries that must be accurate (empty sets / padded rows excluded).
    axis_name: mesh axis sharding the points (only for axis=-2), or None.

  Returns:
    f[...] log-sum-exp; entries whose sum is 0 (empty) give `bound`.
  """
  bound = lax.stop_gradient(bound)
  x = make_x()
  total = jnp.sum(jnp.exp(x - jnp.expand_dims(bound, axis)), axis=axis)
  if axis_name is not None:
    total = lax.psum(total, axis_name)
  bad = jnp.any(check & (total < _tiny(x.dtype)))
  if axis_name is not None:
    bad = lax.psum(bad.astype(jnp.int32), axis_name) > 0

  def exact():
    x = make_x()
    m = lax.stop_gradient(jnp.max(x, axis=axis))
    if axis_name is not None:
      m = lax.pmax(m, axis_name)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    t = jnp.sum(jnp.exp(x - jnp.expand_dims(m, axis)), axis=axis)
    if axis_name is not None:
      t = lax.psum(t, axis_name)
    return m + jnp.log(jnp.where(t > 0, t, 1.0))

  return lax.cond(bad, exact, lambda: bound + jnp.log(jnp.where(total > 0, total, 1.0)))


class _Set:
  """Per-set quantities every Sinkhorn step reuses: validity, counts and the maxima of `scores` (one pass each)."""

  def __init__(self, scores, valid, axis_name):
    self.raw, self.valid, self.axis_name = scores, valid, axis_name
    dtype = scores.dtype
    self.count = _count_valid(valid, axis_name)
    self.nonempty = self.count > 0                                       # [...]
    self.log_n = jnp.log(jnp.maximum(self.count, 1.0)).astype(dtype)
    s = lax.stop_gradient(self.scores)
    self.row_max = jnp.max(s, axis=-1)                                   # [..., N]
    # Over ALL rows: an upper bound of the valid rows' maximum that needs no mask (padding rarely holds the
    # maximum; if it is far above the valid scores, `_bounded_lse` falls back to the exact shift).
    col_max = jnp.max(s, axis=-2)                                        # [..., K]
    if axis_name is not None:
      col_max = lax.pmax(col_max, axis_name)
    # Float masks instead of selects on vectors that get broadcast to N x K: XLA:CPU materialises broadcasts of
    # select results rather than fusing them into its reductions.
    self.nonempty_f = self.nonempty.astype(dtype)
    self.col_max = col_max * self.nonempty_f[..., None]

  @property
  def scores(self):
    """The scores with padded rows 0: f[..., N, K], a fresh (fusible) expression at every use."""
    return _clean(self.raw, self.valid)

  def lse_points(self, u):
    """log Σ_{valid i} exp(scores_ik + u_i): f[..., K] (0 for an empty set); u holds _NEG on padded rows."""
    u_max = jnp.max(u, axis=-1)
    if self.axis_name is not None:
      u_max = lax.pmax(u_max, self.axis_name)
    bound = (self.col_max + u_max[..., None]) * self.nonempty_f[..., None]
    check = jnp.broadcast_to(self.nonempty[..., None], bound.shape)
    lse = _bounded_lse(lambda: self.scores + u[..., :, None], -2, bound, check, self.axis_name)
    return lse * self.nonempty_f[..., None]

  def lse_protos(self, v):
    """log Σ_k exp(scores_ik + v_k): f[..., N] (rows are never sharded: no collective)."""
    bound = self.row_max + jnp.max(v, axis=-1)[..., None]
    return _bounded_lse(lambda: self.scores + v[..., None, :], -1, bound, self.valid)

  def masked_rows(self, u):
    return jnp.where(self.valid, u, _NEG)


def _sinkhorn_potentials(st: _Set, log_col_mass, num_iters):
  """Log-domain Sinkhorn on potentials; log Q = scores + u[..., :, None] + v[..., None, :].

  Runs the DESIGN.md schedule: rows -> 1/N_valid, columns -> exp(log_col_mass), `num_iters` times, then every
  column to total 1. The initial "total mass 1" normalization is a global constant that the first row step
  removes, and the last iteration's column step is overridden by the final column step (each column scaling
  only resets v), so both are skipped: the result is identical, with two fewer passes over `scores`.

  Returns:
    u: f[..., N] (_NEG on padded rows), v: f[..., K].
  """
  dtype = st.scores.dtype
  log_col_mass = log_col_mass.astype(dtype)

  def row_step(v):
    return st.masked_rows(-st.log_n[..., None] - st.lse_protos(v))

  def col_step(u, log_mass):
    return log_mass - st.lse_points(u)

  if num_iters == 0:
    u = st.masked_rows(jnp.zeros(st.valid.shape, dtype))
  else:
    u = row_step(jnp.zeros(st.scores.shape[:-2] + st.scores.shape[-1:], dtype))
    u = lax.fori_loop(0, num_iters - 1, lambda _, u: row_step(col_step(u, log_col_mass)), u)
  v = col_step(u, jnp.zeros((), dtype))
  return u, v


def _clustering_potentials(st: _Set, num_iters):
  """Transposed Sinkhorn-Knopp for the clustering baseline (SwAV/DINO schedule).

  Repeat `num_iters` times: columns -> 1/K, rows -> 1/N_valid; then rows to 1. As in `_sinkhorn_potentials`,
  the last row scaling is replaced by the final one (a row scaling only resets u).

  Returns:
    u: f[..., N] (_NEG on padded rows), v: f[..., K]; log targets = scores + u + v, rows sum to 1.
  """
  dtype = st.scores.dtype
  log_k = jnp.log(jnp.asarray(st.scores.shape[-1], dtype))

  def col_step(u):
    return -log_k - st.lse_points(u)

  def row_step(v, log_mass):
    return st.masked_rows(log_mass - st.lse_protos(v))

  u = st.masked_rows(jnp.zeros(st.valid.shape, dtype))
  if num_iters > 0:
    u = lax.fori_loop(0, num_iters - 1, lambda _, u: row_step(col_step(u), -st.log_n[..., None]), u)
    v = col_step(u)
  else:
    v = jnp.zeros(st.scores.shape[:-2] + st.scores.shape[-1:], dtype)
  u = row_step(v, jnp.zeros((), dtype))
  return u, v


def _log_targets(scores, u, v):
  return scores + u[..., :, None] + v[..., None, :]


def _student_lse(student_scores, valid, axis_name=None):
  """log Σ_{valid i} exp(student_ik) over points: f[..., K] (0 for an empty set)."""
  return _Set(student_scores, valid, axis_name).lse_points(_row_bias(valid, student_scores.dtype))


def zipf_sinkhorn(scores: jax.Array, valid: jax.Array, alpha: float, num_iters: int = 3,
                  *, axis_name: Optional[str] = None) -> jax.Array:
  """Zipf-Sinkhorn target softmaps (DESIGN.md contract).

  Start from Q = exp(scores) on valid rows (total mass 1); repeat `num_iters` times: (a) scale rows so each valid
  point has mass 1/N_valid, (b) scale columns so column k has mass w_k = zipf_prior(K, α)[k]; finally scale each
  column to sum to 1. Runs in the log domain (finite for |scores| <= 100 and α <= 3).

  The result is differentiable (the loop is a `fori_loop` with a static trip count), but the objective never
  needs that: `dos_loss` applies `lax.stop_gradient` to the teacher logits. Callers using this directly should
  wrap the output in `lax.stop_gradient` when it is a target.

  Args:
    scores: f32[..., N, K] teacher logits (cosine / τ_T).
    valid: bool[..., N] real points; padded rows are ignored and come out exactly 0.
    alpha: Zipf exponent (0 = uniform Sinkhorn); may be traced.
    num_iters: number of (row, column) scaling rounds, a static int >= 0.
    axis_name: mesh axis over which the N points are sharded (inside shard_map), or None.

  Returns:
    f32[..., N, K]: every column is a distribution over the valid points (sums to 1 across all shards).
  """
  num_iters = _check_iters(num_iters)
  log_w = _log_zipf_prior(scores.shape[-1], alpha)
  st = _Set(scores, valid, axis_name)
  u, v = _sinkhorn_potentials(st, log_w, num_iters)
  return jnp.where(valid[..., :, None], jnp.exp(_log_targets(st.scores, u, v)), 0.0)


def softmap(scores: jax.Array, valid: jax.Array, *, axis_name: Optional[str] = None) -> jax.Array:
  """Softmax over the POINT axis for each prototype (the student's prediction).

  Args:
    scores: f32[..., N, K] logits already divided by τ_S.
    valid: bool[..., N]; padded rows come out exactly 0.
    axis_name: mesh axis over which the points are sharded, or None.

  Returns:
    f32[..., N, K], each column sums to 1 over the valid points.
  """
  lse = _student_lse(scores, valid, axis_name)
  return jnp.where(valid[..., :, None], jnp.exp(_clean(scores, valid) - lse[..., None, :]), 0.0)


def softmap_kl(target: jax.Array, student_scores: jax.Array, valid: jax.Array,
               *, axis_name: Optional[str] = None) -> jax.Array:
  """(1/K) Σ_k KL(target[:, k] ‖ softmap(student_scores, valid)[:, k]), via log-softmax, 0·log 0 = 0.

  Args:
    target: f32[..., N, K] target softmaps (columns sum to 1 over valid points; padded rows ignored).
    student_scores: f32[..., N, K] student logits (cosine / τ_S).
    valid: bool[..., N].
    axis_name: mesh axis over which the points are sharded, or None.

  Returns:
    f32[...] (a scalar for one set). A set with no valid point contributes 0.
  """
  lse = _student_lse(student_scores, valid, axis_name)
  log_p = _clean(student_scores, valid) - lse[..., None, :]
  target = _clean(target, valid)
  terms = jnp.where(valid[..., :, None], jax.scipy.special.xlogy(target, target) - target * log_p, 0.0)
  kl = jnp.sum(terms, axis=(-2, -1))
  if axis_name is not None:
    kl = lax.psum(kl, axis_name)
  return kl / student_scores.shape[-1]


def clustering_targets(scores: jax.Array, valid: jax.Array, num_iters: int = 3,
                       *, axis_name: Optional[str] = None) -> jax.Array:
  """Uniform Sinkhorn-Knopp targets of the 'clustering' baseline (DINO/Sonata style).

  Each valid POINT gets a distribution over prototypes; the iterations balance prototype usage to 1/K.
  Schedule (SwAV/DINO): repeat `num_iters` times: columns -> 1/K, rows -> 1/N_valid; then rows to sum 1.

  Args:
    scores: f32[..., N, K] teacher logits (cosine / τ_T).
    valid: bool[..., N].
    num_iters: static int >= 0.
    axis_name: mesh axis over which points are sharded, or None.

  Returns:
    f32[..., N, K]: rows of valid points sum to 1 over prototypes, padded rows exactly 0.
  """
  num_iters = _check_iters(num_iters)
  st = _Set(scores, valid, axis_name)
  u, v = _clustering_potentials(st, num_iters)
  return jnp.where(valid[..., :, None], jnp.exp(_log_targets(st.scores, u, v)), 0.0)


def clustering_loss(target: jax.Array, student_scores: jax.Array, valid: jax.Array,
                    *, axis_name: Optional[str] = None) -> jax.Array:
  """Cross-entropy of per-point prototype distributions, averaged over valid points.

  Args:
    target: f32[..., N, K] per-point distributions over prototypes.
    student_scores: f32[..., N, K] student logits (softmax over prototypes per point).
    valid: bool[..., N].
    axis_name: mesh axis over which points are sharded, or None.

  Returns:
    f32[...]: mean over valid points of -Σ_k target log softmax_k(student); 0 for an empty set.
  """
  log_p = jax.nn.log_softmax(_clean(student_scores, valid), axis=-1)
  ce = jnp.sum(jnp.where(valid[..., :, None], -_clean(target, valid) * log_p, 0.0), axis=(-2, -1))
  n = _count_valid(valid, None)
  if axis_name is not None:
    ce, n = lax.psum(ce, axis_name), lax.psum(n, axis_name)
  return ce / jnp.maximum(n, 1.0)


def zipf_softmap_kl(teacher_scores: jax.Array, student_scores: jax.Array, valid: jax.Array, alpha: float,
                    num_iters: int = 3, *, axis_name: Optional[str] = None) -> Tuple[jax.Array, jax.Array]:
  """Fused `softmap_kl(stop_gradient(zipf_sinkhorn(teacher, valid, α)), student, valid)`: what `dos_loss` runs.

  Same value and student gradient as the composition, but the targets are never written out: the KL reads
  log T = teacher + u + v straight from the Sinkhorn potentials, so the whole computation is a few fused passes
  over the two N x K inputs (no log of T, no N x K temporaries).

  Args:
    teacher_scores: f32[..., N, K] teacher logits (no gradient flows into them).
    student_scores: f32[..., N, K] student logits.
    valid: bool[..., N].
    alpha, num_iters, axis_name: as in `zipf_sinkhorn`.

  Returns:
    kl: f32[...]; targets: f32[..., N, K] (= zipf_sinkhorn(...); unused outputs cost nothing under jit).
  """
  num_iters = _check_iters(num_iters)
  teacher_scores = lax.stop_gradient(teacher_scores)
  log_w = _log_zipf_prior(teacher_scores.shape[-1], alpha)
  st = _Set(teacher_scores, valid, axis_name)
  u, v = _sinkhorn_potentials(st, log_w, num_iters)
  if axis_name is None:
    kl = _kl_from_potentials(student_scores, teacher_scores, u, v, valid)
  else:
    kl = lax.psum(_kl_value(student_scores, teacher_scores, u, v, valid, axis_name)[0], axis_name)
  targets = jnp.where(valid[..., :, None], jnp.exp(_log_targets(st.scores, u, v)), 0.0)
  return kl / student_scores.shape[-1], targets


def _kl_value(student, teacher, u, v, valid, axis_name=None):
  """Σ_ik T_ik (log T_ik - log P_ik) with log T = teacher + u + v and P = softmap(student): (f[...], lse)."""
  lse = _student_lse(student, valid, axis_name)
  log_t = _log_targets(_clean(teacher, valid), u, v)
  # Padded rows: log_t ~ _NEG (finite), so exp(log_t) = 0 and their terms are exactly 0 without another select.
  return jnp.sum(jnp.exp(log_t) * (log_t - _clean(student, valid) + lse[..., None, :]), axis=(-2, -1)), lse


@jax.custom_vjp
def _kl_from_potentials(student, teacher, u, v, valid):
  return _kl_value(student, teacher, u, v, valid)[0]


def _kl_fwd(student, teacher, u, v, valid):
  kl, lse = _kl_value(student, teacher, u, v, valid)
  return kl, (student, teacher, u, v, valid, lse)


def _kl_bwd(res, g):
  # d/ds_ik Σ T (log T - log P) = P_ik Σ_i T_ik - T_ik, and Σ_i T_ik = 1 for every column of a non-empty set (the
  # final Sinkhorn step normalises it), so the gradient is one fused elementwise pass with no N x K residuals.
  # Targets are constants here (dos_loss stops their gradient), so the teacher side gets zero cotangents.
  student, teacher, u, v, valid, lse = res
  nonempty = jnp.any(valid, axis=-1).astype(student.dtype)[..., None]
  # Operands are associated differently from the forward pass on purpose: XLA would otherwise CSE them with the
  # forward expressions and write them out as shared N x K temporaries.
  # The row bias zeroes padded rows inside the exp (as the forward pass does): multiplying exp(student - lse) by
  # the mask instead overflows to inf * 0 = NaN when a padded logit sits ~88 above the valid ones.
  p = jnp.exp(_clean(student, valid) + _row_bias(valid, student.dtype)[..., :, None] - lse[..., None, :])
  p = p * nonempty[..., None]
  log_t = (_clean(teacher, valid) + v[..., None, :]) + u[..., :, None]
  grad = g[..., None, None] * (p - jnp.exp(log_t))
  return grad, jnp.zeros_like(teacher), jnp.zeros_like(u), jnp.zeros_like(v), None


_kl_from_potentials.defvjp(_kl_fwd, _kl_bwd)


def _check_iters(num_iters) -> int:
  if not isinstance(num_iters, int) or num_iters < 0:
    raise ValueError(f"sinkhorn_iters must be a non-negative int, got {num_iters!r}")
  return num_iters


def _gather_points(x, index):
  """x: f[..., N, K], index: i32[..., M] with sentinel N -> f[..., M, K] (sentinel rows gather zeros)."""
  pad = [(0, 0)] * (x.ndim - 2) + [(0, 1), (0, 0)]
  x = jnp.pad(x, pad)
  return jnp.take_along_axis(x, index[..., None], axis=-2, mode="clip")


def dos_loss(student_cos: jax.Array, teacher_cos: jax.Array, target_index: jax.Array, target_valid: jax.Array,
             cross_index: jax.Array, cross_valid: jax.Array, student_valid: jax.Array, *, teacher_temp,
             student_temp, alpha, num_iters: int = 3, normalization: str = "softmap", cross_view: bool = True,
             axis_name: Optional[str] = None) -> Tuple[jax.Array, Dict[str, Any]]:
  """The DOS distillation loss for one batch of B scenes x V views.

  For view v: the teacher logits (cos / τ_T) of view v gathered at the student's target points are balanced by
  Zipf-Sinkhorn over those points (valid = target_valid) into target softmaps; the same-view term is
  `softmap_kl(target, student_cos / τ_S, valid)`. The cross-view term does the same with the teacher of view
  1 - v gathered at `cross_index` (valid = cross_valid). Terms are weighted 1/2 each when `cross_view`, else the
  same-view term alone, and averaged over B and V. Teacher targets carry no gradient.

  Under normalization='clustering' the targets are `clustering_targets` (per-point distributions over
  prototypes) and each term is `clustering_loss` instead.

  Args:
    student_cos: f32[B, V, Ns, K] cosine between student features and prototypes.
    teacher_cos: f32[B, V, Nt, K] cosine between teacher features and (teacher) prototypes.
    target_index: i32[B, V, Ns] slot in the same view's teacher set, sentinel Nt.
    target_valid: bool[B, V, Ns] points that receive a same-view target.
    cross_index: i32[B, V, Ns] slot in the other view's teacher set, sentinel Nt.
    cross_valid: bool[B, V, Ns] points with a cross-view match.
    student_valid: bool[B, V, Ns] real student points (target/cross validity is intersected with it).
    teacher_temp: τ_T (scalar, may be traced, e.g. a warm-up schedule).
    student_temp: τ_S.
    alpha: Zipf exponent.
    num_iters: Sinkhorn iterations (static).
    normalization: 'softmap' (DOS) or 'clustering' (baseline).
    cross_view: include the cross-view term (static; needs V == 2).
    axis_name: when the Ns student points of each set are sharded across this mesh axis (inside shard_map),
      the student arrays and index arrays hold this device's slice, while `teacher_cos` holds the full teacher
      set on every device; sums over points then become psums.

  Returns:
    loss: f32[] scalar.
    aux: dict with 'loss_same', 'loss_cross' (f32[], 0 without cross_view) and, for `prototype_diagnostics`,
      'teacher_logits' (f32[B, V, Ns, K], gathered same-view teacher logits), 'targets' (f32[B, V, Ns, K]) and
      'valid' (bool[B, V, Ns]). Unused aux entries are dead code under jit.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  if student_cos.ndim != 4 or teacher_cos.ndim != 4:
    raise ValueError(f"dos_loss expects [B, V, N, K] cosines, got student {student_cos.shape} and "
                             f"teacher {teacher_cos.shape}")
  num_views = student_cos.shape[1]
  if cross_view and num_views != 2:
    raise ValueError(f"cross_view=True needs data.num_views == 2, got {num_views} views")

  student_logits = student_cos / student_temp
  teacher_logits_all = lax.stop_gradient(teacher_cos) / teacher_temp

  def one_term(teacher_logits, index, valid):
    logits = _gather_points(teacher_logits, index)
    valid = valid & student_valid
    if normalization == "softmap":
      per_set, targets = zipf_softmap_kl(logits, student_logits, valid, alpha, num_iters, axis_name=axis_name)
    else:
      targets = lax.stop_gradient(clustering_targets(logits, valid, num_iters, axis_name=axis_name))
      per_set = clustering_loss(targets, student_logits, valid, axis_name=axis_name)
    return jnp.mean(per_set), logits, lax.stop_gradient(targets), valid

  loss_same, logits_same, targets_same, valid_same = one_term(teacher_logits_all, target_index, target_valid)
  if cross_view:
    loss_cross = one_term(teacher_logits_all[:, ::-1], cross_index, cross_valid)[0]
    loss = 0.5 * (loss_same + loss_cross)
  else:
    loss_cross = jnp.zeros((), loss_same.dtype)
    loss = loss_same
  aux = dict(loss_same=loss_same, loss_cross=loss_cross, teacher_logits=logits_same, targets=targets_same,
             valid=valid_same)
  return loss, aux
