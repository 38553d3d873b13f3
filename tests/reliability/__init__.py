"""Reliability tests: fuzzed input path and numerical guards.

Helpers here check the batch contract of `dos_jax.batching.structs` from first principles (independently of how
the pipeline builds it) and make the fuzzers' raw inputs (extreme geometries, label arrays, corrupt files).
"""

import contextlib
import dataclasses
import os
import signal

import numpy as np

from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.data import scene as scene_lib
from tests.batching import leaves


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
  """Fails with TimeoutError when the body runs longer than `seconds` (a hang guard; main thread, POSIX only)."""

  def handler(signum, frame):
    del signum, frame
    raise TimeoutError(f"{what} took more than {seconds} s (a hang?)")

  old = signal.signal(signal.SIGALRM, handler)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def signature(tree):
  """{path: (shape, dtype)}: what must not depend on the data."""
  return {path: (arr.shape, arr.dtype) for path, arr in leaves(tree)}


def index(tree, *idx):
  """The element `tree[idx]` of every leaf (e.g. one scene/view of a batch)."""
  if tree is None:
    return None
  if isinstance(tree, np.ndarray):
    return tree[idx]
  if isinstance(tree, tuple):
    return tuple(index(t, *idx) for t in tree)
  return type(tree)(**{f.name: index(getattr(tree, f.name), *idx) for f in dataclasses.fields(tree)})


def _rows(a):
  """Each row of an int[m, 3] array as one opaque value (for set membership of voxels)."""
  return np.ascontiguousarray(a, dtype=np.int64).view(np.dtype((np.void, 24))).ravel()


def check_point_set(ps: structs.PointSet, capacities, feat_dim: int, num_source_points: int, where: str,
                    duplicate_voxels: bool = False):
  """Asserts every documented invariant of one unbatched PointSet.

  Args:
    ps: the point set.
    capacities: expected per-stage capacities [N_0, ..., N_{S-1}] (from the config, not from `ps`).
    feat_dim: expected C_in.
    num_source_points: points of the scene it came from (point_index range).
    where: prefix for assertion messages.
    duplicate_voxels: stage-0 points may share a voxel (the token_jitter student: jitter after grid sampling).
  """
  n0 = capacities[0]
  assert ps.coord.shape == (n0, 3) and ps.coord.dtype == np.float32, where
  assert ps.feat.shape == (n0, feat_dim) and ps.feat.dtype == np.float32, where
  assert np.isfinite(ps.coord).all() and np.isfinite(ps.feat).all(), f"{where}: NaN/inf in coord or feat"
  assert len(ps.stages) == len(capacities) and len(ps.parent) == len(capacities) - 1, where
  valid0 = ps.stages[0].valid
  real = int(valid0.sum())
  assert real >= 1, f"{where}: no real point"
  assert (ps.coord[~valid0] == 0).all() and (ps.feat[~valid0] == 0).all(), f"{where}: padding not zero"
  pidx = ps.point_index
  assert pidx.dtype == np.int32 and (pidx[~valid0] == -1).all(), where
  assert ((pidx[valid0] >= 0) & (pidx[valid0] < num_source_points)).all(), f"{where}: point_index out of range"
  assert len(np.unique(pidx[valid0])) == real, f"{where}: a scene point appears twice"
  for s, (stage, cap) in enumerate(zip(ps.stages, capacities)):
    at = f"{where} stage {s}"
    v = stage.valid
    n = int(v.sum())
    assert v.shape == (cap,) and v.dtype == bool and n >= 1, at
    assert v[:n].all() and not v[n:].any(), f"{at}: real points are not slots 0..n-1"
    assert stage.grid.shape == (cap, 3) and stage.grid.dtype == np.int32, at
    assert (stage.grid >= 0).all() and (stage.grid[~v] == 0).all(), at
    if s > 0 or not duplicate_voxels:
      assert len(np.unique(stage.grid[:n], axis=0)) == n, f"{at}: two real points share a voxel"
    num_orders = len(structs.ORDERS)
    assert stage.order.shape == (num_orders, cap) and stage.inverse.shape == (num_orders, cap), at
    for o in range(num_orders):
      assert (np.sort(stage.order[o]) == np.arange(cap)).all(), f"{at}: order {o} is not a permutation"
      assert (stage.inverse[o, stage.order[o]] == np.arange(cap)).all(), f"{at}: inverse {o} wrong"
      assert v[stage.order[o, :n]].all(), f"{at}: order {o} does not list real points first"
    nb = stage.neighbors
    assert nb.shape == (cap, 27) and nb.dtype == np.int32, at
    assert ((nb >= 0) & (nb <= cap)).all(), f"{at}: neighbour index out of range"
    assert (nb[n:] == cap).all() and (nb[:n, 13] == np.arange(n)).all(), at
    # Every present neighbour is a real point at exactly grid + offset; every absent one truly is absent.
    grid = stage.grid[:n].astype(np.int64)
    for k, off in enumerate(structs.NEIGHBOR_OFFSETS):
      target = grid + off
      has = nb[:n, k] < cap
      assert (stage.grid[nb[:n, k][has]] == target[has]).all(), f"{at}: neighbour {k} at the wrong voxel"
      assert not np.isin(_rows(target[~has]), _rows(grid)).any(), f"{at}: neighbour {k} missed a real voxel"
    if s + 1 < len(capacities):
      parent, nxt = ps.parent[s], ps.stages[s + 1]
      cap1 = capacities[s + 1]
      assert parent.shape == (cap,) and parent.dtype == np.int32, at
      assert (parent[n:] == cap1).all() and (parent[:n] < nxt.valid.sum()).all(), f"{at}: parent out of range"
      assert (nxt.grid[parent[:n]] == stage.grid[:n] // 2).all(), f"{at}: parent is not the pooled voxel"


def check_train_batch(batch: structs.TrainView, p, reference_signature, num_source_points):
  """Asserts the structs.py invariants of [B, V] stacked TrainViews (`train_views.stack_views`) built with
  pipeline params `p`."""
  assert signature(batch) == reference_signature, "batch shapes/dtypes changed with the data"
  b, v = batch.mask_token.shape[:2]
  t_caps = patches.stage_capacities(p.capacity, p.num_stages, p.patch_size, p.stage_ratio)
  s_caps = patches.stage_capacities(p.student_set_capacity, p.num_stages, p.patch_size, p.stage_ratio)
  n_t = t_caps[0]
  for i in range(b):
    for j in range(v):
      one = index(batch, i, j)
      where = f"scene {i} view {j}"
      check_point_set(one.teacher, t_caps, p.feat_dim, num_source_points[i], where + " teacher")
      check_point_set(one.student, s_caps, p.feat_dim, num_source_points[i], where + " student",
                      duplicate_voxels=p.supervision == "token_jitter")
      s_valid = one.student.valid
      for name in ("target", "cross"):
        idx, ok = getattr(one, f"{name}_index"), getattr(one, f"{name}_valid")
        assert ((idx >= 0) & (idx <= n_t)).all(), f"{where}: {name}_index out of range"
        assert not (ok & ~s_valid).any(), f"{where}: {name}_valid outside the student's real points"
        assert (idx[ok] < n_t).all(), f"{where}: valid {name} points at the sentinel"
        other = one.teacher if name == "target" else index(batch, i, (j + 1) % v).teacher
        assert other.valid[idx[ok]].all(), f"{where}: {name} points at a padded teacher slot"
      # A same-view target is the same scene point; the student holds real slots 0..m-1 like the teacher.
      ok = one.target_valid
      assert (one.teacher.point_index[one.target_index[ok]] == one.student.point_index[ok]).all(), where
      if p.supervision == "observable":
        assert not one.mask_token.any() and (one.target_valid == s_valid).all(), where
      else:
        assert not (one.mask_token & ~s_valid).any() and (one.target_valid == one.mask_token).all(), where


def check_labeled_batch(batch: structs.LabeledBatch, inverses, p, capacity, reference_signature, scenes,
                        num_classes=None):
  assert signature(batch) == reference_signature, "labeled batch shapes/dtypes changed with the data"
  caps = patches.stage_capacities(capacity, p.num_stages, p.patch_size, p.stage_ratio)
  for i, scene in enumerate(scenes):
    one = index(batch, i)
    check_point_set(one.points, caps, p.feat_dim, scene.num_points, f"labeled scene {i}")
    valid = one.points.valid
    seg = one.segment
    assert seg.dtype == np.int32 and (seg[~valid] == -1).all() and (seg >= -1).all()
    if num_classes is not None:
      assert (seg < num_classes).all()
    if scene.segment is not None:
      assert (seg[valid] == np.asarray(scene.segment)[one.points.point_index[valid]]).all()
    inv = inverses[i]
    assert inv.shape == (scene.num_points,) and inv.dtype == np.int32
    assert ((inv >= 0) & (inv < valid.sum())).all(), "inverse map points outside the real slots"


# ------------------------------------------------------------------------------- fuzz inputs (arrays, files)


def geometry(kind, n, rng):
  """f64[n, 3] coordinates of an extreme cloud `kind` (see the fuzz docstrings)."""
  if kind == "blob":
    return rng.normal(size=(n, 3)) * 2
  if kind == "line":
    return np.outer(np.linspace(0, 50, n), [1.0, 0.5, 0.0])
  if kind == "plane":
    return np.c_[rng.uniform(0, 20, (n, 2)), np.zeros(n)]
  if kind == "voxel":
    return rng.uniform(0, 0.01, (n, 3))
  if kind == "identical":
    return np.tile([1.5, -2.0, 0.25], (n, 1))
  if kind == "far":
    return rng.normal(size=(n, 3)) + np.where(np.arange(n) % 2, 1, -1)[:, None] * (scene_lib.MAX_ABS_COORD - 10)
  if kind == "huge":
    return rng.uniform(-1, 1, (n, 3)) * 10.0 ** rng.uniform(4, 9)
  if kind == "ball":
    return rng.normal(size=(n, 3)) * 0.1
  raise ValueError(kind)


def cast(arr, dtype):
  """`arr` as numpy dtype code `dtype`, including object and str arrays (overflow/NaN casts allowed)."""
  with np.errstate(all="ignore"):
    if dtype == "O":
      return np.array(list(arr.reshape(-1)) + [None], dtype=object)[:-1].reshape(arr.shape)
    if dtype.startswith("U"):
      return arr.astype(dtype)
    return np.asarray(arr).astype(dtype)


def corrupt(path, how, rng):
  """Damages the .npy file at `path` in one of the ways `how` names (truncate, random, empty, npz, huge_header,
  pickle: an object array whose unpickling would create `path + '.executed'`)."""
  raw = open(path, "rb").read() if os.path.exists(path) else b""
  if how == "truncate":
    raw = raw[:int(rng.integers(0, max(1, len(raw))))]
  elif how == "random":
    raw = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
  elif how == "empty":
    raw = b""
  elif how == "npz":
    tmp = path + ".npz"
    np.savez(tmp, a=np.zeros((3, 3), np.float32))
    raw = open(tmp, "rb").read()
    os.remove(tmp)
  elif how == "huge_header":
    # A header promising ~1e12 points (a hostile or corrupted file): must fail fast, not allocate or hang.
    with open(path, "wb") as f:
      np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)})
      f.write(raw[-120:])
    return
  elif how == "pickle":
    with open(path, "wb") as f:
      np.save(f, np.array([Trap(path + ".executed")], dtype=object), allow_pickle=True)
    return
  with open(path, "wb") as f:
    f.write(raw)


class Trap:
  """Unpickling this creates `marker` (what a malicious .npy could do instead)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


LABEL_KINDS = ["random", "one_class", "ignore", "too_high", "below_ignore", "beyond_int32", "float", "bool",
               "length"]


def labels(kind, n, rng):
  """A label array of kind `kind` (LABEL_KINDS) for n points; the last kinds are invalid for num_classes=20."""
  if kind == "random":
    return rng.integers(-1, 20, n).astype(np.int16)
  if kind == "one_class":
    return np.full(n, 7, np.int64)
  if kind == "ignore":
    return np.full(n, -1, np.int32)
  if kind == "too_high":
    return np.full(n, 20, np.int32)
  if kind == "below_ignore":
    return np.full(n, -5, np.int32)
  if kind == "beyond_int32":
    return np.full(n, 2**40, np.int64)
  if kind == "float":
    return np.ones(n, np.float32)
  if kind == "bool":
    return np.ones(n, bool)
  return np.zeros(n + 1, np.int32)
