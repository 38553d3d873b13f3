"""Random crop & duplicate, and block masking: ratios, disjointness, strict subsets, original indices kept."""

import numpy as np

from dos_jax.data import transforms
from dos_jax.data import views


def _cloud(n=3000, seed=0):
  rng = np.random.default_rng(seed)
  coord = rng.uniform(0, 1, (n, 3)) * [4.0, 4.0, 2.0]
  coord[: n // 2, 2] = 0  # a floor and a volume above it
  return {"coord": coord.astype(np.float32), "color": rng.random((n, 3)).astype(np.float32),
          "point_index": np.arange(n, dtype=np.int32), "name": "cloud"}


def test_random_crop_is_a_ball():
  data = _cloud(400)
  out = views.random_crop(data, 0.3, np.random.default_rng(0))
  kept = out["point_index"]
  assert len(kept) == 120 and len(np.unique(kept)) == 120
  np.testing.assert_array_equal(out["coord"], data["coord"][kept])
  # Some kept point is a centre such that every kept point is at least as close as every dropped one.
  dropped = np.setdiff1d(np.arange(400), kept)
  ok = False
  for c in data["coord"][kept]:
    d_kept = np.linalg.norm(data["coord"][kept] - c, axis=1).max()
    d_drop = np.linalg.norm(data["coord"][dropped] - c, axis=1).min()
    ok |= d_kept <= d_drop
  assert ok
  assert len(views.random_crop(data, 1.0, np.random.default_rng(0))["coord"]) == 400


def test_make_views():
  data = _cloud()
  aug = transforms.build(transforms.default_augmentations("indoor"))
  vs = views.make_views(data, 2, 0.6, 0.1, aug, np.random.default_rng(0))
  assert len(vs) == 2
  for v in vs:
    idx = v["point_index"]
    assert len(np.unique(idx)) == len(idx) and idx.max() < 3000
    # One point per voxel of the augmented coordinates.
    vox = np.floor(v["coord"].astype(np.float64) / 0.1).astype(int)
    assert len(np.unique(vox, axis=0)) == len(idx)
    np.testing.assert_array_equal(v["color"].shape, (len(idx), 3))
  assert not np.array_equal(np.sort(vs[0]["point_index"]), np.sort(vs[1]["point_index"]))


def test_block_mask_cells_and_ratio():
  data = _cloud()
  coord = data["coord"]
  rng = np.random.default_rng(0)
  # With a known grid offset, each cell is entirely masked or entirely visible, and round(ratio * cells) cells
  # are masked.
  masked = views.block_mask(coord, 0.5, 0.7, rng, offset=np.zeros(3))
  cell = [tuple(c) for c in np.floor(coord / 0.5).astype(int)]
  by_cell = {}
  for c, m in zip(cell, masked):
    by_cell.setdefault(c, set()).add(bool(m))
  assert all(len(s) == 1 for s in by_cell.values())
  assert sum(s == {True} for s in by_cell.values()) == round(0.7 * len(by_cell))
  # Achieved point ratio, averaged over draws with random offsets, is close to the cell ratio.
  achieved = [views.mask_ratio(views.block_mask(coord, 0.4, r, rng)) for r in (0.7, 0.6) for _ in range(10)]
  assert abs(np.mean(achieved[:10]) - 0.7) < 0.05 and abs(np.mean(achieved[10:]) - 0.6) < 0.05


def test_visible_masked_disjoint_strict_subsets():
  data = _cloud()
  rng = np.random.default_rng(1)
  for ratio in (0.0, 0.5, 0.99):
    masked = views.block_mask(data["coord"], 1.0, ratio, rng)
    vis, pos = views.split_visible(data, masked)
    m_idx = data["point_index"][masked]
    assert np.intersect1d(vis["point_index"], m_idx).size == 0
    assert len(vis["point_index"]) + len(m_idx) == 3000
    np.testing.assert_array_equal(vis["point_index"], data["point_index"][pos])
    if ratio > 0:
      assert 0 < masked.sum() < 3000  # strict subsets even at ratio 0.99
  # One cell only: nothing can be masked without emptying the view.
  assert not views.block_mask(data["coord"] * 0.01, 1.0, 0.7, rng).any()
  # min_visible unmasks cells until enough points remain.
  masked = views.block_mask(data["coord"], 1.0, 0.99, rng, min_visible=1500)
  assert (~masked).sum() >= 1500
