"""Real scans for the benchmarks: the config's data.root, or the shared scans beside the checkout (read in place)."""

from __future__ import annotations

import glob
import os

from dos_jax.data import pointcept
from dos_jax.data import catalog

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data")


def shared_source(dataset: str):
  """Real scans beside the checkout, read in place: a list of Scenes."""
  if dataset.startswith("scannet"):
    return [pointcept.read_scannet_votenet(d) for d in
            pointcept.find_scannet_votenet(os.path.join(SHARED, "scannet_votenet50k"))]
  if dataset == "semantickitti":
    base = os.path.join(SHARED, "semantickitti")
    scenes = [pointcept.read_open3dml_kitti(p, p.replace("_points_", "_labels_"))
              for p in sorted(glob.glob(os.path.join(base, "open3dml_seq01", "kitti_01_points_*.npy")))]
    raw = os.path.join(base, "spvnas_sample_000000")
    return scenes + [pointcept.read_semantickitti(os.path.join(raw, "000000.bin"),
                                                  os.path.join(raw, "000000.label"))]
  raise ValueError(f"no shared scans for dataset {dataset!r}; set --config.data.root")


def scene_list(cfg):
  if cfg.data.format == "synthetic" or os.path.isdir(str(cfg.data.root)):
    return catalog.scene_source(cfg.data, "train"), str(cfg.data.root or "synthetic")
  return shared_source(cfg.data.dataset), f"shared:{cfg.data.dataset}"
