"""Tests of the gather primitive with a hand-written backward pass (vs plain autodiff of the gather)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.models import blocks
from tests.models import test_ptv3

pytestmark = pytest.mark.system


def _points():
  return patches.stack_point_sets([test_ptv3.point_set(*test_ptv3.scene(90, 0), 128),
                                   test_ptv3.point_set(*test_ptv3.scene(40, 1), 128)])


def test_permute_rows_gradient_matches_scatter():
  points = _points()
  x = jax.random.normal(jax.random.key(0), (2, 128, 5))
  w = jax.random.normal(jax.random.key(2), (2, 128, 5))
  for o in range(len(structs.ORDERS)):
    order = jnp.asarray(points.stages[0].order[:, o])
    inverse = jnp.asarray(points.stages[0].inverse[:, o])
    out = blocks.permute_rows(x, order, inverse)
    np.testing.assert_array_equal(out, jnp.take_along_axis(x, order[..., None], axis=1))
    fast = jax.grad(lambda v: jnp.sum(blocks.permute_rows(v, order, inverse) * w))(x)
    plain = jax.grad(lambda v: jnp.sum(jnp.take_along_axis(v, order[..., None], axis=1) * w))(x)
    np.testing.assert_array_equal(fast, plain)


def _packed_sequence(rng, n=48, p=16, length=96):
  """A packed stage's sequence by the packer's rules: a long view (37 points, starting on a patch boundary, so its
  last patch is partial), a short view inside one patch, gaps elsewhere; slots shuffled."""
  views = [(0, 37), (1, 5)]
  starts = [0, 48]
  slots = rng.permutation(n)
  order = np.full(length, n, np.int32)
  segment = np.full(n, 2, np.int32)  # 2 = no view (padding slots)
  valid = np.zeros(n, bool)
  k = 0
  for (view, count), start in zip(views, starts):
    order[start:start + count] = slots[k:k + count]
    segment[slots[k:k + count]] = view
    valid[slots[k:k + count]] = True
    k += count
  inverse = np.full(n, length, np.int32)
  inverse[order[order < n]] = np.flatnonzero(order < n)
  return (jnp.asarray(order)[None], jnp.asarray(inverse)[None], jnp.asarray(segment)[None],
          jnp.asarray(valid)[None])


def test_fill_on_indices_equals_fill_on_features():
  """`fill_partial_patch_index` + `gather_to_patches` (the packed attention's path) give exactly what gathering
  the rows and then `fill_partial_patch` on the features gives, values and gradients: the same rows are selected
  and each input row's cotangent is the same sum of at most two terms."""
  rng = np.random.default_rng(0)
  p = 16
  order, inverse, segment, valid = _packed_sequence(rng, p=p)
  x = jax.random.normal(jax.random.key(0), (1, 48, 6))
  w = jax.random.normal(jax.random.key(1), (1, 96, 6))
  vs = blocks.take_rows(valid, order, False)
  ss = jnp.where(vs, blocks.take_rows(segment, order, -1), -1)

  def by_features(v):
    xs, vs_f, ss_f = blocks.fill_partial_patch(blocks.gather_one_to_one(v, order, inverse), vs, p, ss)
    return xs, vs_f, ss_f

  def by_index(v):
    order_f, vs_f, ss_f, repeat = blocks.fill_partial_patch_index(order, vs, ss, inverse, p)
    return blocks.gather_to_patches(v, order_f, inverse, repeat), vs_f, ss_f

  want, got = by_features(x), by_index(x)
  filled = np.asarray(want[1] & ~vs)
  assert filled.sum() == 48 - 37  # the long view's last patch: positions 37..47 filled, the short view none
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)
  grad = lambda f: jax.grad(lambda v: jnp.sum(f(v)[0] * w))(x)  # noqa: E731
  np.testing.assert_array_equal(grad(by_features), grad(by_index))
