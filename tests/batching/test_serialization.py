"""Serialization codes: bijective on a voxel cube, locality preserving (measured), Hilbert steps face-adjacent."""

import numpy as np
import pytest

from dos_jax.batching import serialization
from dos_jax.batching import structs


def _cube(depth):
  r = np.arange(2 ** depth)
  return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


@pytest.mark.parametrize("order", structs.ORDERS)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_bijective_on_cube(order, depth):
  grid = _cube(depth)
  code = serialization.encode(grid, order, depth)
  assert code.dtype == np.int64
  # A bijection of the cube onto [0, 8**depth).
  np.testing.assert_array_equal(np.sort(code), np.arange(8 ** depth))


def test_morton_matches_bitwise_reference():
  # Independent scalar reference: bit b of axis a goes to bit 3b + (2 - a).
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 2 ** 6, size=(50, 3))
  code = serialization.encode(grid, "z", 6)
  for g, c in zip(grid, code):
    ref = 0
    for b in range(6):
      for a in range(3):
        ref += ((int(g[a]) >> b) & 1) << (3 * b + 2 - a)
    assert ref == c


def test_trans_swaps_xy():
  rng = np.random.default_rng(1)
  grid = rng.integers(0, 16, size=(100, 3))
  for base in ("z", "hilbert"):
    np.testing.assert_array_equal(serialization.encode(grid, base + "-trans", 4),
                                  serialization.encode(grid[:, [1, 0, 2]], base, 4))
  # The transposed curve is a genuinely different order.
  assert not np.array_equal(serialization.encode(grid, "z", 4), serialization.encode(grid, "z-trans", 4))


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans"])
def test_hilbert_consecutive_cells_face_adjacent(order):
  grid = _cube(4)
  walk = grid[np.argsort(serialization.encode(grid, order, 4))]
  steps = np.abs(np.diff(walk, axis=0)).sum(1)
  np.testing.assert_array_equal(steps, 1)


@pytest.mark.parametrize("order", structs.ORDERS)
def test_locality_preserving_on_surface(order):
  # A random sparse surface-like cloud (two planes): consecutive points in code order must be far closer than
  # consecutive points in a random order.
  rng = np.random.default_rng(2)
  xy = rng.integers(0, 64, size=(3000, 2))
  floor = np.c_[xy, np.zeros(len(xy), int)]
  wall = np.c_[xy[:, :1], np.full(len(xy), 5), xy[:, 1:]]
  grid = np.unique(np.concatenate([floor, wall]), axis=0)
  code = serialization.encode(grid, order, serialization.required_depth(grid))
  walk = grid[np.argsort(code)]
  curve = np.linalg.norm(np.diff(walk, axis=0), axis=1).mean()
  shuffled = grid[rng.permutation(len(grid))]
  random = np.linalg.norm(np.diff(shuffled, axis=0), axis=1).mean()
  assert curve < 0.1 * random, (curve, random)


def test_bad_input():
  with pytest.raises(ValueError):
    serialization.encode(np.array([[0, 0, 16]]), "z", 4)
  with pytest.raises(ValueError):
    serialization.encode(np.array([[0, 0, 1]]), "peano", 4)
  assert serialization.required_depth(np.array([[0, 0, 0]])) == 1
  assert serialization.required_depth(np.array([[0, 8, 3]])) == 4
  # Upstream Pointcept's rule (max + 1).bit_length(): one more bit when the largest coordinate is 2^k - 1.
  assert serialization.required_depth(np.array([[0, 7, 3]])) == 4
  assert serialization.required_depth(np.array([[0, 6, 3]])) == 3


def test_encode_all_matches_encode():
  rng = np.random.default_rng(4)
  grid = rng.integers(0, 300, size=(500, 3))
  depth = serialization.required_depth(grid)
  codes = serialization.encode_all(grid, depth)
  assert set(codes) == set(structs.ORDERS)
  for order in structs.ORDERS:
    np.testing.assert_array_equal(codes[order], serialization.encode(grid, order, depth))
