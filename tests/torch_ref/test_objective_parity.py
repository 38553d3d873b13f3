"""Parity of dos_jax.objective with the independent PyTorch reference (dos_jax.torch_ref.objective).

Tolerances (issue 7): relative 1e-5 in float32 and 1e-10 in float64, where "relative" is max|jax - torch| /
max|torch| over the compared array (norm-relative, so entries far below the array's scale are not held to a
relative bound they cannot meet in float32).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conftest

torch = conftest.require_torch()

from dos_jax import objective  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import objective as torch_objective  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.system

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _set(dtype, seed=0, n=48, k=16):
  rng = np.random.default_rng(seed)
  teacher = (rng.uniform(-1, 1, (2, n, k)) / 0.05).astype(dtype)
  student = (rng.uniform(-1, 1, (2, n, k)) / 0.1).astype(dtype)
  valid = rng.random((2, n)) < 0.8
  return teacher, student, valid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_components_parity(dtype):
  teacher, student, valid = _set(dtype)
  with jax.enable_x64(dtype == np.float64):
    j = jax.jit(lambda t, s, v: (objective.zipf_sinkhorn(t, v, 1.3, 3), objective.softmap(s, v),
                                 objective.clustering_targets(t, v, 3)))(teacher, student, valid)
    j = [np.asarray(x) for x in j]
    j_kl = np.asarray(jax.jit(objective.softmap_kl)(j[0], student, valid))
    j_ce = np.asarray(jax.jit(objective.clustering_loss)(j[2], student, valid))
    j_w = np.asarray(objective.zipf_prior(16, 1.3))
  t, s, v = map(torch.from_numpy, (teacher, student, valid))
  tt = torch_objective.zipf_sinkhorn(t, v, 1.3, 3)
  tc = torch_objective.clustering_targets(t, v, 3)
  pairs = {
      "zipf_prior": (j_w, torch_objective.zipf_prior(16, 1.3, t.dtype)),
      "zipf_sinkhorn": (j[0], tt),
      "softmap": (j[1], torch_objective.softmap(s, v)),
      "softmap_kl": (j_kl, torch_objective.softmap_kl(tt, s, v)),
      "clustering_targets": (j[2], tc),
      "clustering_loss": (j_ce, torch_objective.clustering_loss(tc, s, v)),
  }
  for name, (a, b) in pairs.items():
    assert _rel(a, b.numpy()) <= TOLERANCE[dtype], (name, _rel(a, b.numpy()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization", ["softmap", "clustering"])
def test_dos_loss_and_gradient_parity(dtype, normalization):
  rng = np.random.default_rng(1)
  b, ns, nt, k = 2, 10, 12, 8
  student = rng.uniform(-1, 1, (b, 2, ns, k)).astype(dtype)
  teacher = rng.uniform(-1, 1, (b, 2, nt, k)).astype(dtype)
  t_ok = rng.random((b, 2, ns)) < 0.8
  t_idx = np.where(t_ok, rng.integers(0, nt, (b, 2, ns)), nt).astype(np.int32)
  c_ok = rng.random((b, 2, ns)) < 0.6
  c_idx = np.where(c_ok, rng.integers(0, nt, (b, 2, ns)), nt).astype(np.int32)
  s_ok = t_ok | c_ok
  kw = dict(teacher_temp=0.05, student_temp=0.1, alpha=1.3, num_iters=3, normalization=normalization)
  with jax.enable_x64(dtype == np.float64):
    fn = jax.jit(jax.value_and_grad(lambda s, *a: objective.dos_loss(s, *a, **kw)[0]))
    j_loss, j_grad = fn(student, teacher, t_idx, t_ok, c_idx, c_ok, s_ok)
    j_loss, j_grad = np.asarray(j_loss), np.asarray(j_grad)
  ts = torch.from_numpy(student).requires_grad_(True)
  t_loss, _ = torch_objective.dos_loss(ts, *map(torch.from_numpy, (teacher, t_idx, t_ok, c_idx, c_ok, s_ok)), **kw)
  t_loss.backward()
  assert _rel(j_loss, t_loss.detach().numpy()) <= TOLERANCE[dtype]
  assert _rel(j_grad, ts.grad.numpy()) <= TOLERANCE[dtype]
