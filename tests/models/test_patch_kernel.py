"""dos_jax.models.patch_kernel, run on the CPU in Pallas's TPU interpret mode: the positions-minor kernel computes
the segment-masked attention of an independent XLA formulation (`jax.nn.dot_product_attention` with the mask),
forward and backward, in float32 and within bfloat16's precision; head groups and query blocks change nothing.
(That Mosaic lowers it for real TPUs is tests/test_compile_launch.py's libtpu test.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from dos_jax.models import patch_kernel

F32_EPS = float(np.finfo(np.float32).eps)
BF16_EPS = 2.0 ** -8


def _inputs(g, p, h, d=16, seed=0):
  r = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(r.normal(size=(g, h, d, p)), jnp.float32) for _ in range(3))
  # Packed-style segments: sorted views and gaps (-1); every query has keys of its own segment (itself).
  seg = jnp.asarray(np.sort(r.integers(-1, 3, size=(g, p)), axis=1), jnp.int32)
  return q, k, v, seg


def _reference(seg):
  """The same attention on the kernel's [G, H, D, P] layout, through XLA's [G, P, H, D] formulation."""
  mask = (seg[:, :, None] == seg[:, None, :])[:, None]
  to_xla = lambda t: jnp.transpose(t, (0, 3, 1, 2))  # noqa: E731
  return lambda q, k, v: jnp.transpose(
      jax.nn.dot_product_attention(to_xla(q), to_xla(k), to_xla(v), mask=mask), (0, 2, 3, 1))


def _loss(fn):
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


def _check_f32(q, k, v, seg):
  """|err| <= P eps max|v| for the outputs (a weighted sum of P values with weights summing to 1, each rounded to
  float32); the gradients are sums of a few such terms times cotangents |cos| <= 1 and inputs up to max|q,k,v|."""
  kernel = lambda q, k, v: patch_kernel.patch_attention(q, k, v, seg, seg)  # noqa: E731
  ref = _reference(seg)
  with pltpu.force_tpu_interpret_mode():
    y = kernel(q, k, v)
    grads = jax.grad(_loss(kernel), argnums=(0, 1, 2))(q, k, v)
  y_ref = ref(q, k, v)
  grads_ref = jax.grad(_loss(ref), argnums=(0, 1, 2))(q, k, v)
  bound = q.shape[-1] * F32_EPS * float(jnp.max(jnp.abs(v)))
  assert y.shape == q.shape and float(jnp.max(jnp.abs(y - y_ref))) <= bound
  scale = max(float(jnp.max(jnp.abs(t))) for t in (q, k, v))
  for g, g_ref in zip(grads, grads_ref):
    assert float(jnp.max(jnp.abs(g - g_ref))) <= 4 * bound * scale
  assert float(jnp.max(jnp.abs(y_ref))) > 0.1 and float(jnp.max(jnp.abs(grads_ref[1]))) > 0.01  # not vacuous


def test_forward_and_backward_equal_xla_attention_in_float32():
  """Two query blocks of 256 (P = 512), three heads in one grid step."""
  _check_f32(*_inputs(g=2, p=512, h=3))


def test_head_groups_and_128_query_blocks_change_nothing(monkeypatch):
  """A block budget of one head's blocks forces one head per grid step (H grid steps per patch, segment ids
  shared by index map); P = 384 runs three query blocks of 128."""
  q, k, v, seg = _inputs(g=2, p=384, h=4, seed=2)
  one_head = 16 * q.shape[2] * q.shape[3] * q.dtype.itemsize
  monkeypatch.setattr(patch_kernel, "_BLOCK_BYTES", one_head)
  assert patch_kernel._heads_per_step(4, q.shape[2], q.shape[3], 4) == 1  # pylint: disable=protected-access
  assert patch_kernel._query_block(384) == 128  # pylint: disable=protected-access
  _check_f32(q, k, v, seg)


def test_bfloat16_within_bfloat16_precision():
  """bf16 inputs, f32 accumulation, output rounded to bf16 (2^-8 relative); against the float32 reference on the
  same bf16-rounded inputs |err| <= 2^-8 max|v| plus float32 rounding."""
  q, k, v, seg = _inputs(g=1, p=256, h=2, seed=1)
  q16, k16, v16 = (t.astype(jnp.bfloat16) for t in (q, k, v))
  with pltpu.force_tpu_interpret_mode():
    y16 = patch_kernel.patch_attention(q16, k16, v16, seg, seg)
  assert y16.dtype == jnp.bfloat16
  y_ref = _reference(seg)(*(t.astype(jnp.float32) for t in (q16, k16, v16)))
  err = float(jnp.max(jnp.abs(y16.astype(jnp.float32) - y_ref)))
  vmax = float(jnp.max(jnp.abs(v16.astype(jnp.float32))))
  assert err <= (BF16_EPS + q.shape[-1] * F32_EPS) * vmax, err
  assert err > 0


@pytest.mark.parametrize("p", [100, 130])
def test_rejects_a_patch_length_the_lanes_cannot_tile(p):
  q, k, v, seg = _inputs(g=1, p=p, h=1)
  with pytest.raises(ValueError, match=f"patch length {p} is not a multiple of 128"):
    with pltpu.force_tpu_interpret_mode():
      patch_kernel.patch_attention(q, k, v, seg, seg)
