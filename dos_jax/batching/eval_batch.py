"""Evaluation batches: one unaugmented, deterministically grid-sampled view per scene, with labels.

Host-side numpy, fixed shapes (`structs.LabeledBatch`); used by the linear probe and the diagnostics.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import scipy.spatial

from dos_jax.batching import patches
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs
from dos_jax.batching import train_views
from dos_jax.data import transforms


def _fit_capacity(num_voxels: int, patch_size: int) -> int:
  """The smallest patch_size * 2^k >= num_voxels: whole scenes fit, and few distinct shapes mean few compiles."""
  cap = patch_size
  while cap < num_voxels:
    cap *= 2
  return cap


def make_labeled_batch(scenes: Sequence, p: spec_lib.BatchSpec, capacity=None,
                       report: Optional[dict] = None) -> Tuple[structs.LabeledBatch, List[np.ndarray]]:
  """Evaluation batch: one unaugmented, deterministically grid-sampled view per scene (leading axis [B]).

  capacity='fit' sizes the stage-0 capacity to hold every voxel of every scene of the batch (a power-of-two
  multiple of the patch size; doubled if a pooled stage would overflow), so nothing is dropped: what the probe
  and feature extraction use. An int (default data.capacity) is a fixed capacity: a scene with more voxels keeps
  a deterministic random subset of them (smaller still if a pooled stage would overflow), and original points
  whose voxel was dropped map to the nearest kept point.

  Args:
    p: the decoded batch spec (`batching.spec.batch_spec(config)` of a validated config).
    report: if given, gets 'dropped_voxels' and 'dropped_points' (ints, summed over the scenes) added to it.

  Returns:
    (LabeledBatch, inverse maps): inverse[i]: i32[n_i] stage-0 slot of every original point of scene i.
  """
  prepared = []
  for scene in scenes:
    scene = train_views.checked_scene(scene)
    data = transforms.center_shift(apply_z=True)(transforms.from_scene(scene), None)
    keep, inverse = transforms.grid_sample(data["coord"], p.grid_size)
    prepared.append((scene, data, keep, inverse))
  fit = capacity == "fit"
  if fit:
    cap = _fit_capacity(max(len(k) for _, _, k, _ in prepared), p.patch_size)
  else:
    cap = int(capacity or p.capacity)
  while True:
    try:
      return _labeled_batch(prepared, p, cap, thin=not fit, report=report)
    except patches.StageOverflowError:
      if not fit:
        raise
      cap *= 2


def _labeled_batch(prepared, p: spec_lib.BatchSpec, cap: int, thin: bool, report: Optional[dict]):
  sets, segments, inverses = [], [], []
  dropped_voxels = dropped_points = 0
  for scene, data, keep, inverse in prepared:
    name = scene.name
    rng = np.random.default_rng(0)  # deterministic: the same scene always gives the same batch
    chosen = np.arange(len(keep))
    if len(keep) > cap:
      chosen = np.sort(rng.choice(len(keep), cap, replace=False))
    while True:
      try:
        point_set = train_views.point_set(transforms.take(data, keep[chosen]), cap, p, name)
        break
      except patches.StageOverflowError as e:
        if len(chosen) <= 1 or not thin:
          raise
        k = max(1, min(len(chosen) - 1, int(len(chosen) * 0.95 * e.capacity / e.count)))
        chosen = np.sort(rng.choice(chosen, k, replace=False))
    if len(chosen) < len(keep):
      slot_of_voxel = np.full(len(keep), -1, dtype=np.int64)
      slot_of_voxel[chosen] = np.arange(len(chosen))
      slot = slot_of_voxel[inverse]
      lost = np.flatnonzero(slot < 0)
      _, nearest = scipy.spatial.cKDTree(data["coord"][keep[chosen]]).query(data["coord"][lost])
      slot[lost] = nearest
      dropped_voxels += len(keep) - len(chosen)
      dropped_points += len(lost)
      keep, inverse = keep[chosen], slot
    sets.append(point_set)
    segment = np.full(cap, -1, dtype=np.int32)
    if scene.segment is not None:
      segment[:len(keep)] = np.asarray(scene.segment)[keep]
    segments.append(segment)
    inverses.append(inverse.astype(np.int32))
  if report is not None:
    report["dropped_voxels"] = report.get("dropped_voxels", 0) + dropped_voxels
    report["dropped_points"] = report.get("dropped_points", 0) + dropped_points
  batch = structs.LabeledBatch(points=patches.stack_point_sets(sets), segment=np.stack(segments))
  return batch, inverses
