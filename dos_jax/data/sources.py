"""Scene sources: an indexable set of scenes for one split, built from `config.data`.

  source = catalog.scene_source(config.data, 'train')      # 'train' | 'val' | 'all' (dos_jax.data.catalog)
  len(source); scene = source[i]                    # a validated Scene, loaded (or generated) on access
  source.num_classes, source.class_names, source.groups, source.name

Formats (`data.format`):
  synthetic  `data.num_scenes` training scenes `make_scene((seed, 0, i), data.kind)`; validation scenes use
             (seed, 1, i) so the two never share a seed (`data.num_val_scenes`, default num_scenes // 4, >= 1);
             seed = `data.seed` if set, else the `seed` argument (default 0).
  pointcept  `data.root` is a folder of Pointcept scene folders (coord.npy, ...). With `root/train` and
             `root/val` subfolders those are the splits; otherwise a deterministic ~70/30 room-level split of the
             sorted names (`split_scenes`, seed 0), with ScanNet re-scans `sceneXXXX_YY` of one
             room on the same side. Nested layouts (`root/Area_1/office_1/`) are found too.
  tfds       `data.root` is a TFDS data_dir prepared by `dos_jax.data.tfds_builder` (see there).
"""

from __future__ import annotations

import collections.abc
import functools
import os
import re
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dos_jax import errors
from dos_jax.data import labels
from dos_jax.data import pointcept
from dos_jax.data import scene as scene_lib
from dos_jax.data import synthetic

SPLITS = ("train", "val", "all")
# data.dataset -> (label file, number of classes) for Pointcept folders.
DATASETS = {
    "scannet": ("segment20", 20),
    "scannet200": ("segment200", 200),
    "s3dis": ("segment", 13),
    "nuscenes": ("segment", 16),
    "semantickitti": ("segment", 19),
    "las": ("segment", len(labels.ASPRS_NAMES)),
}


class SceneSource(collections.abc.Sequence):
  """A read-only sequence of scenes, produced on access by `load(item)` (not cached: scenes can be large).

  Attributes:
    name: a short description (format, root or kind, split).
    num_classes: number of semantic classes (labels in [-1, num_classes)), or None when unknown.
    class_names: tuple of class names, or None.
    groups: {'head': [...], 'common': [...], 'tail': [...]} class ids, or None.
    items: what `load` receives per index (paths, seeds, record ids), in order.
  """

  def __init__(self, name: str, items: Sequence, load: Callable[[object], scene_lib.Scene],
               num_classes: Optional[int], class_names: Optional[Sequence[str]] = None,
               groups: Optional[Dict[str, List[int]]] = None):
    self.name, self.items, self._load = name, list(items), load
    self.num_classes = num_classes
    self.class_names = tuple(class_names) if class_names is not None else None
    self.groups = groups

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    n = len(self.items)
    if not -n <= i < n:
      raise IndexError(f"{self.name}: index {i} out of range for {n} scenes")
    return self._load(self.items[i])

  def __repr__(self) -> str:
    return f"SceneSource({self.name!r}, {len(self)} scenes, num_classes={self.num_classes})"


# ------------------------------------------------------------------------------------------------ synthetic
@functools.lru_cache(maxsize=256)
def _cached_synthetic_scene(seed, kind, num_points):
  # Generating a scene costs more than batching it; a training run revisits the same few dozen scenes every
  # epoch, so keep them (a 30k-point scene is ~1.5 MB). Module-level so the source pickles for process workers.
  return synthetic.make_scene(seed, kind, num_points)


def synthetic_source(kind: str = "indoor", num_scenes: int = 64, split: str = "train", seed: int = 0,
                     num_val_scenes: Optional[int] = None, num_points: Optional[int] = None) -> SceneSource:
  """Synthetic scenes seeded (seed, 0, i) for train and (seed, 1, i) for val; 'all' is train then val."""
  if kind not in synthetic.KINDS:
    raise ValueError(f"kind={kind!r}: expected one of {synthetic.KINDS}")
  if int(num_scenes) < 1:
    raise ValueError(f"num_scenes={num_scenes}: expected >= 1")
  n_val = max(1, int(num_scenes) // 4) if num_val_scenes is None else int(num_val_scenes)
  seeds = {"train": [(seed, 0, i) for i in range(int(num_scenes))], "val": [(seed, 1, i) for i in range(n_val)]}
  seeds["all"] = seeds["train"] + seeds["val"]
  return SceneSource(f"synthetic-{kind}-{split}", seeds[split],
                     functools.partial(_cached_synthetic_scene, kind=kind, num_points=num_points),
                     len(synthetic.CLASS_NAMES[kind]),
                     synthetic.CLASS_NAMES[kind], {k: list(v) for k, v in synthetic.CLASS_GROUPS[kind].items()})


# ------------------------------------------------------------------------------------------------ pointcept
def find_scene_dirs(root: str, max_depth: int = 3) -> List[str]:
  """Sorted folders under `root` (itself included) that hold a coord.npy, searched `max_depth` levels deep."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise errors.DataError(f"{root}: data folder does not exist")
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
    if "coord.npy" in filenames:
      found.append(dirpath)
      dirnames[:] = []
    elif depth >= max_depth:
      dirnames[:] = []
    dirnames.sort()
  return sorted(found)


_ROOM = re.compile(r"(scene\d{4})_\d{2}")


def room_of(name: str) -> str:
  """Room id of a scene: 'sceneXXXX' for ScanNet re-scans 'sceneXXXX_YY', else the folder's base name."""
  base = os.path.basename(os.path.normpath(str(name)))
  m = _ROOM.search(base)
  return m.group(1) if m else base


def split_scenes(names: Sequence[str], train_fraction: float = 0.7,
                 seed: int = 0) -> Tuple[List[int], List[int]]:
  """Deterministic room-level split: (training indices, held-out indices), each sorted.

  Rooms are visited in a seeded permutation and go to the training side until it holds >= train_fraction of the
  scenes; with two or more rooms both sides get at least one room. The result depends only on the sorted set of
  names, the fraction and the seed (not on the order of `names`). The probe splits a folder with it too.

  Raises:
    ValueError: train_fraction outside (0, 1).
  """
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction={train_fraction}: expected a fraction in (0, 1)")
  rooms = sorted({room_of(n) for n in names})
  members = {r: [i for i, n in enumerate(names) if room_of(n) == r] for r in rooms}
  order = [rooms[i] for i in np.random.default_rng(seed).permutation(len(rooms))]
  train: List[int] = []
  target = train_fraction * len(names)
  for k, room in enumerate(order):
    if len(train) >= target or (k == len(order) - 1 and len(order) > 1):
      break
    train.extend(members[room])
  test = [i for i in range(len(names)) if i not in set(train)]
  return sorted(train), test


def split_names(names: Sequence[str], val_fraction: float = 0.3) -> Dict[str, List[int]]:
  """Room-level deterministic split of scene names -> {'train': idx, 'val': idx, 'all': idx} (`split_scenes`,
  seed 0)."""
  train, val = split_scenes(list(names), train_fraction=1.0 - val_fraction, seed=0)
  return {"train": list(train), "val": list(val), "all": list(range(len(names)))}


def pointcept_source(root: str, split: str = "train", dataset: str = "", segment_key: Optional[str] = None,
                     num_classes: Optional[int] = None) -> SceneSource:
  """Pointcept scene folders under `root` (see the module docstring for the split rules)."""
  root = os.path.abspath(os.fspath(root))
  default_key, default_classes = DATASETS.get(dataset, (None, None))
  segment_key = segment_key or default_key
  num_classes = num_classes or default_classes
  if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val")):
    dirs = {s: find_scene_dirs(os.path.join(root, s)) for s in ("train", "val")}
    dirs["all"] = dirs["train"] + dirs["val"]
    chosen = dirs[split]
  else:
    every = find_scene_dirs(root)
    names = [os.path.relpath(d, root) for d in every]
    chosen = [every[i] for i in split_names(names)[split]]
  if not chosen:
    raise errors.DataError(f"{root}: no scene folder with coord.npy for split {split!r} (expected Pointcept scene "
                           "folders; convert raw data with dos_jax.data.pointcept)")

  def load(path):
    key = segment_key if segment_key and os.path.isfile(os.path.join(path, segment_key + ".npy")) else None
    return scene_lib.load_scene(path, segment_key=key, num_classes=num_classes)

  names = labels.CLASS_NAMES.get(dataset)
  return SceneSource(f"pointcept:{root}:{split}", chosen, load, num_classes, names, None)


# ------------------------------------------------------------------------------------------------ demo trees
def scannet_demo_tree(src_root: str, dst_root: Optional[str] = None, scenes: Optional[Sequence[str]] = None,
                      split_folders: bool = False) -> str:
  """Converts the shared VoteNet ScanNet scans into a Pointcept folder tree (for tests and demos); returns it.

  Args:
    src_root: e.g. shared/data/scannet_votenet50k (read in place, never modified).
    dst_root: where to write; a new temporary folder when None (the caller removes it).
    scenes: scan names to convert (default: all).
    split_folders: write `train/` and `val/` subfolders using the room-level split instead of a flat folder.
  """
  dst_root = dst_root or tempfile.mkdtemp(prefix="dos_scannet_")
  dirs = pointcept.find_scannet_votenet(src_root)
  if scenes is not None:
    dirs = [d for d in dirs if os.path.basename(d) in set(scenes)]
  if not split_folders:
    pointcept.convert_scannet_votenet(src_root, dst_root, scenes=[os.path.basename(d) for d in dirs])
    return dst_root
  idx = split_names([os.path.basename(d) for d in dirs])
  for s in ("train", "val"):
    chosen = [os.path.basename(dirs[i]) for i in idx[s]]
    if chosen:
      pointcept.convert_scannet_votenet(src_root, os.path.join(dst_root, s), scenes=chosen)
  return dst_root
