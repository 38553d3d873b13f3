"""The torch reference encoder loaded with converted Flax params reproduces dos_jax.models.encoder; its blocks
match independent NumPy loops (attention per patch, grid pooling per parent)."""

import functools
import math

import jax
import numpy as np
import pytest

from tests import conftest

torch = conftest.require_torch()

from dos_jax.models import encoder  # pylint: disable=g-import-not-at-top
from dos_jax.models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import blocks as tblocks  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import convert  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import encoder as tenc  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import parity  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.system

CFG = ModelSpec(variant="tiny", dtype="float32", drop_path=0.0, mlp_ratio=4.0)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


def test_converted_state_dict_reproduces_jax_encoder():
  points = parity.make_points(sizes=(240, 90), capacity=256, seed=1)
  params = encoder.init(jax.random.key(0), points, CFG)
  # Random (not the zero-bias / unit-scale init) weights so every parameter matters.
  params = parity.random_params(params, seed=5)
  mask = np.asarray(points.valid) & (np.random.default_rng(0).random(points.valid.shape) < 0.25)
  run = jax.jit(functools.partial(encoder.apply_with_aux, train=False, spec=CFG))
  out, aux = run(params, points, mask_token=mask)

  model = tenc.PointTransformerV3.from_variant("tiny", in_channels=points.feat.shape[-1])
  model.load_state_dict(convert.flax_to_torch_state_dict(params), strict=True)
  with torch.no_grad():
    t_out, t_aux = model.forward_with_aux(tenc.points_to_torch(points), torch.from_numpy(mask))
  assert t_out.shape == out.shape == (2, 256, encoder.output_dim(CFG))
  assert _rel(out, t_out.numpy()) < 2e-5
  for s in range(3):
    assert _rel(aux[f"enc{s}"], t_aux[f"enc{s}"].numpy()) < 2e-5
  assert np.all(t_out.numpy()[~np.asarray(points.valid)] == 0.0)
  # The mask token matters (a wrong mask-token path would not be caught by the unmasked run).
  with torch.no_grad():
    unmasked = model(tenc.points_to_torch(points))
  assert _rel(unmasked.numpy(), t_out.numpy()) > 1e-3


def _numpy_attention(x, valid, order, inverse, wqkv, bqkv, wproj, bproj, heads, patch):
  """Per-patch loop: attend among the real points of each patch (a fully padded patch: among all its slots; the
  last partial patch: over the last `patch` real points of the sequence, as upstream PTv3)."""
  b, n, c = x.shape
  dh = c // heads
  out = np.zeros_like(x)
  for bi in range(b):
    seq = order[bi]
    n_real = int(valid[bi].sum())
    for start in range(0, n, patch):
      slots = seq[start:start + patch]
      keys = slots[valid[bi, slots]] if valid[bi, slots].any() else slots
      if n_real > patch and start < n_real < start + patch:  # upstream: last partial patch over the last P points
        keys = seq[n_real - patch:n_real]
      qkv_q = x[bi, slots] @ wqkv.T + bqkv
      qkv_k = x[bi, keys] @ wqkv.T + bqkv
      y = np.zeros((len(slots), c))
      for h in range(heads):
        q = qkv_q[:, h * dh:(h + 1) * dh]
        k = qkv_k[:, c + h * dh:c + (h + 1) * dh]
        v = qkv_k[:, 2 * c + h * dh:2 * c + (h + 1) * dh]
        logits = q @ k.T / math.sqrt(dh)
        w = np.exp(logits - logits.max(1, keepdims=True))
        y[:, h * dh:(h + 1) * dh] = (w / w.sum(1, keepdims=True)) @ v
      out[bi, slots] = y @ wproj.T + bproj
  return out


def test_attention_matches_numpy_loops_with_ragged_patches():
  valid, order, inverse = parity._ragged_order(40, (33, 9), seed=2)  # pylint: disable=protected-access
  r = np.random.default_rng(0)
  x = np.where(valid[..., None], r.standard_normal((2, 40, 8)), 0.0)
  attn = tblocks.SerializedAttention(8, 2, 16).double()
  with torch.no_grad():
    for p in attn.parameters():
      p.copy_(torch.from_numpy(r.standard_normal(tuple(p.shape)) * 0.3))
    got = attn(torch.from_numpy(x), torch.from_numpy(valid), torch.from_numpy(order).long(),
               torch.from_numpy(inverse).long()).numpy()
  want = _numpy_attention(x, valid, order, inverse, attn.qkv.weight.detach().numpy(), attn.qkv.bias.detach().numpy(),
                          attn.proj.weight.detach().numpy(), attn.proj.bias.detach().numpy(), heads=2, patch=16)
  # Padded slots hold copies in the completed last patch (their outputs are dropped by every block): real only.
  np.testing.assert_allclose(got[valid], want[valid], rtol=1e-10, atol=1e-10)


def test_grid_pooling_matches_numpy_max_over_children():
  r = np.random.default_rng(1)
  parent = np.array([[0, 2, 0, 1, 2, 4, 4], [1, 1, 0, 4, 4, 4, 4]])  # sentinel M = 4
  next_valid = np.array([[True, True, True, False], [True, True, False, False]])
  x = r.standard_normal((2, 7, 3))
  pool = tblocks.GridPooling(3, 5).double()
  with torch.no_grad():
    got = pool(torch.from_numpy(x), torch.from_numpy(parent), torch.from_numpy(next_valid)).numpy()
  w, bias = pool.proj.weight.detach().numpy(), pool.proj.bias.detach().numpy()
  y = x @ w.T + bias
  want = np.zeros((2, 4, 5))
  for bi in range(2):
    for m in range(4):
      if next_valid[bi, m]:
        z = y[bi][parent[bi] == m].max(0)
        z = (z - z.mean()) / np.sqrt(z.var() + 1e-5)
        want[bi, m] = z * 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
