"""Tests of the prototype collapse diagnostics against direct NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax.eval import diagnostics


def _np_diagnostics(logits, targets, valid):
  logits, targets, valid = (x.reshape((-1,) + x.shape[-s:]) for x, s in ((logits, 2), (targets, 2), (valid, 1)))
  k = logits.shape[-1]
  hist = np.zeros(k)
  claimed = total = 0
  entropies = []
  for s in range(logits.shape[0]):
    idx = np.flatnonzero(valid[s])
    for i in idx:
      hist[np.argmax(logits[s, i])] += 1
    if len(idx) == 0:
      continue
    winners = {idx[np.argmax(targets[s, idx, j])] for j in range(k)}
    claimed += len(winners)
    total += len(idx)
    if len(idx) > 1:
      for j in range(k):
        col = targets[s, idx, j] / targets[s, idx, j].sum()
        nz = col[col > 0]
        entropies.append(-(nz * np.log(nz)).sum() / np.log(len(idx)))
  p = hist / hist.sum()
  h = -(p[p > 0] * np.log(p[p > 0])).sum()
  return dict(usage_entropy=h, effective_prototypes=np.exp(h), used_prototypes=(hist > 0).sum(),
              argmax_point_fraction=claimed / total, softmap_entropy=np.mean(entropies))


def test_matches_numpy_on_random_batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 2, 9, 5)).astype(np.float32)
  targets = rng.random((2, 2, 9, 5)).astype(np.float32)
  valid = rng.random((2, 2, 9)) < 0.7
  valid[1, 1] = False  # an empty set is skipped
  targets[~valid] = 0.0
  got = jax.jit(diagnostics.prototype_diagnostics)(logits, targets, valid)
  want = _np_diagnostics(logits, targets, valid)
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_allclose(float(got[key]), want[key], rtol=1e-5, err_msg=key)


@pytest.mark.system
def test_extremes():
  n, k = 8, 4
  valid = np.ones(n, bool)
  collapsed = np.zeros((n, k), np.float32)
  collapsed[:, 2] = 5.0  # every point prefers prototype 2
  uniform_targets = np.full((n, k), 1.0 / n, np.float32)
  d = diagnostics.prototype_diagnostics(jnp.asarray(collapsed), jnp.asarray(uniform_targets), jnp.asarray(valid))
  np.testing.assert_allclose(float(d["effective_prototypes"]), 1.0)
  np.testing.assert_allclose(float(d["used_prototypes"]), 1.0)
  np.testing.assert_allclose(float(d["softmap_entropy"]), 1.0, rtol=1e-6)
  balanced = np.eye(k, dtype=np.float32)[np.arange(n) % k] * 5.0
  one_hot_targets = np.zeros((n, k), np.float32)
  one_hot_targets[[0, 3, 5, 6], np.arange(k)] = 1.0  # four distinct winning points
  d = diagnostics.prototype_diagnostics(jnp.asarray(balanced), jnp.asarray(one_hot_targets), jnp.asarray(valid))
  np.testing.assert_allclose(float(d["effective_prototypes"]), k, rtol=1e-6)
  np.testing.assert_allclose(float(d["softmap_entropy"]), 0.0, atol=1e-7)
  np.testing.assert_allclose(float(d["argmax_point_fraction"]), 4 / n)
