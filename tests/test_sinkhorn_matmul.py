"""dos_jax.sinkhorn_matmul: Zipf-Sinkhorn's iterations as matrix products give the log domain's targets.

Both forms are checked against the log-domain schedule run in float64 (an independent computation of the same
potentials at 2^29 times float32's precision). Bound: each potential is the log of a sum of at most L = max(N, K)
positive terms (relative error <= L eps, so <= (L + 4) eps in the log), the schedule takes 2 num_iters such steps
and their errors add; every addition of values of magnitude up to X = 2 B + log L + α log K (the logits' range,
the counts, the prior) rounds by X eps, a few per step. The targets are exp of scores + u + v, so
|ΔT| <= T (2 num_iters (L + 4 + 3 X) + |log T|) eps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import objective
from dos_jax import sinkhorn_matmul

M = 4  # segments: 2 stays empty, 3 has one row, 5 is out of range (dropped rows)
EPS = np.finfo(np.float32).eps


def _case(seed, n=160, k=48, temp=0.04):
  r = np.random.default_rng(seed)
  seg = r.choice([0, 1, 3, 5], size=n, p=[0.45, 0.45, 0.02, 0.08]).astype(np.int32)
  seg[seg == 3] = 5
  seg[7] = 3
  valid = r.random(n) > 0.1
  valid[7] = True
  cos = np.clip(r.normal(size=(n, k)) * 0.4, -1, 1).astype(np.float32)
  cos[3] = 1.0    # a row at the bound, another at minus the bound: the full range 2 / temp inside one row
  cos[3, 0] = -1.0
  scores = cos / np.float32(temp)
  scores[~valid] = np.nan  # garbage at invalid rows must not reach a valid output
  return jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(seg)


def _float64_targets(scores, valid, seg, alpha, num_iters):
  with jax.enable_x64(True):
    return np.asarray(objective.segment_zipf_sinkhorn(jnp.asarray(scores, jnp.float64), valid, seg, M, alpha,
                                                      num_iters))


def _tolerance(want, bound, n, k, alpha, num_iters):
  x = 2 * bound + np.log(max(n, k)) + alpha * np.log(k)
  log_t = np.log(np.maximum(want, np.finfo(np.float64).tiny))
  return want * (2 * num_iters * (max(n, k) + 4 + 3 * x) + np.abs(log_t)) * EPS + np.finfo(np.float32).tiny


@pytest.mark.parametrize("alpha, num_iters", [(0.0, 1), (1.3, 3), (3.0, 5)])
def test_matmul_targets_equal_the_log_domain_to_float32_rounding(alpha, num_iters):
  scores, valid, seg = _case(int(alpha * 10) + num_iters)
  n, k = scores.shape
  bound = 1 / 0.04
  assert sinkhorn_matmul.usable(bound, n, k)
  want = _float64_targets(scores, valid, seg, alpha, num_iters)
  matmul = np.asarray(objective.segment_zipf_sinkhorn(scores, valid, seg, M, alpha, num_iters, logit_bound=bound))
  log = np.asarray(objective.segment_zipf_sinkhorn(scores, valid, seg, M, alpha, num_iters))
  ok = np.asarray(valid) & (np.asarray(seg) < M)
  tol = _tolerance(want, bound, n, k, alpha, num_iters)
  for got in (matmul, log):
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got - want) <= tol), np.max(np.abs(got - want) / tol)
    assert np.all(got[~ok] == 0)
  # Columns of each non-empty segment sum to 1; the one-row segment's row is 1 everywhere.
  one = _tolerance(np.ones(k), bound, n, k, alpha, num_iters)
  for m in (0, 1, 3):
    np.testing.assert_allclose(matmul[np.asarray(seg) == m].sum(0), 1.0, rtol=one.max() + n * EPS)
  np.testing.assert_allclose(matmul[7], 1.0, rtol=one.max())


def test_usable_is_the_float32_range_condition():
  # 2 B + log L <= log(eps / tiny) = 71.4: τ_T = 0.04 (B = 25) holds for any realistic pack, 0.02 (B = 50) not.
  assert sinkhorn_matmul.usable(25.0, 43784, 1024) and sinkhorn_matmul.usable(1 / 0.07, 10 ** 6, 1024)
  assert not sinkhorn_matmul.usable(50.0, 100, 1024)
  limit = np.log(EPS / np.finfo(np.float32).tiny)
  assert sinkhorn_matmul.usable((limit - np.log(1024)) / 2 - 1e-3, 10, 1024)
  assert not sinkhorn_matmul.usable((limit - np.log(1024)) / 2 + 1e-3, 10, 1024)


def test_out_of_range_bound_falls_back_to_the_log_domain():
  scores, valid, seg = _case(5, temp=0.01)  # |scores| up to 100: exp(-200) would underflow in E
  got = objective.segment_zipf_sinkhorn(scores, valid, seg, M, 1.3, 3, logit_bound=100.0)
  want = objective.segment_zipf_sinkhorn(scores, valid, seg, M, 1.3, 3)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.system
def test_sharded_rows_equal_single_device():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 host devices (tests/conftest.py sets XLA_FLAGS)")
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("points",))
  P = jax.sharding.PartitionSpec
  scores, valid, seg = _case(9, n=160)
  fn = functools.partial(objective.segment_zipf_sinkhorn, num_segments=M, alpha=1.3, num_iters=3, logit_bound=25.0)
  sharded = jax.jit(jax.shard_map(lambda s, v, g: fn(s, v, g, axis_name="points"), mesh=mesh,
                                  in_specs=(P("points", None), P("points"), P("points")),
                                  out_specs=P("points", None)))(scores, valid, seg)
  single = jax.jit(fn)(scores, valid, seg)
  # The products' sums over rows are split into 8 partial sums then psum'd: a different order of the same
  # additions, within the bound above.
  tol = _tolerance(np.asarray(single), 25.0, 160, scores.shape[1], 1.3, 3)
  assert np.all(np.abs(np.asarray(sharded) - np.asarray(single)) <= tol)
