"""Tests of the gather primitives with hand-written backward passes (vs plain autodiff of the gathers)."""

import jax
import jax.numpy as jnp
import numpy as np

from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.models import blocks
from tests.models import test_ptv3


def _points():
  return patches.stack_point_sets([test_ptv3.point_set(*test_ptv3.scene(90, 0), 128),
                                   test_ptv3.point_set(*test_ptv3.scene(40, 1), 128)])


def test_neighbor_offsets_are_antisymmetric():
  # The gather-based backward of gather_neighbors relies on offset 26 - k being the opposite of offset k.
  np.testing.assert_array_equal(structs.NEIGHBOR_OFFSETS[::-1], -structs.NEIGHBOR_OFFSETS)


@jax.jit
def _neighbor_grads(x, w, nb):
  fast = jax.grad(lambda v: jnp.sum(blocks.gather_neighbors(v, nb) * w))(x)
  plain = jax.grad(lambda v: jnp.sum(blocks.gather_rows(v, nb) * w))(x)
  return fast, plain


def test_gather_neighbors_gradient_matches_scatter():
  points = _points()
  x = jax.random.normal(jax.random.key(0), (2, 128, 5))
  w = jax.random.normal(jax.random.key(1), (2, 128, 27, 5))
  for s in range(len(points.stages)):
    nb = jnp.asarray(points.stages[s].neighbors)
    n = nb.shape[1]
    xs, ws = x[:, :n], w[:, :n]
    fast, plain = _neighbor_grads(xs, ws, nb)
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    assert np.abs(plain).max() > 0
  # A broken symmetry (two entries pointing at one point) must fall back to the exact scatter-add.
  nb = jnp.asarray(points.stages[0].neighbors)
  bad = nb.at[0, 0, 0].set(nb[0, 0, 13])
  fast, plain = _neighbor_grads(x, w, bad)
  np.testing.assert_allclose(fast, plain, atol=1e-5)


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
