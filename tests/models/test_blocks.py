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


def test_cpe_conv_in_bfloat16_is_float32_within_bf16_precision():
  """The CPE's conv in bfloat16 against float32 (same params, same inputs x and dy in bfloat16, as the encoder's
  residual stream is). Input gradient: the gather's transpose sums each point's <= 27 tap cotangents in bfloat16;
  with dy, the kernel and each tap's product rounded once (3 units) plus 27 additions, each at most u = 2^-8 of
  the sum of absolute values: |dx16 - dx32| <= 30 u (|dy| |W|^T, scattered). Forward: x exact in both, the kernel
  and the output rounded to bfloat16, the 27 C products accumulated in float32: <= (2 u + 27 C eps32) of the
  sum of absolute values."""
  points = _points()
  nbr = jnp.asarray(points.stages[0].neighbors)
  valid = jnp.asarray(points.stages[0].valid)[..., None]
  cin = cout = 8
  # Inputs exactly representable in bfloat16, so both dtypes see the same x and dy.
  x = (jax.random.normal(jax.random.key(0), nbr.shape[:2] + (cin,)) * valid).astype(jnp.bfloat16)
  dy = (jax.random.normal(jax.random.key(1), nbr.shape[:2] + (cout,)) * valid).astype(jnp.bfloat16)
  conv = lambda dtype: blocks._Conv(cout, dtype)  # over the gathered neighbourhoods, as the CPE applies it
  params = conv(jnp.float32).init(jax.random.key(2), blocks.gather_rows(x, nbr))
  w = params["params"]["kernel"]
  outs = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    y, vjp = jax.vjp(lambda v: conv(dtype).apply(params, blocks.gather_rows(v, nbr)), x.astype(dtype))
    outs[dtype] = (y.astype(jnp.float32), vjp(dy.astype(y.dtype))[0].astype(jnp.float32))
  (y32, dx32), (y16, dx16) = outs[jnp.float32], outs[jnp.bfloat16]
  u, u32 = 2.0 ** -8, float(np.finfo(np.float32).eps)
  x, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
  gathered_abs = blocks.gather_rows(jnp.abs(x), nbr).reshape(nbr.shape[:2] + (27 * cin,))
  y_abs = gathered_abs @ jnp.abs(w).reshape(27 * cin, cout)
  np.testing.assert_array_less(jnp.abs(y16 - y32), (2 * u + 27 * cin * u32) * y_abs + 1e-30)
  dg_abs = jnp.einsum("bno,kio->bnki", jnp.abs(dy), jnp.abs(w))
  dx_abs = jax.vjp(lambda v: blocks.gather_rows(v, nbr), x)[1](dg_abs)[0]
  np.testing.assert_array_less(jnp.abs(dx16 - dx32), 30 * u * dx_abs + 1e-30)
  assert float(jnp.abs(dx16 - dx32).max()) > 0  # bfloat16 really ran
