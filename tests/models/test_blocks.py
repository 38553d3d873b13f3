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


def test_neighbor_conv_backward_equals_autodiff_of_the_gather():
  """`neighbor_conv`'s hand-written backward (the flipped-kernel convolution of dy, a gather) against plain
  autodiff of gather + matmul (a scatter-add), on the symmetric tables the batching builds, single-view and
  packed, at every stage. Both sum the same products in another order: per entry the error is at most
  ~n eps x (the same sum over absolute values), n = the terms per entry (27 taps x channels), float32 eps."""
  from tests.batching import test_packing
  packed = test_packing._packed()[2]
  sets = [(s.neighbors, s.valid) for s in _points().stages]
  sets += [(s.neighbors[None], s.valid[None]) for s in packed.stages]
  plain = lambda x, nbr, w: blocks._neighbor_conv(x, nbr, w)
  eps = float(np.finfo(np.float32).eps)
  for b, (nbr, valid) in enumerate(sets):
    nbr = jnp.asarray(nbr)
    assert all(structs.neighbors_symmetric(t) for t in np.asarray(nbr))
    cin, cout = 6, 5
    x = jax.random.normal(jax.random.key(b), nbr.shape[:2] + (cin,)) * jnp.asarray(valid)[..., None]
    w = jax.random.normal(jax.random.key(100 + b), (27, cin, cout))
    dy = jax.random.normal(jax.random.key(200 + b), nbr.shape[:2] + (cout,))
    y, vjp = jax.vjp(lambda x_, w_: blocks.neighbor_conv(x_, nbr, w_), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x_, w_: plain(x_, nbr, w_), x, w)
    np.testing.assert_array_equal(y, y_ref)  # the forward is the same computation
    (dx, dw), (dx_ref, dw_ref) = vjp(dy), vjp_ref(dy)
    # Bounds: the same sums over absolute values (dx: the flipped convolution of |dy|; dw: |gathered x|^T |dy|).
    dx_abs = plain(jnp.abs(dy), nbr, jnp.abs(jnp.swapaxes(w[::-1], 1, 2)))
    np.testing.assert_array_less(jnp.abs(dx - dx_ref), 2 * 27 * cout * eps * dx_abs + 1e-30)
    g = blocks.gather_rows(jnp.abs(x), nbr).reshape(nbr.shape[:2] + (27 * cin,))
    dw_abs = jnp.einsum("bni,bno->io", g, jnp.abs(dy)).reshape(w.shape)
    rows = nbr.shape[0] * nbr.shape[1]
    np.testing.assert_array_less(jnp.abs(dw - dw_ref), 2 * rows * eps * dw_abs + 1e-30)
    assert float(jnp.abs(dx).max()) > 0.1  # not vacuous: real gradients flow
