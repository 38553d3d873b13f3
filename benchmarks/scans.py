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


# The split of the shared scans for calibrating pack budgets on some and measuring them on others (issue 23):
# ScanNet by room (re-scans of a room stay on one side), SemanticKITTI by sequence (the three Open3D-ML frames of
# sequence 01 calibrate; the spvnas frame, from another sequence, is held out).
CALIBRATION_SCANS = {"scannet": ("scene0000", "scene0002", "scene0004"), "semantickitti": ("kitti_01_",)}
SPLITS = ("all", "calib", "heldout")


def shared_split(scenes, dataset: str, split: str):
  """The shared scans of `split`: 'all', 'calib' (CALIBRATION_SCANS) or 'heldout' (the others)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: expected one of {SPLITS}")
  if split == "all":
    return list(scenes)
  marks = CALIBRATION_SCANS["scannet" if dataset.startswith("scannet") else dataset]
  chosen = [s for s in scenes if any(os.path.basename(s.name).startswith(m) for m in marks) == (split == "calib")]
  if not chosen:
    raise ValueError(f"no shared {dataset} scans in split {split!r}")
  return chosen


def scene_list(cfg, split: str = "all"):
  """(scenes, data name): the config's data when it names a folder (or synthetic data), else the shared scans
  of `split`."""
  if cfg.data.format == "synthetic" or os.path.isdir(str(cfg.data.root)):
    if split != "all":
      raise ValueError("--split applies to the shared scans only (data.root is set or data is synthetic)")
    return catalog.scene_source(cfg.data, "train"), str(cfg.data.root or "synthetic")
  return shared_split(shared_source(cfg.data.dataset), cfg.data.dataset, split), f"shared:{cfg.data.dataset}:{split}"
