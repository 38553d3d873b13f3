"""Tests of dos_jax.objective against independent NumPy/SciPy float64 implementations of the DESIGN.md algorithm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dos_jax import objective


# ----------------------------------------------------------------------------------------------- NumPy references
def np_zipf(k, alpha):
  w = np.arange(1, k + 1, dtype=np.float64) ** -alpha
  return w / w.sum()


def np_zipf_sinkhorn(scores, valid, alpha, num_iters):
  """The DESIGN.md schedule written literally on a materialised log Q (float64, SciPy logsumexp)."""
  s = np.asarray(scores, np.float64)[valid]
  n, k = s.shape
  log_q = s - special.logsumexp(s)
  for _ in range(num_iters):
    log_q = log_q - special.logsumexp(log_q, axis=1, keepdims=True) - np.log(n)
    log_q = log_q - special.logsumexp(log_q, axis=0, keepdims=True) + np.log(np_zipf(k, alpha))
  log_q = log_q - special.logsumexp(log_q, axis=0, keepdims=True)
  out = np.zeros(scores.shape, np.float64)
  out[valid] = np.exp(log_q)
  return out


def np_uniform_sinkhorn_linear(scores, valid, num_iters):
  """Classic linear-domain Sinkhorn-Knopp (rows 1/N, columns 1/K) with scaling vectors, then columns to 1."""
  kern = np.exp(np.asarray(scores, np.float64)[valid])
  n, k = kern.shape
  a, b = np.ones(n), np.ones(k)
  for _ in range(num_iters):
    a = (1.0 / n) / (kern @ b)
    b = (1.0 / k) / (kern.T @ a)
  q = a[:, None] * kern * b[None, :]
  q = q / q.sum(0, keepdims=True)
  out = np.zeros(scores.shape)
  out[valid] = q
  return out


def np_softmap(scores, valid):
  out = np.zeros(scores.shape)
  out[valid] = special.softmax(np.asarray(scores, np.float64)[valid], axis=0)
  return out


def np_kl(target, student_scores, valid):
  t = np.asarray(target, np.float64)[valid]
  p = special.softmax(np.asarray(student_scores, np.float64)[valid], axis=0)
  terms = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0) / p), 0.0)
  return terms.sum() / t.shape[1]


def np_clustering_targets(scores, valid, num_iters):
  s = np.asarray(scores, np.float64)[valid]
  n, k = s.shape
  q = special.softmax(s.ravel()).reshape(n, k)
  for _ in range(num_iters):
    q = q / q.sum(0, keepdims=True) / k
    q = q / q.sum(1, keepdims=True) / n
  q = q / q.sum(1, keepdims=True)
  out = np.zeros(scores.shape)
  out[valid] = q
  return out


def _case(n=24, k=8, seed=0, scale=1 / 0.07, frac=0.75):
  rng = np.random.default_rng(seed)
  scores = rng.uniform(-1, 1, (n, k)) * scale
  valid = rng.random(n) < frac
  valid[:2] = True
  return scores, valid


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


# Jitted once per shape: eager calls would compile every primitive (and each fori_loop/cond body) separately.
_zipf_sinkhorn = jax.jit(objective.zipf_sinkhorn, static_argnums=3, static_argnames="num_iters")
_softmap = jax.jit(objective.softmap)
_softmap_kl = jax.jit(objective.softmap_kl)
_clustering_targets = jax.jit(objective.clustering_targets, static_argnums=2)
_clustering_loss = jax.jit(objective.clustering_loss)


# -------------------------------------------------------------------------------------------------------- tests
def test_zipf_prior():
  w = np.asarray(objective.zipf_prior(16, 1.3))
  np.testing.assert_allclose(w, np_zipf(16, 1.3), rtol=1e-6)
  np.testing.assert_allclose(w[0] / w[1], 2 ** 1.3, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(objective.zipf_prior(5, 0.0)), np.full(5, 0.2), rtol=1e-7)
  assert np.all(np.isfinite(np.asarray(objective.zipf_prior(1024, 3.0))))


@pytest.mark.parametrize("alpha,num_iters", [(0.0, 3), (1.3, 0), (1.3, 1), (1.6, 3), (3.0, 5)])
def test_zipf_sinkhorn_matches_numpy_float64(x64, alpha, num_iters):
  scores, valid = _case(seed=int(alpha * 10) + num_iters)
  got = _zipf_sinkhorn(jnp.asarray(scores), jnp.asarray(valid), alpha, num_iters)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), np_zipf_sinkhorn(scores, valid, alpha, num_iters), rtol=1e-6, atol=1e-12)


def test_zipf_sinkhorn_float32_close_to_float64():
  scores, valid = _case(n=64, k=32, seed=3)
  got = _zipf_sinkhorn(jnp.asarray(scores, jnp.float32), jnp.asarray(valid), 1.3, 3)
  assert got.dtype == jnp.float32
  want = np_zipf_sinkhorn(scores.astype(np.float32), valid, 1.3, 3)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-7)


def test_marginals(x64):
  scores, valid = _case(n=40, k=6, scale=3.0, seed=5)
  alpha = 1.3
  out = np.asarray(_zipf_sinkhorn(jnp.asarray(scores), jnp.asarray(valid), alpha, 3))
  # Every column is a distribution over the valid points.
  np.testing.assert_allclose(out.sum(0), np.ones(6), rtol=1e-12)
  # Near convergence the pre-normalisation Q = T * w has row sums 1/N_valid and column sums w_k: the Zipf prior
  # sets the prototypes' relative mass.
  out = np.asarray(_zipf_sinkhorn(jnp.asarray(scores), jnp.asarray(valid), alpha, 300))
  q = out * np_zipf(6, alpha)[None, :]
  np.testing.assert_allclose(q[valid].sum(1), np.full(valid.sum(), 1.0 / valid.sum()), rtol=1e-8)
  np.testing.assert_allclose(q.sum(0), np_zipf(6, alpha), rtol=1e-10)


def test_padded_rows_exactly_zero_and_ignored():
  scores, valid = _case(seed=7)
  garbage = scores.copy()
  garbage[~valid] = 1e4  # huge scores in padding must not leak into the valid rows
  a = np.asarray(_zipf_sinkhorn(jnp.asarray(scores, jnp.float32), jnp.asarray(valid), 1.3))
  b = np.asarray(_zipf_sinkhorn(jnp.asarray(garbage, jnp.float32), jnp.asarray(valid), 1.3))
  assert np.all(a[~valid] == 0.0) and np.all(b[~valid] == 0.0)
  # Equal up to float32 rounding (huge padded scores only change which max-shift the log-sum-exps use).
  np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.3, 3.0])
def test_finite_for_extreme_scores(alpha):
  rng = np.random.default_rng(11)
  scores = rng.uniform(-100, 100, (64, 32)).astype(np.float32)
  scores[:, 5] = -100.0  # a prototype every point rejects: its column must still be a distribution
  scores[3] = 100.0
  valid = rng.random(64) < 0.8
  out = np.asarray(_zipf_sinkhorn(jnp.asarray(scores), jnp.asarray(valid), alpha, 3))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out.sum(0), np.ones(32), rtol=1e-5)
  with jax.enable_x64(True):
    want = np_zipf_sinkhorn(scores, valid, alpha, 3)
  np.testing.assert_allclose(out, want, atol=1e-5)


def test_empty_set_gives_zeros_and_zero_loss():
  scores = jnp.ones((5, 4))
  valid = jnp.zeros(5, bool)
  assert np.all(np.asarray(_zipf_sinkhorn(scores, valid, 1.3)) == 0)
  assert float(_softmap_kl(jnp.zeros((5, 4)), scores, valid)) == 0.0
  grad = jax.grad(lambda s: _softmap_kl(jnp.zeros((5, 4)), s, valid))(scores)
  assert np.all(np.asarray(grad) == 0)


def test_alpha_zero_is_uniform_sinkhorn(x64):
  scores, valid = _case(n=30, k=7, scale=4.0, seed=13)
  got = np.asarray(_zipf_sinkhorn(jnp.asarray(scores), jnp.asarray(valid), 0.0, 4))
  np.testing.assert_allclose(got, np_uniform_sinkhorn_linear(scores, valid, 4), rtol=1e-9, atol=1e-14)


def test_softmap(x64):
  scores, valid = _case(seed=17)
  got = np.asarray(_softmap(jnp.asarray(scores), jnp.asarray(valid)))
  np.testing.assert_allclose(got.sum(0), np.ones(scores.shape[1]), rtol=1e-12)
  assert np.all(got[~valid] == 0.0)
  np.testing.assert_allclose(got, np_softmap(scores, valid), rtol=1e-10, atol=1e-15)


def test_softmap_kl_matches_numpy(x64):
  scores, valid = _case(seed=19)
  student, _ = _case(seed=20)
  target = np_zipf_sinkhorn(scores, valid, 1.3, 3)
  target[np.flatnonzero(valid)[0], 2] = 0.0  # a zero entry exercises 0 log 0 = 0
  target[:, 2] /= target[:, 2].sum()
  got = float(_softmap_kl(jnp.asarray(target), jnp.asarray(student), jnp.asarray(valid)))
  np.testing.assert_allclose(got, np_kl(target, student, valid), rtol=1e-10)
  assert got > 0.0


def test_softmap_kl_zero_when_student_equals_target():
  scores, valid = _case(seed=23)
  scores, valid = jnp.asarray(scores, jnp.float32), jnp.asarray(valid)
  target = _softmap(scores, valid)
  assert abs(float(_softmap_kl(target, scores, valid))) < 1e-6


def test_clustering_targets_and_loss(x64):
  scores, valid = _case(seed=29, scale=3.0)
  student, _ = _case(seed=30)
  got = np.asarray(_clustering_targets(jnp.asarray(scores), jnp.asarray(valid), 3))
  want = np_clustering_targets(scores, valid, 3)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
  np.testing.assert_allclose(got[valid].sum(1), 1.0, rtol=1e-12)
  assert np.all(got[~valid] == 0)
  loss = float(_clustering_loss(jnp.asarray(want), jnp.asarray(student), jnp.asarray(valid)))
  log_p = special.log_softmax(student[valid], axis=1)
  np.testing.assert_allclose(loss, -(want[valid] * log_p).sum(1).mean(), rtol=1e-10)


@pytest.mark.system
def test_batched_and_vmap_equal_loop():
  rng = np.random.default_rng(31)
  scores = jnp.asarray(rng.normal(size=(3, 16, 8)) * 5, jnp.float32)
  valid = jnp.asarray(rng.random((3, 16)) < 0.7)
  loop = np.stack([np.asarray(_zipf_sinkhorn(scores[b], valid[b], 1.3)) for b in range(3)])
  vmapped = jax.jit(jax.vmap(functools.partial(objective.zipf_sinkhorn, alpha=1.3)))(scores, valid)
  native = _zipf_sinkhorn(scores, valid, 1.3)
  np.testing.assert_allclose(np.asarray(vmapped), loop, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(np.asarray(native), loop, rtol=1e-5, atol=1e-8)
  kl_loop = [float(_softmap_kl(native[b], scores[b] * 0.5, valid[b])) for b in range(3)]
  kl_vmap = jax.jit(jax.vmap(objective.softmap_kl))(native, scores * 0.5, valid)
  np.testing.assert_allclose(np.asarray(kl_vmap), kl_loop, rtol=1e-5)


def test_config_errors():
  with pytest.raises(ValueError, match="sinkhorn_iters"):
    _zipf_sinkhorn(jnp.zeros((4, 3)), jnp.ones(4, bool), 1.0, -1)
  cos = jnp.zeros((1, 1, 4, 3))
  idx, ok = jnp.zeros((1, 1, 4), jnp.int32), jnp.ones((1, 1, 4), bool)
  with pytest.raises(ValueError, match="num_views"):
    objective.dos_loss(cos, cos, idx, ok, idx, ok, ok, teacher_temp=0.07, student_temp=0.1, alpha=1.3)
  with pytest.raises(ValueError, match="normalization"):
    objective.dos_loss(cos, cos, idx, ok, idx, ok, ok, teacher_temp=0.07, student_temp=0.1, alpha=1.3,
                       cross_view=False, normalization="bogus")


# ----------------------------------------------------------------------------------------------------- dos_loss
def _loss_batch(seed, b=2, ns=6, nt=8, k=4, dtype=np.float64):
  rng = np.random.default_rng(seed)
  student = rng.uniform(-1, 1, (b, 2, ns, k)).astype(dtype)
  teacher = rng.uniform(-1, 1, (b, 2, nt, k)).astype(dtype)
  target_index = rng.integers(0, nt, (b, 2, ns)).astype(np.int32)
  target_valid = rng.random((b, 2, ns)) < 0.8
  target_index[~target_valid] = nt  # sentinel
  cross_index = rng.integers(0, nt, (b, 2, ns)).astype(np.int32)
  cross_valid = rng.random((b, 2, ns)) < 0.6
  cross_index[~cross_valid] = nt
  student_valid = target_valid | (rng.random((b, 2, ns)) < 0.5)
  return student, teacher, target_index, target_valid, cross_index, cross_valid, student_valid


def np_dos_loss(student, teacher, target_index, target_valid, cross_index, cross_valid, student_valid, tt, ts,
                alpha, num_iters, cross_view, normalization="softmap"):
  b, v, _, k = student.shape
  teacher = np.concatenate([teacher, np.zeros((b, v, 1, k))], axis=2) / tt
  same, cross = [], []
  for i in range(b):
    for j in range(v):
      for out, src, index, ok in ((same, j, target_index, target_valid), (cross, 1 - j, cross_index, cross_valid)):
        valid = ok[i, j] & student_valid[i, j]
        logits = teacher[i, src][index[i, j]]
        if not valid.any():
          out.append(0.0)
        elif normalization == "softmap":
          out.append(np_kl(np_zipf_sinkhorn(logits, valid, alpha, num_iters), student[i, j] / ts, valid))
        else:
          targets = np_clustering_targets(logits, valid, num_iters)[valid]
          out.append(-(targets * special.log_softmax(student[i, j][valid] / ts, axis=1)).sum(1).mean())
  return 0.5 * (np.mean(same) + np.mean(cross)) if cross_view else np.mean(same)


@pytest.mark.parametrize("cross_view,normalization", [(True, "softmap"), (False, "softmap"), (True, "clustering")])
def test_dos_loss_matches_numpy(x64, cross_view, normalization):
  args = _loss_batch(37)
  kw = dict(teacher_temp=0.07, student_temp=0.1, alpha=1.3, num_iters=3)
  loss_fn = jax.jit(functools.partial(objective.dos_loss, cross_view=cross_view, normalization=normalization, **kw))
  loss, aux = loss_fn(*map(jnp.asarray, args))
  want = np_dos_loss(*args, 0.07, 0.1, 1.3, 3, cross_view, normalization)
  np.testing.assert_allclose(float(loss), want, rtol=1e-9)
  assert aux["targets"].shape == args[0].shape and aux["valid"].shape == args[0].shape[:3]
  if cross_view:
    np.testing.assert_allclose(float(loss), 0.5 * (float(aux["loss_same"]) + float(aux["loss_cross"])), rtol=1e-12)


def test_dos_loss_gradient_matches_finite_differences(x64):
  args = [jnp.asarray(a) for a in _loss_batch(41, b=1, ns=5, nt=6, k=3)]
  kw = dict(teacher_temp=0.07, student_temp=0.1, alpha=1.3)

  def loss_of_student(student):
    return objective.dos_loss(student, *args[1:], **kw)[0]

  grad = np.asarray(jax.jit(jax.grad(loss_of_student))(args[0]))
  assert np.abs(grad).max() > 1e-3
  # The teacher carries no gradient.
  teacher_grad = jax.jit(jax.grad(lambda t: objective.dos_loss(args[0], t, *args[2:], **kw)[0]))(args[1])
  assert np.all(np.asarray(teacher_grad) == 0)
  rng = np.random.default_rng(0)
  f = jax.jit(loss_of_student)
  eps = 1e-6
  for _ in range(3):
    direction = rng.normal(size=grad.shape)
    fd = (float(f(args[0] + eps * direction)) - float(f(args[0] - eps * direction))) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------- sharded points
def _mesh():
  if jax.device_count() < 8:
    pytest.skip("needs 8 host devices (tests/conftest.py sets XLA_FLAGS)")
  return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("points",))


@pytest.mark.system
def test_sharded_points_equal_single_device():
  mesh = _mesh()
  P = jax.sharding.PartitionSpec
  rng = np.random.default_rng(43)
  scores = jnp.asarray(rng.uniform(-1, 1, (2, 32, 16)) / 0.07, jnp.float32)
  student = jnp.asarray(rng.uniform(-1, 1, (2, 32, 16)) / 0.1, jnp.float32)
  valid = jnp.asarray(rng.random((2, 32)) < 0.7)
  valid = valid.at[:, 4:8].set(False)  # one device holds only padding

  def compute(scores, student, valid, axis_name=None):
    t = objective.zipf_sinkhorn(scores, valid, 1.3, 3, axis_name=axis_name)
    c = objective.clustering_targets(scores, valid, 3, axis_name=axis_name)
    p = objective.softmap(student, valid, axis_name=axis_name)
    kl = objective.softmap_kl(t, student, valid, axis_name=axis_name)
    ce = objective.clustering_loss(c, student, valid, axis_name=axis_name)
    return t, c, p, kl, ce

  pts, rep = P(None, "points", None), P()
  sharded = jax.jit(jax.shard_map(functools.partial(compute, axis_name="points"), mesh=mesh,
                                  in_specs=(pts, pts, P(None, "points")),
                                  out_specs=(pts, pts, pts, rep, rep)))(scores, student, valid)
  single = jax.jit(compute)(scores, student, valid)
  for got, want in zip(sharded, single):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-8)


@pytest.mark.system
def test_sharded_dos_loss_equals_single_device():
  mesh = _mesh()
  P = jax.sharding.PartitionSpec
  student, teacher, t_idx, t_ok, c_idx, c_ok, s_ok = map(jnp.asarray, _loss_batch(47, ns=16, nt=12, k=8,
                                                                                  dtype=np.float32))
  kw = dict(teacher_temp=0.05, student_temp=0.1, alpha=1.3)
  pts4, pts3 = P(None, None, "points", None), P(None, None, "points")
  fn = jax.shard_map(functools.partial(lambda *a, **k: objective.dos_loss(*a, **k)[0], axis_name="points", **kw),
                     mesh=mesh, in_specs=(pts4, P(), pts3, pts3, pts3, pts3, pts3), out_specs=P())
  got = jax.jit(fn)(student, teacher, t_idx, t_ok, c_idx, c_ok, s_ok)
  want = jax.jit(functools.partial(objective.dos_loss, **kw))(student, teacher, t_idx, t_ok, c_idx, c_ok, s_ok)[0]
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


@pytest.mark.system
@pytest.mark.parametrize("extreme", [False, True])
def test_fused_zipf_softmap_kl_equals_composition(extreme):
  rng = np.random.default_rng(53)
  scale = 100.0 if extreme else 1 / 0.07  # extreme: |scores| up to 100 exercises the exact-shift fallback
  teacher = jnp.asarray(rng.uniform(-1, 1, (2, 20, 8)) * scale, jnp.float32)
  student = jnp.asarray(rng.uniform(-1, 1, (2, 20, 8)) / 0.1, jnp.float32)
  valid = jnp.asarray(rng.random((2, 20)) < 0.7).at[1].set(False)  # set 1 is empty: KL 0, gradient 0

  def composed(s):
    targets = jax.lax.stop_gradient(objective.zipf_sinkhorn(teacher, valid, 1.3, 3))
    return jnp.sum(objective.softmap_kl(targets, s, valid) * jnp.array([1.0, 2.0]))

  def fused(s):
    return jnp.sum(objective.zipf_softmap_kl(teacher, s, valid, 1.3, 3)[0] * jnp.array([1.0, 2.0]))

  (v1, g1), (v2, g2) = (jax.jit(jax.value_and_grad(f))(student) for f in (composed, fused))
  np.testing.assert_allclose(float(v2), float(v1), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g2), np.asarray(g1), rtol=1e-4, atol=1e-7)
  assert np.all(np.asarray(g2)[1] == 0) and np.all(np.asarray(g2)[0][~np.asarray(valid[0])] == 0)
  targets = objective.zipf_softmap_kl(teacher, student, valid, 1.3, 3)[1]
  np.testing.assert_allclose(np.asarray(targets), np.asarray(objective.zipf_sinkhorn(teacher, valid, 1.3, 3)),
                             rtol=1e-5, atol=1e-9)
