"""benchmarks.cpe_neighbors: sparsity and locality of the CPE's neighbour tables, against a brute-force count."""

import itertools

import numpy as np

from benchmarks import cpe_neighbors
from dos_jax.batching import patches
from dos_jax.batching import structs


def _point_set(grid, capacity=32):
  grid = np.asarray(grid, np.int64)
  n = len(grid)
  coord = (grid + 0.5).astype(np.float32)
  return patches.build_point_set(coord, np.zeros((n, 1), np.float32), np.arange(n, dtype=np.int32), 1.0, capacity,
                                 num_stages=1, patch_size=8, grid=grid)


def test_stage_stats_match_a_brute_force_count():
  rng = np.random.default_rng(0)
  cells = list(itertools.product(range(4), range(3), range(3)))
  grid = np.array([cells[i] for i in rng.choice(len(cells), 20, replace=False)])
  stage = _point_set(grid).stages[0]
  got = cpe_neighbors.stage_stats(stage)

  where = {tuple(g): i for i, g in enumerate(grid)}  # slot of each voxel (slots 0..n-1 in input order)
  counts, dists = [], []
  for i, g in enumerate(grid):
    found = [where[tuple(g + o)] for o in structs.NEIGHBOR_OFFSETS if tuple(g + o) in where]
    counts.append(len(found))
    dists.extend(abs(j - i) for j in found if j != i)
  np.testing.assert_array_equal(got["count"], counts)
  np.testing.assert_array_equal(np.sort(got["dist"]["slots"]), np.sort(dists))

  summary = cpe_neighbors.summarize([got, got])  # two identical packs: the same fractions and quantiles
  assert summary["real_slots_per_pack"] == len(grid)
  assert summary["present"] == round(sum(counts) / (27 * len(grid)), 4)
  assert summary["pairs_per_slot"] == round(sum(counts) / len(grid) - 1, 3)
  assert summary["window"]["slots"]["1.0"] == max(dists)
  assert summary["count_quantiles"]["1.0"] == max(counts)


def test_serialization_distances_use_each_slots_position_in_that_order():
  # A line of 5 voxels along z entered in reverse: slot order puts neighbours 1 apart, and the curves visit this
  # line in z order (so each order's positions are also 1 apart); the padded slots never count.
  grid = np.array([[0, 0, z] for z in range(4, -1, -1)])
  got = cpe_neighbors.stage_stats(_point_set(grid).stages[0])
  assert list(got["count"]) == [2, 3, 3, 3, 2]
  for name in ("slots", *structs.ORDERS):
    assert sorted(got["dist"][name]) == [1] * 8, name
