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
