"""Upstream Pointcept for the interop tests: `dos_jax.interop.pointcept_upstream` behind the suite's skip policy (skipped
with a reason on a bare clone, a failure under CI=true), and the natural real scans of ../shared/data."""

import numpy as np
import pytest

from tests import conftest

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


def modules():
  """(torch, spconv.pytorch, classes) or a skip / CI failure when ../shared/reference, torch or spconv is absent."""
  conftest.require_shared("reference", "pointcept")
  conftest.require_torch()
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  try:
    return pointcept_upstream.modules()
  except ImportError as e:
    if conftest.in_ci():
      pytest.fail(f"CI=true but {e}", pytrace=False)
    pytest.skip(str(e), allow_module_level=True)


def build(kind, channels, depths, heads, patch, order=ORDERS, in_channels=6, seed=0, layer_scale=False):
  """An upstream encoder with random non-trivial weights (BatchNorm running statistics included), prepared."""
  modules()
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  return pointcept_upstream.build_random(kind, channels, depths, heads, patch, order, in_channels, seed,
                                         layer_scale)


def prepare(model):
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  return pointcept_upstream.prepare(model)


def scan(name, grid_size):
  """A whole natural ScanNet scan grid-sampled at `grid_size` m: coord f32[N, 3], feat f32[N, 6] (coord, colour
  in [0, 1]), grid_coord i64[N, 3] as Pointcept's GridSample (floor(coord / grid) minus its minimum)."""
  path = conftest.require_shared("data", "scannet_votenet50k", name)
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  return pointcept_upstream.scan(path, grid_size)


def features(model, coord, feat, grid):
  """Upstream's up-cast features f32[N, sum(channels)], rows in input order."""
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  return pointcept_upstream.forward(model, coord, feat, grid)[1]


def state_dict(model):
  return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rel(a, b):
  """max |a - b| / max |b| in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())
