"""Scenes -> fixed-shape batches: training views with masks and matches, evaluation batches, a prefetching iterator.

Everything is host-side numpy. Shapes depend only on the config (capacities, stage count and patch size of the
model variant, feature channels, batch size, views), never on the data, so one compiled step serves every batch.

Config keys read (all under `cfg.data` unless noted): grid_size, capacity, student_capacity, num_views, crop_ratio,
mask_cell, overflow (downsample | error), feat_keys, kind (augmentation defaults), and, when present (absent,
None or 0 -> the default in brackets), views [duplicate], augmentations (a list of (op name, kwargs), see
`dos_jax.data.transforms`; [default_augmentations(kind)]), stage_ratio [0.5], cross_radius [2 * grid_size],
token_jitter_sigma [0.01 m] and token_jitter_clip [0.02 m] (absent or None only); top level: seed, batch_size, mask_ratio, supervision,
model.variant.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import pickle
from typing import List, Optional, Sequence, Tuple

import numpy as np
import scipy.spatial

from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.data import scene as scene_lib
from dos_jax.data import transforms
from dos_jax.data import views as views_lib
from dos_jax.errors import ConfigError, DataError
from dos_jax.models import variants

# Channels contributed by each entry of data.feat_keys, concatenated in the listed order.
FEATURE_DIMS = {"coord": 3, "color": 3, "normal": 3, "strength": 1}
SUPERVISION = ("observable", "masked_tokens", "token_jitter")
OVERFLOW = ("downsample", "error")
# Token jitter of the masked-token baseline (Sonata's): N(0, sigma^2) per axis, clipped to +-clip, in metres.
JITTER_SIGMA = 0.01
JITTER_CLIP = 0.02


@dataclasses.dataclass(frozen=True)
class Params:
  """The batching parameters decoded (and validated) from a config once."""
  grid_size: float
  capacity: int
  student_capacity: int
  num_views: int
  crop_ratio: float
  mask_cell: float
  mask_ratio: float
  supervision: str
  overflow: str
  feat_keys: Tuple[str, ...]
  num_stages: int
  patch_size: int
  stage_ratio: float
  cross_radius: float
  jitter_sigma: float
  jitter_clip: float
  views: str
  augmentations: tuple

  @property
  def feat_dim(self) -> int:
    return sum(FEATURE_DIMS[k] for k in self.feat_keys)

  @property
  def student_set_capacity(self) -> int:
    """Stage-0 capacity of the student set: visible points only, or the full view under the token variants."""
    return self.student_capacity if self.supervision == "observable" else self.capacity


def params_from_config(cfg) -> Params:
  """Decodes and validates the batching parameters of a config (raises ConfigError naming the key)."""
  d = cfg.data
  variant = variants.decode_variant(cfg.model.variant)
  grid = float(d.grid_size)
  p = Params(
      grid_size=grid, capacity=int(d.capacity), student_capacity=int(d.student_capacity),
      num_views=int(d.num_views), crop_ratio=float(d.crop_ratio), mask_cell=float(d.mask_cell),
      mask_ratio=float(cfg.mask_ratio), supervision=str(cfg.supervision), overflow=str(d.overflow),
      feat_keys=tuple(d.feat_keys), num_stages=len(variant["channels"]), patch_size=int(variant["patch_size"]),
      stage_ratio=float(d.get("stage_ratio", None) or 0.5),
      cross_radius=float(d.get("cross_radius", None) or 2.0 * grid),
      jitter_sigma=float(_or_default(d.get("token_jitter_sigma", None), JITTER_SIGMA)),
      jitter_clip=float(_or_default(d.get("token_jitter_clip", None), JITTER_CLIP)),
      views=str(d.get("views", None) or "duplicate"),
      augmentations=tuple(d.get("augmentations", None) or transforms.default_augmentations(d.kind)))
  checks = [
      (p.grid_size > 0, "data.grid_size", "> 0 (metres)"),
      (p.mask_cell > 0, "data.mask_cell", "> 0 (metres)"),
      (0 < p.crop_ratio <= 1, "data.crop_ratio", "in (0, 1]"),
      (0 <= p.mask_ratio < 1, "mask_ratio", "in [0, 1)"),
      (p.num_views >= 1, "data.num_views", ">= 1"),
      (p.supervision in SUPERVISION, "supervision", f"one of {SUPERVISION}"),
      (p.overflow in OVERFLOW, "data.overflow", f"one of {OVERFLOW}"),
      (p.jitter_sigma >= 0 and p.jitter_clip > 0, "data.token_jitter_sigma",
       ">= 0 with data.token_jitter_clip > 0 (metres)"),
      (p.views in views_lib.VIEW_MODES, "data.views", f"one of {views_lib.VIEW_MODES}"),
      (all(k in FEATURE_DIMS for k in p.feat_keys) and p.feat_keys, "data.feat_keys",
       f"a non-empty subset of {tuple(FEATURE_DIMS)}"),
  ]
  for ok, key, want in checks:
    if not ok:
      raise ConfigError(f"config.{key}={_get(cfg, key)!r}: expected {want}")
  patches.stage_capacities(p.capacity, p.num_stages, p.patch_size, p.stage_ratio)
  patches.stage_capacities(p.student_set_capacity, p.num_stages, p.patch_size, p.stage_ratio)
  transforms.build(p.augmentations)  # ConfigError for bad op names/parameters now, not in the first batch
  return p


def _or_default(value, default):
  return default if value is None else value


def _get(cfg, dotted):
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg


def features(view: transforms.Data, feat_keys: Sequence[str]) -> np.ndarray:
  """f32[n, C] input features: the listed per-point arrays concatenated; missing normal/strength -> zeros."""
  n = view["coord"].shape[0]
  cols = []
  for key in feat_keys:
    value = view.get(key)
    if value is None:
      value = np.zeros((n, FEATURE_DIMS[key]), np.float32)
    cols.append(np.asarray(value, np.float32).reshape(n, FEATURE_DIMS[key]))
  return np.concatenate(cols, axis=1)


def _checked_scene(scene) -> scene_lib.Scene:
  """The scene validated, with canonical dtypes and a name for messages.

  Sources validate what they read, but scenes built in memory reach the batching directly: without this, NaN
  colours or normals became NaN features (every step then skipped as non-finite) and wrong shapes failed deep
  inside numpy. Raises DataError naming the scene (empty cloud, NaN/inf, wrong shape/dtype, length mismatch...).
  """
  if not isinstance(scene, scene_lib.Scene):
    raise DataError(f"<scene>: expected a dos_jax.data.Scene, got {type(scene).__name__}")
  return scene_lib.validate_scene(scene, name=scene.name or "<unnamed scene>")


def _point_set(view: transforms.Data, capacity: int, p: Params, name: str) -> structs.PointSet:
  return patches.build_point_set(view["coord"], features(view, p.feat_keys), view["point_index"], p.grid_size,
                                 capacity, p.num_stages, p.patch_size, name=name, ratio=p.stage_ratio)


def _spatial_subset(coord: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
  """The k of `positions` nearest their centroid, ascending: a smaller crop of the view.

  Downsampling by a smaller crop keeps the local point density, so pooled stages shrink as much as for the full
  view; a uniform random subset would thin out surfaces and make later stages overflow their capacities.
  """
  pts = coord[positions].astype(np.float64)
  dist = np.square(pts - pts.mean(0)).sum(1)
  return np.sort(positions[np.argpartition(dist, k - 1)[:k]])


def _fitted_set(view: transforms.Data, positions: np.ndarray, capacity: int, p: Params, key: str,
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
      return positions, _point_set(subset, capacity, p, name)
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


def make_train_example(scene, cfg, rng: np.random.Generator, params: Optional[Params] = None) -> structs.TrainBatch:
  """One scene -> a TrainBatch with leading axis [V] (see `structs.TrainBatch`)."""
  return patches.stack_tree(_train_views(scene, params or params_from_config(cfg), rng))


def _train_views(scene, p: Params, rng: np.random.Generator) -> List[structs.TrainBatch]:
  """One scene -> V unbatched TrainBatch pieces (one per view)."""
  scene = _checked_scene(scene)
  name = scene.name
  augment = transforms.build(p.augmentations)
  data = transforms.from_scene(scene)
  # Only what the features need travels through cropping and augmentation.
  data = {k: v for k, v in data.items() if k in ("coord", "point_index", "name") + p.feat_keys}
  views = views_lib.make_views(data, p.num_views, p.crop_ratio, p.grid_size, augment, rng, p.views)
  teachers, teacher_views = [], []
  for view in views:
    kept, teacher = _fitted_set(view, np.arange(view["coord"].shape[0]), p.capacity, p, "data.capacity", name)
    teachers.append(teacher)
    teacher_views.append(view if len(kept) == view["coord"].shape[0] else transforms.take(view, kept))
  scene_coord = np.asarray(scene.coord, np.float32)
  n_t, n_s = p.capacity, p.student_set_capacity
  out = []
  for v, view in enumerate(teacher_views):
    # Teacher real slots 0..n-1 hold this view's points in order, so view positions are teacher slots.
    n = view["coord"].shape[0]
    masked = views_lib.block_mask(view["coord"], p.mask_cell, p.mask_ratio, rng)
    mask_token = np.zeros(n_s, dtype=bool)
    target_index = np.full(n_s, n_t, dtype=np.int32)
    if p.supervision == "observable":
      used, student = _fitted_set(view, np.flatnonzero(~masked), n_s, p, "data.student_capacity", name)
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
    out.append(structs.TrainBatch(teacher=teachers[v], student=student, mask_token=mask_token,
                                  target_index=target_index, target_valid=target_valid, cross_index=cross_index,
                                  cross_valid=cross_valid))
  return out


def _stack_batch(per_scene: List[List[structs.TrainBatch]]) -> structs.TrainBatch:
  """[B][V] pieces -> one TrainBatch with leading axes [B, V] (a single copy of every array)."""
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


def make_train_batch(scenes: Sequence, cfg, rng: np.random.Generator) -> structs.TrainBatch:
  """B scenes -> a TrainBatch with leading axes [B, V] (scenes processed in order with the one Generator)."""
  p = params_from_config(cfg)
  return _stack_batch([_train_views(s, p, rng) for s in scenes])


def _fit_capacity(num_voxels: int, patch_size: int) -> int:
  """The smallest patch_size * 2^k >= num_voxels: whole scenes fit, and few distinct shapes mean few compiles."""
  cap = patch_size
  while cap < num_voxels:
    cap *= 2
  return cap


def make_labeled_batch(scenes: Sequence, cfg, capacity=None,
                       report: Optional[dict] = None) -> Tuple[structs.LabeledBatch, List[np.ndarray]]:
  """Evaluation batch: one unaugmented, deterministically grid-sampled view per scene (leading axis [B]).

  capacity='fit' sizes the stage-0 capacity to hold every voxel of every scene of the batch (a power-of-two
  multiple of the patch size; doubled if a pooled stage would overflow), so nothing is dropped: what the probe
  and feature extraction use. An int (default data.capacity) is a fixed capacity: a scene with more voxels keeps
  a deterministic random subset of them (smaller still if a pooled stage would overflow), and original points
  whose voxel was dropped map to the nearest kept point.

  Args:
    report: if given, gets 'dropped_voxels' and 'dropped_points' (ints, summed over the scenes) added to it.

  Returns:
    (LabeledBatch, inverse maps): inverse[i]: i32[n_i] stage-0 slot of every original point of scene i.
  """
  p = params_from_config(cfg)
  prepared = []
  for scene in scenes:
    scene = _checked_scene(scene)
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


def _labeled_batch(prepared, p: Params, cap: int, thin: bool, report: Optional[dict]):
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
        point_set = _point_set(transforms.take(data, keep[chosen]), cap, p, name)
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


def step_rng(seed: int, step: int, process_index: int = 0) -> np.random.Generator:
  """The augmentation/masking Generator of a step on a host: seeded from (seed, step, host) only."""
  return np.random.default_rng([int(seed), 1, int(step), int(process_index)])


def scene_indices(num_scenes: int, batch_size: int, seed: int, step: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
  """Indices into the source of the scenes of `step` on this host: its shard (i % process_count == host) is
  visited in epochs, each a fresh permutation seeded from (seed, epoch, host); a pure function of its args."""
  shard = np.arange(process_index, num_scenes, process_count)
  if len(shard) == 0:
    raise DataError(f"host {process_index} of {process_count} has no scenes (only {num_scenes} in the source)")
  positions = step * batch_size + np.arange(batch_size)
  out = np.empty(batch_size, dtype=np.int64)
  for epoch in np.unique(positions // len(shard)):
    perm = np.random.default_rng([int(seed), 0, int(epoch), int(process_index)]).permutation(len(shard))
    sel = positions // len(shard) == epoch
    out[sel] = shard[perm[positions[sel] % len(shard)]]
  return out


# Per-process state of the 'process' backend, set once by `_init_worker` (so cfg and source are pickled once per
# worker, not once per batch).
_WORKER = {}


def _init_worker(cfg, source, process_index, process_count):
  _WORKER.update(cfg=cfg, params=params_from_config(cfg), source=source, process_index=process_index,
                 process_count=process_count)


def _worker_batch(step: int) -> structs.TrainBatch:
  w = _WORKER
  return build_step_batch(w["cfg"], w["params"], w["source"], step, w["process_index"], w["process_count"])


def build_step_batch(cfg, params: Params, source: Sequence, step: int, process_index: int = 0,
                     process_count: int = 1) -> structs.TrainBatch:
  """The batch of `step` on host `process_index`: a pure function of (cfg, source, step, host)."""
  local_batch = cfg.batch_size // process_count
  idx = scene_indices(len(source), local_batch, cfg.seed, step, process_index, process_count)
  scenes = [source[int(i)] for i in idx]
  rng = step_rng(cfg.seed, step, process_index)
  return _stack_batch([_train_views(s, params, rng) for s in scenes])


class TrainIterator:
  """Iterator of TrainBatch, prefetched in background threads in step order.

  The batch at step t is a pure function of (cfg, source, t, process_index): resuming at `start_step=t`
  reproduces the data exactly, so there is no iterator state to checkpoint. Each host builds
  cfg.batch_size // process_count scenes per step from its own shard of the source.
  """

  def __init__(self, cfg, source: Sequence, start_step: int = 0, num_workers: Optional[int] = None,
               prefetch: Optional[int] = None, process_index: int = 0, process_count: int = 1,
               backend: Optional[str] = None):
    """Args:
      cfg: the experiment config.
      source: a Sequence of Scenes (e.g. `dos_jax.data.scene_source(cfg.data, 'train')`).
      start_step: step of the first batch (resume).
      num_workers: background workers (default data.num_workers); 0 builds batches synchronously in next().
      prefetch: batches built ahead (default data.prefetch).
      process_index, process_count: this host and the number of hosts (each reads its own shard of scenes).
      backend: 'thread' (default; data.worker_backend when set) or 'process' (separate processes, no GIL
        contention; cfg and source must be picklable, each worker imports dos_jax once at start).
    """
    self._cfg = cfg
    self._params = params_from_config(cfg)
    self._source = source
    if cfg.batch_size % process_count:
      raise ConfigError(f"config.batch_size={cfg.batch_size} must be divisible by the process count {process_count}")
    self._process_index, self._process_count = process_index, process_count
    self._step = int(start_step)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    self._prefetch = max(1, cfg.data.prefetch if prefetch is None else prefetch)
    backend = backend or cfg.data.get("worker_backend", None) or "thread"
    if backend not in ("thread", "process"):
      raise ConfigError(f"config.data.worker_backend={backend!r}: expected 'thread' or 'process'")
    self._backend = backend
    self._pool = None
    if workers > 0 and backend == "thread":
      self._pool = concurrent.futures.ThreadPoolExecutor(workers, "dos-batch")
    elif workers > 0:
      try:
        pickle.dumps(source)
      except Exception as e:  # pickle raises several types (PicklingError, AttributeError, TypeError)
        raise ConfigError(f"config.data.worker_backend='process' needs a picklable scene source ({e}); use "
                          "'thread'") from e
      # 'spawn': forking a process that has started JAX (threads) is unsafe.
      self._pool = concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
          initargs=(cfg, source, process_index, process_count))
    self._futures = {}

  @property
  def step(self) -> int:
    """The step of the next batch `next()` returns."""
    return self._step

  def batch_at(self, step: int) -> structs.TrainBatch:
    """The batch of `step` (pure; what the iterator yields at that step)."""
    return build_step_batch(self._cfg, self._params, self._source, step, self._process_index, self._process_count)

  def __iter__(self):
    return self

  def __next__(self) -> structs.TrainBatch:
    if self._pool is None:
      batch = self.batch_at(self._step)
    else:
      for t in range(self._step, self._step + self._prefetch):
        if t not in self._futures:
          fn = self.batch_at if self._backend == "thread" else _worker_batch
          self._futures[t] = self._pool.submit(fn, t)
      batch = self._futures.pop(self._step).result()
    self._step += 1
    return batch

  def close(self):
    """Cancels pending work and stops the threads."""
    for f in self._futures.values():
      f.cancel()
    self._futures.clear()
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
