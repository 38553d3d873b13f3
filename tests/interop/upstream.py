"""Upstream Pointcept PTv3 (../shared/reference/pointcept: torch + spconv) and natural real scans for the interop
tests: random non-trivial weights (BatchNorm running statistics included), shuffling off, eval mode.

Traps handled here (measured, see the reference's README): one torch thread (spconv's CPU SubMConv3d is wrong with
more); the spconv convs stay in training mode (their CPU bias refuses eval mode; with drop_path=0 nothing else
changes) while BatchNorm runs on running statistics; pooling's own `shuffle_orders` (default True, not passed down
from the backbone) is switched off on every module.
"""

import importlib
import sys

import numpy as np
import pytest

from dos_jax.data import transforms
from tests import conftest

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
SCANS = conftest.SHARED_DATA + "/scannet_votenet50k"


def _absent(reason):
  if conftest.in_ci():
    pytest.fail(f"CI=true but {reason}", pytrace=False)
  pytest.skip(reason, allow_module_level=True)


def modules():
  """(torch, spconv.pytorch, {'PT-v3m2': class, 'PT-v3m1': class}); skips (fails under CI) when absent."""
  ref = conftest.require_shared("reference", "pointcept")
  torch = conftest.require_torch()
  for path in (ref + "/shims", ref):
    if path not in sys.path:
      sys.path.insert(0, path)
  try:
    spconv = importlib.import_module("spconv.pytorch")
    importlib.import_module("addict")
    m2 = importlib.import_module("pointcept.models.point_transformer_v3.point_transformer_v3m2_sonata")
    m1 = importlib.import_module("pointcept.models.point_transformer_v3.point_transformer_v3m1_base")
  except ImportError as e:
    _absent(f"upstream Pointcept needs spconv and addict ({e}); `pip install -r requirements-dev.txt`")
  torch.set_num_threads(1)
  return torch, spconv, {"PT-v3m2": m2.PointTransformerV3, "PT-v3m1": m1.PointTransformerV3}


def build(kind, channels, depths, heads, patch, order=ORDERS, in_channels=6, seed=0):
  """An upstream encoder with random weights: Linear/conv weights N(0, 1/fan_in), norm scales 1 + N(0, 0.2),
  biases and mask token N(0, 0.2), BatchNorm running mean N(0, 0.3) and variance U(0.5, 1.5)."""
  torch, spconv, classes = modules()
  kw = dict(in_channels=in_channels, order=order, stride=(2,) * (len(channels) - 1), enc_depths=depths,
            enc_channels=channels, enc_num_head=heads, enc_patch_size=(patch,) * len(channels), enc_mode=True,
            enable_flash=False, enable_rpe=False, drop_path=0.0, shuffle_orders=False)
  if kind == "PT-v3m2":
    kw["mask_token"] = True
  torch.manual_seed(seed)
  model = classes[kind](**kw)
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if p.ndim > 1 and "mask_token" not in name:
        p.copy_(noise / np.sqrt(p[0].numel()))
      elif name.endswith("weight"):  # LayerNorm / BatchNorm scales
        p.copy_(1.0 + 0.2 * noise)
      else:
        p.copy_(0.2 * noise)
    for name, b in model.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.3 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  prepare(model)
  return model


def prepare(model):
  """Shuffling off everywhere, eval mode (BatchNorm from running stats), spconv convs in training mode."""
  _, spconv, _ = modules()
  for m in model.modules():
    if hasattr(m, "shuffle_orders"):
      m.shuffle_orders = False
  model.eval()
  for m in model.modules():
    if isinstance(m, spconv.SubMConv3d):
      m.train()
  return model


def scan(name, grid_size):
  """A whole natural ScanNet scan grid-sampled at `grid_size` m: coord f32[N, 3], feat f32[N, 6] (coord, colour
  in [0, 1]), grid_coord i64[N, 3] as Pointcept's GridSample (floor(coord / grid) minus its minimum)."""
  path = conftest.require_shared("data", "scannet_votenet50k", name, f"{name}_vert.npy")
  v = np.load(path)
  coord = v[:, :3].astype(np.float32)
  keep, _ = transforms.grid_sample(coord, grid_size)
  coord, color = coord[keep], v[keep, 3:6].astype(np.float32) / 255.0
  grid = np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)
  grid -= grid.min(0)
  return coord, np.concatenate([coord, color], 1).astype(np.float32), grid


def features(model, coord, feat, grid):
  """Upstream's up-cast features f32[N, sum(channels)] (per pooling level, parent.feat = cat(parent.feat,
  point.feat[pooling_inverse])), rows in input order."""
  torch, _, _ = modules()
  with torch.no_grad():
    point = model(dict(coord=torch.from_numpy(coord), grid_coord=torch.from_numpy(grid),
                       feat=torch.from_numpy(feat), offset=torch.tensor([len(coord)])))
    while "pooling_parent" in point.keys():
      parent, inverse = point.pop("pooling_parent"), point.pop("pooling_inverse")
      parent.feat = torch.cat([parent.feat, point.feat[inverse]], dim=-1)
      point = parent
  return point.feat.numpy()


def state_dict(model):
  return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rel(a, b):
  """max |a - b| / max |b| in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())
