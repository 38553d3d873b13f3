"""Padded point sets: capacities, orders, neighbours, pooling, padding invariance and errors."""

import numpy as np
import pytest

from dos_jax.batching import patches
from dos_jax.batching import serialization
from dos_jax.batching import structs
from dos_jax.errors import DataError

GRID = 0.1


def _room(n=6000, seed=0):
  """A grid-sampled box surface: (coord f32[m, 3] one per 0.1 m voxel, point_index i32[m])."""
  rng = np.random.default_rng(seed)
  pts = rng.uniform(0, 1, size=(n, 3)) * [2.0, 1.5, 1.2]
  face = rng.integers(0, 3, size=n)
  pts[np.arange(n), face] = 0.0  # floor and two walls
  _, keep = np.unique(np.floor(pts / GRID).astype(int), axis=0, return_index=True)
  keep = rng.permutation(keep)
  return pts[keep].astype(np.float32), keep.astype(np.int32)


def _build(coord, index, capacity, num_stages=3, patch=64, **kw):
  return patches.build_point_set(coord, np.c_[coord, coord[:, :1]], index, GRID, capacity, num_stages, patch,
                                 name="room", **kw)


def test_stage_capacities():
  assert patches.stage_capacities(2048, 3, 64) == [2048, 1024, 512]
  assert patches.stage_capacities(128, 4, 64) == [128, 64, 32, 16]
  assert patches.stage_capacities(8192, 5, 1024) == [8192, 4096, 2048, 1024, 512]
  assert patches.stage_capacities(96, 2, 128, ratio=0.6) == [96, 58]  # 57.6 -> 58 (one patch)
  assert patches.stage_capacities(1280, 2, 256, ratio=0.6) == [1280, 768]  # 768 = 3 * 256
  for cap, stages, patch, ratio in ((3072, 4, 256, 0.3), (640, 5, 64, 0.7), (4096, 5, 1024, 0.45)):
    caps = patches.stage_capacities(cap, stages, patch, ratio)
    for s, (n, p) in enumerate(zip(caps, patches.stage_patch_sizes(caps, patch))):
      assert n % p == 0
      assert s == 0 or ratio * caps[s - 1] <= n < ratio * caps[s - 1] + p


@pytest.mark.parametrize("dense_lookup", [True, False])
def test_structure_and_invariants(dense_lookup, monkeypatch):
  if not dense_lookup:  # the sorted-key neighbour lookup used for large extents
    monkeypatch.setattr(patches, "_DENSE_LOOKUP_MAX_CELLS", 0)
  coord, index = _room()
  n = len(coord)
  ps = _build(coord, index, 1024)
  caps = [st.valid.shape[0] for st in ps.stages]
  assert caps == [1024, 512, 256]
  assert ps.coord.shape == (1024, 3) and ps.feat.shape == (1024, 4) and ps.point_index.shape == (1024,)
  np.testing.assert_array_equal(ps.point_index[:n], index)
  assert (ps.point_index[n:] == -1).all() and (ps.coord[n:] == 0).all() and (ps.feat[n:] == 0).all()
  # Stage-0 grid is floor(coord / grid) shifted to a zero minimum.
  g0 = np.floor(coord / GRID).astype(int)
  np.testing.assert_array_equal(ps.stages[0].grid[:n], g0 - g0.min(0))
  for s, st in enumerate(ps.stages):
    cap = caps[s]
    nv = int(st.valid.sum())
    assert st.valid[:nv].all() and not st.valid[nv:].any()
    assert (st.grid[nv:] == 0).all()
    for o, name in enumerate(structs.ORDERS):
      order, inv = st.order[o], st.inverse[o]
      np.testing.assert_array_equal(np.sort(order), np.arange(cap))  # a permutation
      np.testing.assert_array_equal(inv[order], np.arange(cap))
      # Real points first, in ascending code order; padded after.
      assert st.valid[order[:nv]].all()
      code = serialization.encode(st.grid[:nv], name, serialization.required_depth(st.grid[:nv]))
      assert (np.diff(code[order[:nv]]) > 0).all()
    # Neighbours: brute force over a dictionary of voxels.
    where = {tuple(g): i for i, g in enumerate(st.grid[:nv])}
    nb = st.neighbors
    assert (nb[nv:] == cap).all()
    for i in range(0, nv, max(1, nv // 200)):
      for k, off in enumerate(structs.NEIGHBOR_OFFSETS):
        assert nb[i, k] == where.get(tuple(st.grid[i] + off), cap)
    # Symmetric: j is i's neighbour at +d iff i is j's neighbour at -d (offset index 26 - k).
    ii, kk = np.nonzero(nb[:nv] < cap)
    np.testing.assert_array_equal(nb[nb[ii, kk], 26 - kk], ii)
    assert (nb[:nv, 13] == np.arange(nv)).all()
    if s + 1 < len(caps):
      parent = ps.parent[s]
      assert parent.shape == (cap,)
      assert (parent[nv:] == caps[s + 1]).all()
      nxt = ps.stages[s + 1]
      np.testing.assert_array_equal(nxt.grid[parent[:nv]], st.grid[:nv] // 2)
      assert nxt.valid[parent[:nv]].all()
      # Every coarse voxel has a child and coarse voxels are distinct.
      assert len(np.unique(parent[:nv])) == int(nxt.valid.sum())
      assert len(np.unique(nxt.grid[nxt.valid], axis=0)) == int(nxt.valid.sum())
  assert len(ps.parent) == 2


def test_padding_never_changes_real_points():
  coord, index = _room(seed=3)
  small, big = _build(coord, index, 1024), _build(coord, index, 4096)
  assert set(small.point_index[small.valid]) == set(big.point_index[big.valid]) == set(index)
  for a, b in zip(small.stages, big.stages):
    na = int(a.valid.sum())
    assert na == int(b.valid.sum())
    np.testing.assert_array_equal(a.grid[:na], b.grid[:na])
    np.testing.assert_array_equal(a.order[:, :na], b.order[:, :na])  # same patches of real points
  for pa, pb, st in zip(small.parent, big.parent, small.stages):
    na = int(st.valid.sum())
    np.testing.assert_array_equal(pa[:na], pb[:na])


def test_errors_name_scene_and_key():
  coord, index = _room()
  with pytest.raises(DataError, match="room.*empty"):
    _build(coord[:0], index[:0], 1024)
  with pytest.raises(DataError, match="room.*data.capacity"):
    _build(coord, index, 256)
  # Isolated points two voxels apart never merge under stride-2 pooling: stage 1 overflows with ratio 0.5.
  grid = np.stack(np.meshgrid(*[np.arange(0, 20, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)[:600]
  pts = (grid + 0.5) * GRID
  with pytest.raises(DataError, match="stage 1.*data.stage_ratio"):
    _build(pts, np.arange(len(pts)), 1024)
  ps = _build(pts, np.arange(len(pts)), 1024, ratio=1.0)
  assert int(ps.stages[1].valid.sum()) == len(pts)


def test_stack():
  coord, index = _room()
  a, b = _build(coord, index, 1024), _build(coord[:100], index[:100], 1024)
  st = patches.stack_point_sets([a, b])
  assert st.coord.shape == (2, 1024, 3) and st.stages[2].neighbors.shape == (2, 256, 27)
  assert st.parent[1].shape == (2, 512)
  np.testing.assert_array_equal(st.stages[1].order[1], b.stages[1].order)
  st2 = patches.stack_point_sets([st, st, st])
  assert st2.stages[0].order.shape == (3, 2, 4, 1024)


def test_duplicate_voxels_tolerated():
  # token_jitter can move two points into one voxel: the builder still works and entry 13 is each point itself.
  coord, index = _room()
  coord = np.concatenate([coord, coord[:5] + 0.001]).astype(np.float32)
  index = np.concatenate([index, index[:5] + 100000]).astype(np.int32)
  ps = _build(coord, index, 1024)
  n = len(coord)
  np.testing.assert_array_equal(ps.stages[0].neighbors[:n, 13], np.arange(n))
  assert ps.stages[0].valid.sum() == n
