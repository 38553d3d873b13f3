"""Upstream Pointcept PTv3 (torch + spconv, from ../shared/reference/pointcept) beside dos_jax, for the parity
report (`dos_jax.interop.pointcept_parity`), the benchmarks and the tests; never a runtime dependency of dos_jax
(nothing imports torch or the reference until `modules()` is called).

  torch, spconv, classes = modules()                   # sys.path set up, one torch thread
  model = build_from_config(model_cfg, params)          # upstream encoder holding dos params (strict load)
  stages, feats = forward(model, coord, feat, grid)     # per-stage features (grid-coordinate keyed) + up-cast

Traps handled (measured, see the reference's README): one torch thread (spconv's CPU SubMConv3d is wrong with
more); spconv convs stay in training mode (their CPU bias refuses eval mode; with drop_path=0 nothing else
changes) while BatchNorm runs on running statistics; pooling's own `shuffle_orders` (default True, not passed
down from the backbone) is switched off on every module.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

# The repository root; upstream's code is read in place from the checkout beside it (../shared/reference/pointcept).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference", "pointcept")
CLASS_MODULES = {"PT-v3m2": "pointcept.models.point_transformer_v3.point_transformer_v3m2_sonata",
                 "PT-v3m1": "pointcept.models.point_transformer_v3.point_transformer_v3m1_base"}


def modules(reference: str = REFERENCE):
  """(torch, spconv.pytorch, {'PT-v3m2': class, 'PT-v3m1': class}); ImportError naming what is missing."""
  if not os.path.isdir(reference):
    raise ImportError(f"{reference}: upstream Pointcept reference not found (../shared beside the checkout)")
  for path in (os.path.join(reference, "shims"), reference):
    if path not in sys.path:
      sys.path.insert(0, path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    spconv = importlib.import_module("spconv.pytorch")
    importlib.import_module("addict")
    classes = {k: importlib.import_module(m).PointTransformerV3 for k, m in CLASS_MODULES.items()}
  except ImportError as e:
    raise ImportError(f"upstream Pointcept needs torch, spconv and addict ({e}); "
                      f"`pip install -r requirements-dev.txt`") from e
  torch.set_num_threads(1)
  return torch, spconv, classes


def constructor_args(model_cfg: Mapping[str, Any]) -> Dict[str, Any]:
  """Upstream constructor arguments (encoder mode, no flash/RPE/drop path, shuffling off) of a model_cfg.

  model_cfg: upstream-named, every key present (`dos_jax.interop.pointcept.infer_config` / `load_checkpoint`)."""
  channels = tuple(model_cfg["enc_channels"])
  kw = dict(in_channels=int(model_cfg["in_channels"]), order=tuple(model_cfg["order"]),
            stride=(2,) * (len(channels) - 1), enc_depths=tuple(model_cfg["enc_depths"]), enc_channels=channels,
            enc_num_head=tuple(model_cfg["enc_num_head"]),
            enc_patch_size=tuple(np.broadcast_to(model_cfg["enc_patch_size"], (len(channels),)).tolist()),
            mlp_ratio=model_cfg["mlp_ratio"], enc_mode=True, enable_flash=False, enable_rpe=False,
            drop_path=0.0, shuffle_orders=False)
  if model_cfg["type"] == "PT-v3m2":
    kw["mask_token"] = bool(model_cfg["mask_token"])
    if model_cfg["layer_scale"]:
      kw["layer_scale"] = 1e-5
  return kw


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


def build_from_config(model_cfg: Mapping[str, Any], params: Any = None):
  """The upstream encoder for `model_cfg`, holding `params` (via `to_state_dict`, strict) when given."""
  torch, _, classes = modules()
  model = classes[model_cfg["type"]](**constructor_args(model_cfg))
  if params is not None:
    from dos_jax.interop import pointcept  # pylint: disable=g-import-not-at-top
    sd = pointcept.to_state_dict(params, model_cfg)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
  return prepare(model)


def inputs(coord: np.ndarray, feat: np.ndarray, grid: np.ndarray, device: str = "cpu") -> Dict[str, Any]:
  """Upstream's input dict (one cloud) on `device`."""
  torch, _, _ = modules()
  return dict(coord=torch.from_numpy(np.asarray(coord, np.float32)).to(device),
              grid_coord=torch.from_numpy(np.asarray(grid, np.int64)).to(device),
              feat=torch.from_numpy(np.asarray(feat, np.float32)).to(device),
              offset=torch.tensor([len(coord)], device=device))


def upcast(point, stages: List = None):
  """Upstream's up-cast of an encoder output `Point`: per pooling level, parent.feat = cat(parent.feat,
  point.feat[pooling_inverse]); returns the stage-0 tensor [N, sum C]. `stages` (a list) collects (grid_coord,
  own feat) per stage, deepest first."""
  torch, _, _ = modules()
  if stages is not None:
    stages.append((point.grid_coord, point.feat))
  while "pooling_parent" in point.keys():
    parent, inverse = point.pop("pooling_parent"), point.pop("pooling_inverse")
    if stages is not None:
      stages.append((parent.grid_coord, parent.feat))
    parent.feat = torch.cat([parent.feat, point.feat[inverse]], dim=-1)
    point = parent
  return point.feat


def forward(model, coord: np.ndarray, feat: np.ndarray, grid: np.ndarray
            ) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], np.ndarray]:
  """Upstream on one cloud (CPU, no grad): ([(grid_coord i64[N_s, 3], feat f32[N_s, C_s]) per stage], up-cast
  f32[N, sum C])."""
  torch, _, _ = modules()
  with torch.no_grad():
    stages = []
    out = upcast(model(inputs(coord, feat, grid)), stages)
  stages = [(g.numpy().astype(np.int64), f.numpy().copy()) for g, f in stages[::-1]]
  return stages, out.numpy()


def scan(path: str, grid_size: float, in_channels: int = 6):
  """A scene grid-sampled at `grid_size` m -> coord f32[N, 3], feat f32[N, in_channels], grid_coord i64[N, 3].

  `path`: a Pointcept scene folder (coord.npy, color.npy[, normal.npy]) or a VoteNet ScanNet `*_vert.npy` /
  its folder (../shared/data/scannet_votenet50k). feat = coord, colour in [0, 1] (6) [, normal (9)], as Sonata.
  grid_coord as Pointcept's GridSample: floor(coord / grid) minus its minimum; one point per voxel (the first).
  """
  from dos_jax.data import transforms  # pylint: disable=g-import-not-at-top
  from dos_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "coord.npy")):
    from dos_jax.data import scene as scene_lib  # pylint: disable=g-import-not-at-top
    sc = scene_lib.load_scene(path)
    coord, color, normal = sc.coord, sc.color, sc.normal
  else:
    vert = path
    if os.path.isdir(path):
      vert = os.path.join(path, os.path.basename(os.path.normpath(path)) + "_vert.npy")
    if not os.path.exists(vert):
      raise DataError(f"{path}: expected a Pointcept scene folder (coord.npy, color.npy) or a *_vert.npy scan")
    v = np.load(vert)
    coord, color, normal = v[:, :3].astype(np.float32), v[:, 3:6].astype(np.float32) / 255.0, None
  keep, _ = transforms.grid_sample(coord, grid_size)
  parts = [coord[keep], color[keep]]
  if in_channels == 9:
    if normal is None:
      raise DataError(f"{path}: the model takes 9 input channels (coord, colour, normal) but the scene has no "
                      f"normals")
    parts.append(normal[keep])
  elif in_channels != 6:
    raise DataError(f"{path}: the model takes {in_channels} input channels; scenes give 6 (coord, colour) or 9 "
                    f"(+ normal)")
  grid = np.floor(coord[keep].astype(np.float64) / grid_size).astype(np.int64)
  grid -= grid.min(0)
  return coord[keep], np.concatenate(parts, 1).astype(np.float32), grid


def randomize(model, seed: int = 0):
  """Random non-trivial weights in place: Linear/conv weights N(0, 1/fan_in), norm scales 1 + N(0, 0.2), biases
  and the mask token N(0, 0.2), BatchNorm running mean N(0, 0.3) and variance U(0.5, 1.5). Returns the model."""
  torch, _, _ = modules()
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
  return model


def build_random(kind: str, channels, depths, heads, patch, order=("z", "z-trans", "hilbert", "hilbert-trans"),
                 in_channels: int = 6, seed: int = 0, layer_scale: bool = False):
  """An upstream encoder of `kind` ('PT-v3m2' | 'PT-v3m1') with `randomize`d weights, prepared for comparison
  (`layer_scale`: PT-v3m2's LayerScale modules, randomized too)."""
  torch, _, classes = modules()
  cfg = dict(type=kind, in_channels=in_channels, order=order, enc_channels=channels, enc_depths=depths,
             enc_num_head=heads, enc_patch_size=patch, mask_token=kind == "PT-v3m2", layer_scale=layer_scale,
             mlp_ratio=4)  # upstream's default MLP width
  torch.manual_seed(seed)
  model = classes[kind](**constructor_args(cfg))
  return prepare(randomize(model, seed))


def state_dict(model) -> Dict[str, Any]:
  """{name: numpy array} of an upstream model's state_dict."""
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
