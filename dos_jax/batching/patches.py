"""Padding a grid-sampled point set into the fixed-shape `structs.PointSet`: stages, orders, neighbours, pooling.

All host-side and numpy. The input is one view (or one scene) already grid-sampled to one point per voxel; the
output has static shapes that depend only on (capacity, num_stages, patch_size, ratio, C_in), so one compiled
device function serves every batch of a config.

Stage capacities: N_0 = capacity, and each later stage gets about `ratio` times the previous one, rounded up to a
multiple of that stage's patch size min(patch_size, N_s) (see `stage_capacities`). Grid pooling with stride 2 maps
a surface-like cloud to roughly 1/4 of its voxels and a volume to 1/8, so ratio=0.5 leaves ample headroom for
scans; a degenerate cloud (e.g. isolated points, a line) can still overflow a later stage, which raises a
`DataError` asking for a larger `data.stage_ratio` (1.0 never overflows).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dos_jax.batching import serialization
from dos_jax.batching import structs
from dos_jax.errors import ConfigError, DataError

# Above this many cells the neighbour lookup uses a sorted key table instead of a dense voxel array.
_DENSE_LOOKUP_MAX_CELLS = 1 << 22
# Linear voxel keys are exact only while the product of the grid extents fits in int64 (checked in Python ints);
# beyond it (e.g. two clusters 1e5 m apart at 0.1 m voxels) they would wrap around and collide.
_MAX_LINEAR_KEYS = 1 << 62


class StageOverflowError(DataError):
  """A pooled stage has more voxels than its capacity (`count` > `capacity` at `stage`)."""

  def __init__(self, message: str, stage: int, count: int, capacity: int):
    super().__init__(message)
    self.stage, self.count, self.capacity = stage, count, capacity


def stage_capacities(capacity: int, num_stages: int, patch_size: int, ratio: float = 0.5) -> List[int]:
  """Per-stage capacities N_s of a point set.

  N_0 = capacity (which must be a multiple of min(patch_size, capacity)); for s >= 1,
  raw = max(1, ceil(ratio * N_{s-1})) and N_s = raw if raw <= patch_size (the whole stage is one patch), else raw
  rounded up to a multiple of patch_size. So every N_s is a multiple of its stage's patch size min(patch_size, N_s).

  Args:
    capacity: stage-0 capacity (`data.capacity` or `data.student_capacity`).
    num_stages: number of encoder stages (len(channels) of the model variant).
    patch_size: attention patch size of the model variant.
    ratio: capacity ratio between consecutive stages, in (0, 1].

  Returns:
    [N_0, ..., N_{S-1}].
  """
  if capacity < 1 or patch_size < 1 or num_stages < 1:
    raise ConfigError(f"capacity={capacity}, patch_size={patch_size}, num_stages={num_stages} must all be >= 1")
  if not 0.0 < ratio <= 1.0:
    raise ConfigError(f"data.stage_ratio={ratio}: expected a value in (0, 1]")
  if capacity % min(patch_size, capacity):
    raise ConfigError(f"capacity {capacity} (data.capacity / data.student_capacity) must be a multiple of the "
                      f"model's patch size {patch_size}")
  caps = [int(capacity)]
  for _ in range(1, num_stages):
    raw = max(1, int(math.ceil(ratio * caps[-1])))
    if raw > patch_size:
      raw = int(math.ceil(raw / patch_size)) * patch_size
    caps.append(raw)
  return caps


def stage_patch_sizes(capacities: Sequence[int], patch_size: int) -> List[int]:
  """Patch size actually used at each stage: min(patch_size, N_s) (divides N_s by construction)."""
  return [min(patch_size, n) for n in capacities]


def voxelize(coord: np.ndarray, grid_size: float) -> np.ndarray:
  """Voxel index of each point: floor(coord / grid_size) as i64[n, 3] (the one formula used everywhere)."""
  return np.floor(np.asarray(coord, np.float64) / grid_size).astype(np.int64)


def _bounds(x: np.ndarray):
  """(min, max) over axis 0 of x[n, 3]: reduce a contiguous transposed copy (numpy's axis-0 reduction of a
  narrow array is ~100x slower)."""
  xt = np.ascontiguousarray(x.T)
  return xt.min(1), xt.max(1)


def _keys_fit(extent: np.ndarray) -> bool:
  """Whether linear keys over a box of `extent` (i64[3]) fit in int64 without wrapping."""
  return math.prod(int(e) for e in extent) < _MAX_LINEAR_KEYS


def _axis_ranks(grid: np.ndarray) -> np.ndarray:
  """i64[n, 3] rank of each coordinate among the distinct values of its axis: monotone per axis, < n."""
  return np.stack([np.unique(grid[:, a], return_inverse=True)[1].reshape(-1) for a in range(3)], axis=1)


def _cell_keys(grid: np.ndarray, extent: np.ndarray, margin: int = 1) -> np.ndarray:
  """Scalar key of each voxel of `grid: i64[n, 3]` (with a `margin`-voxel margin, so offsets up to it never
  alias)."""
  g = grid + margin
  return (g[:, 0] * extent[1] + g[:, 1]) * extent[2] + g[:, 2]


def _neighbors(grid: np.ndarray, capacity: int, offsets: np.ndarray = structs.NEIGHBOR_OFFSETS) -> np.ndarray:
  """i32[capacity, K] slot of the real point at grid + offsets[k], `capacity` where none (K = len(offsets)).

  `grid: i64[n, 3]` holds the real points in slots 0..n-1. If two points share a voxel (possible only when the
  caller passes non-grid-sampled input), lookups return one of them; the centre entry (offset 0: 13 of 27) is
  always the point itself.
  """
  n = grid.shape[0]
  num = len(offsets)
  center = num // 2
  margin = int(np.abs(offsets).max())
  out = np.empty((capacity, num), dtype=np.int32)
  out[n:] = capacity
  extent = _bounds(grid)[1] + 1 + 2 * margin
  if not _keys_fit(extent):
    _sparse_neighbors(grid, capacity, out[:n], offsets)
    return out
  keys = _cell_keys(grid, extent, margin)
  offsets = np.asarray(offsets, np.int64)
  offset_keys = (offsets[:, 0] * extent[1] + offsets[:, 1]) * extent[2] + offsets[:, 2]
  query = keys[:, None] + offset_keys[None, :]  # [n, 27]; in range thanks to the margin
  slots = np.arange(n, dtype=np.int32)
  num_cells = int(np.prod(extent))
  if num_cells <= _DENSE_LOOKUP_MAX_CELLS:
    table = np.full(num_cells, capacity, dtype=np.int32)
    table[keys] = slots
    np.take(table, query, out=out[:n])
  else:
    sort = np.argsort(keys, kind="stable")
    sorted_keys = keys[sort]
    pos = np.searchsorted(sorted_keys, query).clip(0, n - 1)
    out[:n] = np.where(sorted_keys[pos] == query, sort[pos].astype(np.int32), capacity)
  out[:n, center] = slots
  return out


def _sparse_neighbors(grid: np.ndarray, capacity: int, out: np.ndarray, offsets: np.ndarray) -> None:
  """`_neighbors` for grids too large for linear keys, written into out: i32[n, K].

  Keys are built from per-axis ranks of the occupied values (< n each); a neighbour whose value on some axis is
  not occupied by any point cannot exist.
  """
  n = grid.shape[0]
  values = [np.unique(grid[:, a]) for a in range(3)]
  sizes = [len(v) for v in values]

  def rank(a, x):
    r = np.searchsorted(values[a], x).clip(0, sizes[a] - 1)
    return np.where(values[a][r] == x, r, -1)

  def key(r):
    return (r[0] * sizes[1] + r[1]) * sizes[2] + r[2]

  keys = key([rank(a, grid[:, a]) for a in range(3)])
  sort = np.argsort(keys, kind="stable")
  sorted_keys = keys[sort]
  for k, offset in enumerate(offsets):
    r = [rank(a, grid[:, a] + offset[a]) for a in range(3)]
    query = key(r)
    pos = np.searchsorted(sorted_keys, query).clip(0, n - 1)
    found = (r[0] >= 0) & (r[1] >= 0) & (r[2] >= 0) & (sorted_keys[pos] == query)
    out[:, k] = np.where(found, sort[pos], capacity)
  out[:, len(offsets) // 2] = np.arange(n, dtype=np.int32)


def _orders(grid: np.ndarray, capacity: int, depth: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(order, inverse), both i32[len(ORDERS), capacity]: real slots in ascending code, then the padded slots.

  `depth`: bits per axis of the codes; None = `serialization.required_depth(grid)` (upstream PT-v3m2 recomputes
  it at every stage); PT-v3m1 inherits stage 0's depth minus one per pooling (`build_point_set(depth_rule=...)`).
  The Hilbert codes depend on it.
  """
  n = grid.shape[0]
  if depth is None:
    depth = serialization.required_depth(grid)
  if depth > serialization.MAX_DEPTH:
    # Codes have 21 bits per axis: a wider grid is encoded by its per-axis ranks instead (monotone along each
    # axis, so the curves keep their order; empty space between far clusters collapses). Truncating the bits
    # would make distinct voxels share codes and interleave far-apart clusters.
    grid = _axis_ranks(grid)
    depth = serialization.required_depth(grid)
  order = np.empty((len(structs.ORDERS), capacity), dtype=np.int32)
  pad = np.arange(n, capacity, dtype=np.int32)
  codes = serialization.encode_all(grid, depth)
  for o, name in enumerate(structs.ORDERS):
    code = codes[name]
    # Codes of distinct voxels are distinct, so a stable sort (3x slower) is not needed.
    order[o, :n] = np.argsort(code)
    order[o, n:] = pad
  inverse = np.empty_like(order)
  rows = np.arange(len(structs.ORDERS))[:, None]
  inverse[rows, order] = np.arange(capacity, dtype=np.int32)[None, :]
  return order, inverse


def _pool(grid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Grid pooling with stride 2: (coarse grid i64[m, 3] of the unique parent voxels, parent slot i64[n])."""
  coarse = grid // 2
  extent = _bounds(coarse)[1] + 3
  if _keys_fit(extent):
    _, first, parent = np.unique(_cell_keys(coarse, extent), return_index=True, return_inverse=True)
  else:  # the same lexicographic order as the linear keys, without their int64 overflow
    _, first, parent = np.unique(coarse, axis=0, return_index=True, return_inverse=True)
  return coarse[first], parent.reshape(-1)


def stage_counts(grid: np.ndarray, num_stages: int) -> List[int]:
  """Real points per stage of a grid-sampled cloud (`grid: int[n, 3]` one point per voxel): n, then the number of
  distinct parent voxels after each stride-2 pooling. Exact capacities for a one-cloud, unpadded point set."""
  counts = [int(len(grid))]
  g = np.asarray(grid, np.int64)
  for _ in range(1, num_stages):
    g = _pool(g)[0]
    counts.append(int(len(g)))
  return counts


def build_point_set(coord: np.ndarray, feat: np.ndarray, point_index: np.ndarray, grid_size: float, capacity: int,
                    num_stages: int, patch_size: int, name: str = "", ratio: float = 0.5, *,
                    grid: Optional[np.ndarray] = None, capacities: Optional[Sequence[int]] = None,
                    depth_rule: str = "recompute", stem_neighbors: bool = False) -> structs.PointSet:
  """Pads one grid-sampled point set into a `PointSet` (unbatched).

  Real stage-0 points occupy slots 0..n-1 in input order; real points of stage s+1 occupy slots 0..n_{s+1}-1 in
  ascending order of their coarse voxel. Stage-0 grid coordinates are floor(coord / grid_size) shifted so the
  minimum is 0 (or `grid` as given); stage s+1 is grid_s // 2.

  Args:
    coord: f32[n, 3] coordinates in metres, one point per voxel of size `grid_size`.
    feat: f32[n, C] input features.
    point_index: i32[n] original scene index of each point.
    grid_size: voxel size in metres (`data.grid_size`).
    capacity: stage-0 capacity N (>= n).
    num_stages: number of stages S.
    patch_size: the model's attention patch size (capacities are padded to multiples of it).
    name: scene name used in error messages.
    ratio: stage capacity ratio (see `stage_capacities`).
    grid: optional int[n, 3] non-negative stage-0 voxel coordinates to use as they are (e.g. Pointcept's
      `GridSample` output `grid_coord`), instead of voxelizing `coord`.
    capacities: optional explicit per-stage capacities (e.g. `stage_counts`: no padding at all), instead of
      `stage_capacities(capacity, ...)`; need not be multiples of the patch size (attention pads internally).
    depth_rule: serialization depth per stage: 'recompute' (upstream PT-v3m2 and dos: `required_depth` of each
      stage's grid) or 'inherit' (upstream PT-v3m1: stage 0's depth minus one per pooling, its codes being the
      children's codes shifted by 3 bits).
    stem_neighbors: also build the 5x5x5 stage-0 neighbour table (`PointSet.stem_neighbors`, PT-v3m1's stem).

  Returns:
    A `structs.PointSet` of numpy arrays with static shapes.

  Raises:
    DataError: n == 0 or n > capacity; StageOverflowError (a DataError) when a pooled stage exceeds its capacity.
  """
  label = name or "<unnamed scene>"
  coord = np.asarray(coord, dtype=np.float32)
  feat = np.asarray(feat, dtype=np.float32)
  point_index = np.asarray(point_index, dtype=np.int32)
  n = coord.shape[0]
  if coord.ndim != 2 or coord.shape[1] != 3 or feat.ndim != 2 or feat.shape[0] != n or point_index.shape != (n,):
    raise DataError(f"{label}: expected coord [n, 3], feat [n, C], point_index [n]; got {coord.shape}, "
                    f"{feat.shape}, {point_index.shape}")
  if n == 0:
    raise DataError(f"{label}: the point set is empty (no points left after cropping/masking/grid sampling)")
  if n > capacity:
    raise DataError(f"{label}: {n} points exceed the capacity {capacity}; downsample first "
                    f"(data.overflow='downsample') or raise data.capacity / data.student_capacity")
  if not np.all(np.isfinite(coord)):
    raise DataError(f"{label}: non-finite coordinates")
  if depth_rule not in ("recompute", "inherit"):
    raise ValueError(f"depth_rule={depth_rule!r}: expected 'recompute' or 'inherit'")
  if capacities is None:
    caps = stage_capacities(capacity, num_stages, patch_size, ratio)
  else:
    caps = [int(c) for c in capacities]
    if len(caps) != num_stages or caps[0] != capacity:
      raise ValueError(f"capacities {caps}: expected {num_stages} entries starting with capacity {capacity}")

  if grid is None:
    grid = voxelize(coord, grid_size)
    grid -= _bounds(grid)[0]
  else:
    grid = np.asarray(grid, np.int64)
    if grid.shape != (n, 3) or (n and grid.min() < 0):
      raise DataError(f"{label}: grid must be non-negative int [n, 3] = [{n}, 3], got shape {grid.shape}")
  depth = serialization.required_depth(grid)
  stages = []
  parents = []
  for s, cap in enumerate(caps):
    n_s = grid.shape[0]
    if n_s > cap:
      raise StageOverflowError(
          f"{label}: stage {s} has {n_s} pooled voxels but capacity {cap} (stage capacities {caps}); raise "
          f"data.stage_ratio (now {ratio}, at most 1.0) or data.grid_size", stage=s, count=n_s, capacity=cap)
    padded_grid = np.zeros((cap, 3), dtype=np.int32)
    padded_grid[:n_s] = grid
    valid = np.zeros(cap, dtype=bool)
    valid[:n_s] = True
    order, inverse = _orders(grid, cap, max(1, depth - s) if depth_rule == "inherit" else None)
    stages.append(structs.Stage(grid=padded_grid, valid=valid, order=order, inverse=inverse,
                                neighbors=_neighbors(grid, cap)))
    if s == 0 and stem_neighbors:
      stem = _neighbors(grid, cap, structs.STEM_OFFSETS)
    if s + 1 < len(caps):
      grid, parent_real = _pool(grid)
      parent = np.full(cap, caps[s + 1], dtype=np.int32)
      parent[:n_s] = parent_real
      parents.append(parent)

  pad_coord = np.zeros((capacity, 3), dtype=np.float32)
  pad_coord[:n] = coord
  pad_feat = np.zeros((capacity, feat.shape[1]), dtype=np.float32)
  pad_feat[:n] = feat
  pad_index = np.full(capacity, -1, dtype=np.int32)
  pad_index[:n] = point_index
  return structs.PointSet(coord=pad_coord, feat=pad_feat, stages=tuple(stages), parent=tuple(parents),
                          point_index=pad_index, stem_neighbors=stem if stem_neighbors else None)


def _stack(items):
  """Stacks a list of equal-structure pytrees of numpy arrays (dataclasses, tuples, arrays) along a new axis 0."""
  first = items[0]
  if first is None:  # optional fields (Stage.segment of an unpacked set, PointSet.stem_neighbors)
    return None
  if isinstance(first, np.ndarray):
    return np.stack(items)
  if isinstance(first, tuple):
    return tuple(_stack([it[i] for it in items]) for i in range(len(first)))
  if dataclasses.is_dataclass(first):
    return type(first)(**{f.name: _stack([getattr(it, f.name) for it in items]) for f in dataclasses.fields(first)})
  raise TypeError(f"cannot stack {type(first)}")


def stack_point_sets(sets: Sequence[structs.PointSet]) -> structs.PointSet:
  """Stacks point sets of identical shapes along a new leading axis (call twice for [B, V])."""
  if not sets:
    raise ValueError("stack_point_sets needs at least one PointSet")
  return _stack(list(sets))


def stack_tree(items):
  """Stacks any equal-structure pytrees of numpy arrays (e.g. TrainBatch pieces) along a new axis 0."""
  return _stack(list(items))
