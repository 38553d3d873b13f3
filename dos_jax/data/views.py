"""Views and masks: random crop & duplicate into views, and per-view spatial block masking.

A view is a cloud dict (see `transforms`) holding a random crop of the scene (one crop shared by all views under
`data.views='duplicate'`, one crop per view under 'independent'), independently augmented, then grid sampled to one
point per voxel. Every point keeps `point_index`, its index in the original scene, which is how
the student's points find their teacher targets (same view) and their cross-view matches (other view, by the
original, un-augmented coordinates).
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np

from dos_jax.data import transforms


def random_crop(data: transforms.Data, ratio: float, rng: np.random.Generator) -> transforms.Data:
  """Keeps the ceil(ratio * n) points nearest to a random scene point (a ball-shaped crop around it).

  Args:
    data: cloud dict with coord f32[n, 3].
    ratio: fraction of points kept, in (0, 1]; 1 keeps everything (in the original order).
    rng: randomness for the centre.

  Returns:
    The cropped cloud (points in ascending original order).
  """
  coord = data["coord"]
  n = coord.shape[0]
  keep_n = max(1, min(n, int(np.ceil(ratio * n))))
  if keep_n >= n:
    return dict(data)
  center = coord[rng.integers(n)]
  dist = np.square(coord - center).sum(1)
  keep = np.sort(np.argpartition(dist, keep_n - 1)[:keep_n])
  return transforms.take(data, keep)


VIEW_MODES = ("duplicate", "independent")


def make_views(data: transforms.Data, num_views: int, crop_ratio: Union[float, Tuple[float, float]],
               grid_size: float, augment: transforms.Op, rng: np.random.Generator,
               mode: str = "duplicate") -> List[transforms.Data]:
  """Random crop & duplicate: `num_views` augmented and grid-sampled views of one scene.

  mode='duplicate' (the paper's "random crop & duplicate", Sonata's default): ONE random crop, copied
  `num_views` times; each copy is augmented and grid-sampled on its own (masking is per view too, downstream), so
  the views cover the same points and every student point has a cross-view counterpart up to grid sampling.
  mode='independent': each view is its own random crop (views overlap only partly; cross-view matches exist
  only in the overlap).

  Args:
    data: the scene as a cloud dict (`transforms.from_scene`), point_index = original indices.
    num_views: V.
    crop_ratio: fraction of the scene's points a crop keeps before grid sampling (`data.crop_ratio`), or a range
      (low, high) from which each crop draws its fraction uniformly (Sonata's random view scale:
      `data.crop_ratio`, `data.crop_ratio_max`).
    grid_size: voxel size in metres (`data.grid_size`), applied after augmentation.
    augment: per-view spatial + photometric augmentation (e.g. `transforms.build(default_augmentations(kind))`).
    rng: randomness.
    mode: 'duplicate' | 'independent' (`data.views`).

  Returns:
    V cloud dicts, each with one point per voxel; `point_index` gives each point's original scene index.
  """
  if mode not in VIEW_MODES:
    raise ValueError(f"mode={mode!r}: expected one of {VIEW_MODES}")
  def crop():
    if isinstance(crop_ratio, tuple):
      lo, hi = crop_ratio
      return random_crop(data, lo if lo == hi else rng.uniform(lo, hi), rng)
    return random_crop(data, crop_ratio, rng)

  shared = crop() if mode == "duplicate" else None
  views = []
  for _ in range(num_views):
    view = dict(shared) if shared is not None else crop()
    view = augment(view, rng)
    keep, _ = transforms.grid_sample(view["coord"], grid_size, rng)
    views.append(transforms.take(view, keep))
  return views


def linear_warmup(start: float, end: float, warmup_steps: int, step: int) -> float:
  """A warm-up schedule as a function of the step: `start` at step 0, rising linearly to `end` at step
  warmup_steps - 1, `end` from then on (`warmup_steps` <= 0: `end` at every step).

  This is the value Sonata's mask schedulers (Pointcept's CosineScheduler with final = base: the warm-up part is
  `np.linspace(start, base, warmup_iters)`, then the base value) give at 0-based step `step`; it is evaluated where
  the views are built, so a batch stays a pure function of (config, seed, step).
  """
  step, warmup_steps = int(step), int(warmup_steps)
  if step < 0:
    raise ValueError(f"step={step}: expected a step >= 0")
  if step >= warmup_steps:
    return float(end)
  if warmup_steps == 1:
    return float(start)
  return float(start) + (float(end) - float(start)) * step / (warmup_steps - 1)


def block_mask(coord: np.ndarray, cell_size: float, ratio: float, rng: np.random.Generator,
               min_visible: int = 1, offset: Optional[np.ndarray] = None) -> np.ndarray:
  """Spatial block masking: the cloud is cut into cubic cells of `cell_size` metres (with a random grid offset)
  and round(ratio * num_cells) random cells are masked.

  The visible and masked sets are disjoint and, when the cloud spans at least two cells, both non-empty (strict
  subsets). The fraction of masked *points* varies around `ratio` with the cells' occupancy; see `mask_ratio`.

  Args:
    coord: f32[n, 3] coordinates of one view (metres).
    cell_size: cell edge in metres (`data.mask_cell`: 0.4 indoor, 1.0 outdoor).
    ratio: fraction of cells masked, in [0, 1).
    rng: randomness (the grid offset and the cells).
    min_visible: if fewer points than this would stay visible, masked cells are unmasked one by one (random
      order) until that many are visible.
    offset: f[3] grid offset in metres; default uniform in [0, cell_size)^3.

  Returns:
    masked: bool[n].
  """
  n = coord.shape[0]
  if n == 0:
    return np.zeros(0, dtype=bool)
  if offset is None:
    offset = rng.uniform(0.0, cell_size, size=3)
  cells = transforms.voxel_keys(coord, cell_size, offset)
  unique, cell_of_point = np.unique(cells, return_inverse=True)
  num_cells = len(unique)
  if num_cells < 2:
    return np.zeros(n, dtype=bool)
  num_masked = int(np.clip(np.round(ratio * num_cells), 1 if ratio > 0 else 0, num_cells - 1))
  perm = rng.permutation(num_cells)
  cell_masked = np.zeros(num_cells, dtype=bool)
  cell_masked[perm[:num_masked]] = True
  masked = cell_masked[cell_of_point.reshape(-1)]
  if n - masked.sum() < min_visible:
    counts = np.bincount(cell_of_point.reshape(-1), minlength=num_cells)
    visible = n - masked.sum()
    for c in perm[:num_masked][::-1]:
      if visible >= min_visible:
        break
      cell_masked[c] = False
      visible += counts[c]
    masked = cell_masked[cell_of_point.reshape(-1)]
  return masked


def mask_ratio(masked: np.ndarray) -> float:
  """Achieved fraction of masked points (what the loss actually sees), for logging."""
  return float(masked.mean()) if masked.size else 0.0


def split_visible(view: transforms.Data, masked: np.ndarray) -> Tuple[transforms.Data, np.ndarray]:
  """(visible cloud, visible positions i32[m] in the view): the student's points, masked ones gathered out."""
  visible = np.flatnonzero(~masked).astype(np.int32)
  return transforms.take(view, visible), visible
