"""dos_jax.models.attention: both TPU kernels, the project's positions-minor one and the generic flash kernel (run on
the CPU in Pallas's TPU interpret mode), compute the same segment-masked attention as the XLA reference, forward and
backward, through the TPU branch's padding to 128 positions; a bfloat16 run stays within a bound derived
from bfloat16's precision; on CPU the dispatch runs the caller's reference unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import Mesh

from dos_jax.models import attention

F32_EPS = float(np.finfo(np.float32).eps)
BF16_EPS = 2.0 ** -8  # unit roundoff of bfloat16 (8 significand bits)


def _inputs(g=2, p=120, h=2, d=16, seed=0):
  r = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(r.normal(size=(g, p, h, d)), jnp.float32) for _ in range(3))
  # Packed-style segments: sorted views 0..2 and gaps (-1), as SerializedAttention._packed builds them.
  seg = jnp.asarray(np.sort(r.integers(-1, 3, size=(g, p)), axis=1), jnp.int32)
  return q, k, v, seg


def _reference(seg):
  return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=(seg[:, :, None] == seg[:, None, :])[:, None])


def _loss(fn):
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


@pytest.mark.system  # Pallas interpret mode: ~30 s on 2 cores
@pytest.mark.parametrize("which", ["patch", "flash"])
def test_tpu_kernel_equals_the_reference_forward_and_backward(which):
  """p = 120 is padded to the kernel's 128 with positions of their own segments; the outputs of real positions,
  and the gradients, equal the reference to float32 rounding of a length-p weighted sum: |err| <= p * eps *
  max|v| (weights sum to 1; gradients: the same bound times the largest cotangent, |cos| <= 1, a few terms)."""
  q, k, v, seg = _inputs()
  ref = _reference(seg)
  kernel = lambda q, k, v: attention.tpu_kernel(q, k, v, seg, seg, which)  # noqa: E731
  with pltpu.force_tpu_interpret_mode():
    y = kernel(q, k, v)
    grads = jax.grad(_loss(kernel), argnums=(0, 1, 2))(q, k, v)
  y_ref = ref(q, k, v)
  grads_ref = jax.grad(_loss(ref), argnums=(0, 1, 2))(q, k, v)
  bound = q.shape[1] * F32_EPS * float(jnp.max(jnp.abs(v)))
  assert y.shape == y_ref.shape and float(jnp.max(jnp.abs(y - y_ref))) <= bound
  scale = max(float(jnp.max(jnp.abs(t))) for t in (q, k, v))
  for g, g_ref in zip(grads, grads_ref):
    assert float(jnp.max(jnp.abs(g - g_ref))) <= 4 * bound * scale
  assert float(jnp.max(jnp.abs(y_ref))) > 0.1  # not a vacuous comparison


@pytest.mark.system  # Pallas interpret mode
@pytest.mark.parametrize("which", ["patch", "flash"])
def test_tpu_kernel_in_bfloat16_within_bfloat16_precision(which):
  """bf16 inputs: the kernel rounds the probabilities to bf16 before P @ V (relative error <= 2^-8 per weight)
  and the output to bf16 (another 2^-8), so against the float32 reference on the same (bf16-rounded) inputs
  |err| <= 2 * 2^-8 * max|v| plus the logits' bf16 products (accumulated in f32; one more 2^-8 * max|v|)."""
  q, k, v, seg = _inputs(g=1, p=128, h=1, seed=1)
  q16, k16, v16 = (t.astype(jnp.bfloat16) for t in (q, k, v))
  with pltpu.force_tpu_interpret_mode():
    y16 = attention.tpu_kernel(q16, k16, v16, seg, seg, which)
  assert y16.dtype == jnp.bfloat16
  y_ref = _reference(seg)(*(t.astype(jnp.float32) for t in (q16, k16, v16)))
  err = float(jnp.max(jnp.abs(y16.astype(jnp.float32) - y_ref)))
  bound = 3 * BF16_EPS * float(jnp.max(jnp.abs(v16.astype(jnp.float32))))
  assert err <= bound, (err, bound)
  assert err > 0  # bfloat16 rounding is visible: the comparison is not against itself


def test_dispatch_on_cpu_runs_the_reference_unchanged():
  """Without a mesh, or with one on the CPU, `segment_attention` is the caller's reference, bit for bit."""
  q, k, v, seg = _inputs(p=256)
  ref = _reference(seg)
  want = ref(q, k, v)
  assert jnp.array_equal(attention.segment_attention(q, k, v, seg, seg, ref), want)
  mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))

  def under_mesh(q, k, v):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return attention.segment_attention(q, k, v, seg, seg, ref)

  assert jnp.array_equal(jax.jit(under_mesh)(q, k, v), jax.jit(ref)(q, k, v))
