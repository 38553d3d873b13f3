"""The objective's segment (pack) functions == the per-set forms applied to each segment alone (float32 rounding).

The per-set forms are the one-segment case of the same code (a masked dense reduction instead of a segment
scatter), and tests/test_objective.py checks them against an independent numpy reference; here the packed
computation must keep every view to itself.

Segments are interleaved (rows of different views alternate), include an empty segment, a single-point segment
and invalid rows inside segments, so a reduction that leaked across segments or counted invalid rows would be
off by O(1). Tolerances: every quantity is a few float32 log-sum-exp / sum reductions over <= 40 rows or 16
prototypes of values of order 1-10, so relative errors stay within ~100 float32 eps (1.2e-5); we use rtol 2e-5
with atol 1e-6 for probabilities and KLs (<= ~5) and 1e-5 for logits-scale gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import objective as so
from dos_jax import objective

pytestmark = pytest.mark.system

M = 4  # segments; segment 2 stays empty


def _case(seed=0, n=96, k=16):
  r = np.random.default_rng(seed)
  seg = r.choice([0, 1, 3], size=n, p=[0.45, 0.45, 0.10]).astype(np.int32)
  seg[r.integers(n)] = 3
  seg[seg == 3] = [3] + [5] * (int(np.sum(seg == 3)) - 1)  # segment 3 has exactly one row; 5 is out of range
  valid = r.random(n) > 0.15
  valid[seg == 3] = True
  teacher = (r.normal(size=(n, k)) * 8).astype(np.float32)
  student = (r.normal(size=(n, k)) * 5).astype(np.float32)
  return jnp.asarray(teacher), jnp.asarray(student), jnp.asarray(valid), jnp.asarray(seg)


def _per_segment(fn, seg, valid):
  return [fn(valid & (seg == m)) for m in range(M)]


def test_softmap_and_sinkhorn_match_per_set():
  teacher, student, valid, seg = _case()
  got = so.segment_softmap(student, valid, seg, M)
  want = sum(_per_segment(lambda ok: objective.softmap(student, ok), seg, valid))
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  got = so.segment_zipf_sinkhorn(teacher, valid, seg, M, 1.3, 3)
  want = sum(_per_segment(lambda ok: objective.zipf_sinkhorn(teacher, ok, 1.3, 3), seg, valid))
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  # The single-row segment: its row is 1 in every column; invalid rows are exactly 0.
  one = np.flatnonzero(np.asarray(seg) == 3)[0]
  np.testing.assert_allclose(got[one], 1.0, rtol=1e-6)
  assert np.all(np.asarray(got)[~np.asarray(valid)] == 0)


@pytest.mark.parametrize("num_iters", [0, 3])
def test_kl_and_gradient_match_per_set(num_iters):
  teacher, student, valid, seg = _case(1)

  def per_set_total(s):
    kls = _per_segment(lambda ok: objective.zipf_softmap_kl(teacher, s, ok, 1.3, num_iters)[0], seg, valid)
    return jnp.stack(kls)

  def segment_total(s):
    targets = jax.lax.stop_gradient(so.segment_zipf_sinkhorn(teacher, valid, seg, M, 1.3, num_iters))
    return so.segment_softmap_kl(targets, s, valid, seg, M)

  np.testing.assert_allclose(segment_total(student), per_set_total(student), rtol=2e-5, atol=1e-6)
  assert float(segment_total(student)[2]) == 0.0  # empty segment
  weights = jnp.arange(1.0, M + 1.0)
  g_seg = jax.grad(lambda s: jnp.sum(weights * segment_total(s)))(student)
  g_set = jax.grad(lambda s: jnp.sum(weights * per_set_total(s)))(student)
  np.testing.assert_allclose(g_seg, g_set, rtol=2e-5, atol=1e-5)
  assert np.all(np.asarray(g_seg)[~np.asarray(valid)] == 0)


def test_clustering_targets_and_loss_match_per_set():
  teacher, student, valid, seg = _case(3)
  got = so.segment_clustering_targets(teacher, valid, seg, M, 3)
  want = sum(_per_segment(lambda ok: objective.clustering_targets(teacher, ok, 3), seg, valid))
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  loss = so.segment_clustering_loss(got, student, valid, seg, M)
  want = jnp.stack(_per_segment(lambda ok: objective.clustering_loss(got, student, ok), seg, valid))
  np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
  assert float(loss[2]) == 0.0


@pytest.mark.parametrize("normalization", ["softmap", "clustering"])
def test_packed_dos_loss_equals_dos_loss(normalization):
  """Two scenes x two views packed into one set give dos_loss's same and cross terms (and the total), with
  either normalization; extra empty view segments (view_valid False) change nothing."""
  r = np.random.default_rng(2)
  k, ns, nt = 8, 12, 20
  n_s = [7, 12, 1, 9]   # student rows per view (view 1 fills its capacity, view 2 has one point)
  n_t = [15, 20, 3, 18]
  student_cos = r.uniform(-1, 1, (2, 2, ns, k)).astype(np.float32)
  teacher_cos = r.uniform(-1, 1, (2, 2, nt, k)).astype(np.float32)
  s_valid = np.zeros((2, 2, ns), bool)
  t_index = np.full((2, 2, ns), nt, np.int32)
  c_index = np.full((2, 2, ns), nt, np.int32)
  c_valid = np.zeros((2, 2, ns), bool)
  for m in range(4):
    b, v = divmod(m, 2)
    s_valid[b, v, :n_s[m]] = True
    t_index[b, v, :n_s[m]] = r.choice(n_t[m], n_s[m], replace=n_s[m] > n_t[m])
    other = 2 * b + 1 - v
    c_valid[b, v, :n_s[m]] = r.random(n_s[m]) > 0.3
    c_index[b, v, :n_s[m]] = np.where(c_valid[b, v, :n_s[m]], r.integers(0, n_t[other], n_s[m]), nt)
  kw = dict(teacher_temp=0.05, student_temp=0.1, alpha=1.3, num_iters=3, cross_view=True,
            normalization=normalization)
  want, want_aux = objective.dos_loss(jnp.asarray(student_cos), jnp.asarray(teacher_cos), t_index, s_valid, c_index,
                                      c_valid, s_valid, **kw)
  # Pack: student rows of view m at [S_m, S_m + n_m), teacher rows at [T_m, T_m + n_t[m]).
  s_start, t_start = np.cumsum([0] + n_s[:-1]), np.cumsum([0] + n_t[:-1])
  cap_s, cap_t = sum(n_s) + 3, sum(n_t) + 2
  ps = np.zeros((1, cap_s, k), np.float32)
  pt = np.zeros((1, cap_t, k), np.float32)
  seg = np.full((1, cap_s), 4, np.int32)
  p_valid = np.zeros((1, cap_s), bool)
  p_t_index = np.full((1, cap_s), cap_t, np.int32)
  p_c_index = np.full((1, cap_s), cap_t, np.int32)
  p_c_valid = np.zeros((1, cap_s), bool)
  for m in range(4):
    b, v = divmod(m, 2)
    lo, n = s_start[m], n_s[m]
    other = 2 * b + 1 - v
    ps[0, lo:lo + n] = student_cos[b, v, :n]
    pt[0, t_start[m]:t_start[m] + n_t[m]] = teacher_cos[b, v, :n_t[m]]
    seg[0, lo:lo + n] = m
    p_valid[0, lo:lo + n] = True
    p_t_index[0, lo:lo + n] = t_start[m] + t_index[b, v, :n]
    ok = c_valid[b, v, :n]
    p_c_valid[0, lo:lo + n] = ok
    p_c_index[0, lo:lo + n] = np.where(ok, t_start[other] + c_index[b, v, :n], cap_t)
  seg[seg == 4] = 6  # padding: the segment count M = 6 (views 4 and 5 empty)
  view_valid = np.array([[True] * 4 + [False] * 2])
  got, aux = so.packed_dos_loss(jnp.asarray(ps), jnp.asarray(pt), p_t_index, p_valid, p_c_index, p_c_valid, p_valid,
                                seg, view_valid, **kw)
  assert float(aux["views"]) == 4.0 and np.all(np.asarray(aux["loss_per_view"])[0, 4:] == 0)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  np.testing.assert_allclose(aux["loss_same"], want_aux["loss_same"], rtol=2e-5)
  np.testing.assert_allclose(aux["loss_cross"], want_aux["loss_cross"], rtol=2e-5)
