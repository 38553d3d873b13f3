"""Training views: one scene -> V fixed-shape (teacher, visible-only student, targets, cross-view matches) pieces.

Everything is host-side numpy. Shapes depend only on the `spec.BatchSpec` (capacities, stage count and patch size
of the model variant, feature channels, views), never on the data, so one compiled step serves every batch.
`train_views(scene, spec, rng)` is the unit the input pipeline maps over the scene sequence (its `structs.TrainView`
pieces are packed by `dos_jax.batching.packing`); `make_train_batch` is the direct form (one pack per scene);
`stack_views` stacks [B][V] pieces along [B, V] for inspecting the views (it is not a training batch).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import scipy.spatial

from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs
from dos_jax.data import color
from dos_jax.data import scene as scene_lib
from dos_jax.data import transforms
from dos_jax.data import views as views_lib
from dos_jax.errors import DataError


def features(view: transforms.Data, feat_keys: Sequence[str], color_range: str = "unit") -> np.ndarray:
  """f32[n, C] input features: the listed per-point arrays concatenated; missing normal/strength -> zeros;
  colours mapped to `color_range` (`dos_jax.data.color.normalize_color`)."""
  n = view["coord"].shape[0]
  cols = []
  for key in feat_keys:
    value = view.get(key)
    if value is None:
      value = np.zeros((n, spec_lib.FEATURE_DIMS[key]), np.float32)
    elif key == "color":
      value = color.normalize_color(value, color_range)
    cols.append(np.asarray(value, np.float32).reshape(n, spec_lib.FEATURE_DIMS[key]))
  return np.concatenate(cols, axis=1)


def checked_scene(scene) -> scene_lib.Scene:
  """The scene validated, with canonical dtypes and a name for messages.

  Sources validate what they read, but scenes built in memory reach the batching directly: without this, NaN
  colours or normals became NaN features (every step then skipped as non-finite) and wrong shapes failed deep
  inside numpy. Raises DataError naming the scene (empty cloud, NaN/inf, wrong shape/dtype, length mismatch...).
  """
  if not isinstance(scene, scene_lib.Scene):
    raise DataError(f"<scene>: expected a dos_jax.data.Scene, got {type(scene).__name__}")
  return scene_lib.validate_scene(scene, name=scene.name or "<unnamed scene>")


def point_set(view: transforms.Data, capacity: int, p: spec_lib.BatchSpec, name: str) -> structs.PointSet:
  return patches.build_point_set(view["coord"], features(view, p.feat_keys, p.color_range), view["point_index"],
                                 p.grid_size,
                                 capacity, p.num_stages, p.patch_size, name=name, ratio=p.stage_ratio,
                                 depth_rule=p.depth_rule, stem_neighbors=p.stem_neighbors)


def _spatial_subset(coord: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
  """The k of `positions` nearest their centroid, ascending: a smaller crop of the view.

  Downsampling by a smaller crop keeps the local point density, so pooled stages shrink as much as for the full
  view; a uniform random subset would thin out surfaces and make later stages overflow their capacities.
  """
  pts = coord[positions].astype(np.float64)
  dist = np.square(pts - pts.mean(0)).sum(1)
  return np.sort(positions[np.argpartition(dist, k - 1)[:k]])


def _fitted_set(view: transforms.Data, positions: np.ndarray, capacity: int, p: spec_lib.BatchSpec, key: str,
                name: str) -> Tuple[np.ndarray, structs.PointSet]:
  """Builds the point set of `view[positions]`, making it fit `capacity`.

  overflow='downsample': more than `capacity` points -> the `capacity` nearest their centroid; a later stage
  overflowing -> shrink the crop in proportion and retry. overflow='error': DataError naming the scene and `key`
  (or `data.stage_ratio` for a stage overflow).

  Returns:
    (positions i32[m] of the view actually used, in slot order; the PointSet).
  """
  positions = np.asarray(positions, dtype=np.int32)
  if len(positions) > capacity:
    if p.overflow == "error":
      raise DataError(f"{name}: a view has {len(positions)} points after grid sampling, more than {key}={capacity}; "
                      f"raise {key}, lower data.crop_ratio, raise data.grid_size, or set data.overflow='downsample'")
    positions = _spatial_subset(view["coord"], positions, capacity)
  full = len(positions) == view["coord"].shape[0]  # positions == arange(n): no need to copy the view
  while True:
    try:
      subset = view if full else transforms.take(view, positions)
      return positions, point_set(subset, capacity, p, name)
    except patches.StageOverflowError as e:
      if p.overflow == "error" or len(positions) <= 1:
        raise
      k = max(1, min(len(positions) - 1, int(len(positions) * 0.95 * e.capacity / e.count)))
      positions = _spatial_subset(view["coord"], positions, k)
      full = False


def _cross_match(scene_coord: np.ndarray, student: structs.PointSet, teacher: structs.PointSet,
                 radius: float) -> Tuple[np.ndarray, np.ndarray]:
  """(cross_index i32[N_s], cross_valid bool[N_s]): nearest teacher point by ORIGINAL (un-augmented) coordinates."""
  n_student = student.point_index.shape[0]
  n_teacher = teacher.point_index.shape[0]
  index = np.full(n_student, n_teacher, dtype=np.int32)
  valid = np.zeros(n_student, dtype=bool)
  t_real = np.flatnonzero(teacher.valid)
  s_real = np.flatnonzero(student.valid)
  # An unbalanced, uncompacted tree builds ~2x faster and queries about as fast for one-off use.
  tree = scipy.spatial.cKDTree(scene_coord[teacher.point_index[t_real]], balanced_tree=False, compact_nodes=False)
  dist, nearest = tree.query(scene_coord[student.point_index[s_real]], distance_upper_bound=radius)
  found = np.isfinite(dist)
  index[s_real[found]] = t_real[nearest[found]]
  valid[s_real[found]] = True
  return index, valid


def train_views(scene, p: spec_lib.BatchSpec, rng: np.random.Generator,
                stats: Optional[dict] = None, step: Optional[int] = None) -> List[structs.TrainView]:
  """One scene -> V TrainView pieces (one per view, padded to the per-view capacities), drawing every random
  choice from `rng`.

  `step`: the training step the views are for; the masking warm-up (`BatchSpec.mask_at`) is evaluated at it.
  None = the final mask ratio and cell (no warm-up).
  `stats` (a dict, optional) accumulates '{teacher,student}_views', '_views_dropped' (views that lost points to
  a per-view capacity), '_points' and '_points_dropped' (student counts under supervision='observable').
  """
  scene = checked_scene(scene)
  name = scene.name
  augment = transforms.build(p.augmentations)
  data = transforms.from_scene(scene)
  # Only what the features need travels through cropping and augmentation.
  data = {k: v for k, v in data.items() if k in ("coord", "point_index", "name") + p.feat_keys}
  crop = p.crop_ratio if p.crop_ratio_max is None else (p.crop_ratio, p.crop_ratio_max)
  views = views_lib.make_views(data, p.num_views, crop, p.grid_size, augment, rng, p.views)
  teachers, teacher_views = [], []
  for view in views:
    kept, teacher = _fitted_set(view, np.arange(view["coord"].shape[0]), p.capacity, p, "data.capacity", name)
    _count_drops(stats, "teacher", view["coord"].shape[0], len(kept))
    teachers.append(teacher)
    teacher_views.append(view if len(kept) == view["coord"].shape[0] else transforms.take(view, kept))
  scene_coord = np.asarray(scene.coord, np.float32)
  n_t, n_s = p.capacity, p.student_set_capacity
  out = []
  mask_ratio, mask_cell = p.mask_at(step)
  for v, view in enumerate(teacher_views):
    # Teacher real slots 0..n-1 hold this view's points in order, so view positions are teacher slots.
    n = view["coord"].shape[0]
    masked = views_lib.block_mask(view["coord"], mask_cell, mask_ratio, rng)
    mask_token = np.zeros(n_s, dtype=bool)
    target_index = np.full(n_s, n_t, dtype=np.int32)
    if p.supervision == "observable":
      used, student = _fitted_set(view, np.flatnonzero(~masked), n_s, p, "data.student_capacity", name)
      _count_drops(stats, "student", int(np.count_nonzero(~masked)), len(used))
      target_valid = student.valid.copy()
    else:
      student_view = view
      if p.supervision == "token_jitter":
        # Masked points' positions are perturbed before the student's grid/serialization/neighbours are built,
        # so the token's location does not give away the exact geometry.
        coord = view["coord"].copy()
        noise = np.clip(p.jitter_sigma * rng.standard_normal((int(masked.sum()), 3)), -p.jitter_clip, p.jitter_clip)
        coord[masked] += noise.astype(np.float32)
        student_view = {**view, "coord": coord}
      used, student = _fitted_set(student_view, np.arange(n), n_s, p, "data.capacity", name)
      mask_token[:len(used)] = masked[used]
      target_valid = mask_token.copy()
    target_index[:len(used)] = used
    if p.num_views > 1:
      cross_index, cross_valid = _cross_match(scene_coord, student, teachers[(v + 1) % p.num_views],
                                              p.cross_radius)
      if p.supervision != "observable":
        # The token baselines supervise masked points only, in the cross-view term too: a visible point's
        # cross-view target would hand the baseline part of the observable supervision.
        cross_valid &= mask_token
        cross_index[~cross_valid] = n_t
    else:
      cross_index, cross_valid = np.full(n_s, n_t, dtype=np.int32), np.zeros(n_s, dtype=bool)
    out.append(structs.TrainView(teacher=teachers[v], student=student, mask_token=mask_token,
                                 target_index=target_index, target_valid=target_valid, cross_index=cross_index,
                                 cross_valid=cross_valid))
  return out


def _count_drops(stats: Optional[dict], branch: str, wanted: int, kept: int) -> None:
  if stats is None:
    return
  for key, value in (("views", 1), ("views_dropped", int(kept < wanted)), ("points_dropped", wanted - kept),
                     ("points", wanted)):
    stats[f"{branch}_{key}"] = stats.get(f"{branch}_{key}", 0) + value


def stack_views(per_scene: List[List[structs.TrainView]]) -> structs.TrainView:
  """[B][V] pieces -> one TrainView with leading axes [B, V], to inspect the views (not a training batch)."""
  b, v = len(per_scene), len(per_scene[0])
  flat = patches.stack_tree([piece for views in per_scene for piece in views])
  return _reshape_leading(flat, (b, v))


def _reshape_leading(tree, shape):
  if tree is None:
    return None
  if isinstance(tree, np.ndarray):
    return tree.reshape(shape + tree.shape[1:])
  if isinstance(tree, tuple):
    return tuple(_reshape_leading(t, shape) for t in tree)
  return type(tree)(**{f.name: _reshape_leading(getattr(tree, f.name), shape) for f in dataclasses.fields(tree)})


def make_train_batch(scenes: Sequence, spec: spec_lib.BatchSpec, rng: np.random.Generator,
                     step: Optional[int] = None) -> structs.TrainBatch:
  """B scenes -> a TrainBatch of B packs, one scene each at its per-view capacities (`spec_lib.default_budgets`;
  scenes processed in order with the one Generator, views keyed 0..V-1 per pack).

  `spec` is the decoded batch spec (`batching.spec.batch_spec(config)` of a validated config); `step` as in
  `train_views`. The training loop's batches come from `pipeline` (one Generator per example, packs filled by
  budget); this is the direct form.
  """
  pack = spec_lib.PackSpec(pack_scenes=1, patch_size=spec.patch_sizes or spec.patch_size, num_views=spec.num_views,
                           **spec_lib.default_budgets(spec, 1))
  return patches.stack_tree([packing.pack_train_views(train_views(s, spec, rng, step=step), pack) for s in scenes])
