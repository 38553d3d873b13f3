"""Synthetic scenes: determinism, geometry, long-tailed class frequencies and learnability."""

import time

import numpy as np
import pytest

from dos_jax import data
from dos_jax.data import synthetic

FIELDS = ("coord", "color", "normal", "segment", "instance", "strength")


@pytest.fixture(scope="module", params=("indoor", "outdoor"))
def scenes16(request):
  kind = request.param
  return kind, [synthetic.make_scene((0, i), kind) for i in range(16)]


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_same_seed_same_scene_other_seed_differs(kind):
  a, b = synthetic.make_scene(11, kind), synthetic.make_scene(11, kind)
  for f in FIELDS:
    x, y = getattr(a, f), getattr(b, f)
    assert (x is None and y is None) or np.array_equal(x, y), f
  c = synthetic.make_scene(12, kind)
  assert a.num_points != c.num_points or not np.array_equal(a.coord, c.coord)
  t1, t2 = synthetic.make_scene((3, 0, 1), kind), synthetic.make_scene((3, 1, 1), kind)
  assert not np.array_equal(t1.coord[:100], t2.coord[:100])
  assert a.name == f"synthetic-{kind}-11" and t1.name == f"synthetic-{kind}-3-0-1"


@pytest.mark.parametrize("kind,n", [("indoor", 5000), ("outdoor", 20000), ("indoor", 60000), ("outdoor", 70000)])
def test_exact_point_count(kind, n):
  s = synthetic.make_scene(5, kind, num_points=n)
  assert s.num_points == n and s.segment.shape == (n,) and s.normal.shape == (n, 3)


def test_scene_contract(scenes16):
  kind, scenes = scenes16
  lo, hi = (20_000, 40_000) if kind == "indoor" else (30_000, 60_000)
  for s in scenes:
    assert data.validate_scene(s, num_classes=synthetic.NUM_CLASSES) is not None
    assert lo <= s.num_points <= hi, s.num_points
    assert s.coord.dtype == np.float32 and s.segment.dtype == np.int32 and s.segment.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(s.normal, axis=1), 1.0, atol=1e-5)
    assert 0 <= s.color.min() and s.color.max() <= 1
    assert (s.strength is None) == (kind == "indoor")


def test_indoor_geometry():
  s = synthetic.make_scene(4, "indoor")
  names = synthetic.CLASS_NAMES["indoor"]
  assert np.abs(s.coord[:, :2]).max() < 3.05 and -0.03 < s.coord[:, 2].min() and s.coord[:, 2].max() < 3.03
  floor = s.segment == names.index("floor")
  assert np.abs(s.coord[floor, 2]).max() < 0.03 and (s.normal[floor] == [0, 0, 1]).all()
  wall = s.segment == names.index("wall")
  # Wall normals are horizontal and point into the room (towards the vertical axis through the centre).
  assert np.abs(s.normal[wall, 2]).max() == 0
  assert ((s.normal[wall, :2] * -s.coord[wall, :2]).sum(1) > 0).all()
  assert (s.instance[wall] == -1).all() and (s.instance[s.segment == names.index("chair")] >= 0).all()


def test_outdoor_is_a_lidar_sweep():
  s = synthetic.make_scene(4, "outdoor")
  names = synthetic.CLASS_NAMES["outdoor"]
  d = s.coord - np.array([0.0, 0.0, 1.7])                         # the sensor sits at (0, 0, 1.7)
  rng = np.linalg.norm(d, axis=1)
  assert rng.max() < 60.2 and rng.min() > 2.0
  road = s.segment == names.index("road")
  assert np.abs(s.coord[road, 2]).max() < 0.1                    # flat road at z = 0 (+ 2 cm range noise)
  walk = s.segment == names.index("sidewalk")
  assert np.median(s.coord[walk, 2]) == pytest.approx(0.15, abs=0.02)
  # Ring pattern: beams at 32 elevations evenly spaced over [-25, 5] degrees.
  elev = np.degrees(np.arcsin(d[:, 2] / rng))
  beam = np.round((elev + 25) * 31 / 30)
  far = rng > 8                                                   # range noise blurs the angle close by
  assert np.abs(elev[far] - (beam[far] * 30 / 31 - 25)).max() < 0.2
  assert len(np.unique(beam)) > 25
  # Surfaces are hit from the front: normals face the sensor.
  assert ((s.normal * -d).sum(1) > 0).mean() > 0.99
  assert s.strength[s.segment == names.index("lane_marking")].mean() > s.strength[road].mean() + 0.5


def test_long_tail_and_groups(scenes16):
  kind, scenes = scenes16
  counts = np.bincount(np.concatenate([s.segment for s in scenes]), minlength=synthetic.NUM_CLASSES)
  assert (counts > 0).all(), np.array(synthetic.CLASS_NAMES[kind])[counts == 0]
  assert len(synthetic.CLASS_NAMES[kind]) == synthetic.NUM_CLASSES >= 20
  freq = np.sort(counts)[::-1] / counts.sum()
  assert freq[0] / freq[-1] > 100                      # over two orders of magnitude head to tail
  assert freq[:3].sum() > 0.5 and freq[-6:].sum() < 0.03
  g = synthetic.CLASS_GROUPS[kind]
  assert sorted(g["head"] + g["common"] + g["tail"]) == list(range(synthetic.NUM_CLASSES))
  f = counts / counts.sum()
  assert f[g["head"]].min() > f[g["common"]].max() * 0.8   # groups agree with the frequencies measured here
  assert f[g["common"]].min() > f[g["tail"]].max() * 0.8
  assert f[g["head"]].min() / f[g["tail"]].max() > 3
  # Class ids are in decreasing frequency order, up to small sampling swaps.
  rank = np.argsort(np.argsort(-f))                     # 0 = most frequent
  assert np.corrcoef(np.arange(24), rank)[0, 1] > 0.9   # Spearman correlation of id and frequency rank


def test_classes_are_learnable_from_colour_and_height(scenes16):
  kind, scenes = scenes16
  feat = lambda s: np.concatenate([s.color, s.coord[:, 2:3] / 4], 1)
  x = np.concatenate([feat(s) for s in scenes[:8]])
  y = np.concatenate([s.segment for s in scenes[:8]])
  centroids = np.stack([x[y == c].mean(0) for c in range(synthetic.NUM_CLASSES)])
  xt = np.concatenate([feat(s) for s in scenes[8:]])
  yt = np.concatenate([s.segment for s in scenes[8:]])
  pred = np.argmin(((xt[:, None] - centroids[None]) ** 2).sum(-1), 1)
  recall = [np.mean(pred[yt == c] == c) for c in np.unique(yt)]
  assert np.mean(recall) > 0.8 and np.mean(pred == yt) > 0.7   # a nearest-centroid probe already separates them


def test_groups_helper():
  g = synthetic.groups_from_frequencies(np.array([0.5, 0.3, 0.1, 0.05, 0.04, 0.006, 0.003, 0.001]))
  assert g == {"head": [0, 1, 2, 3, 4], "common": [5], "tail": [6, 7]}


def test_speed():
  synthetic.make_scene(0, "indoor")
  t = time.perf_counter()
  for i in range(5):
    synthetic.make_scene(i, "indoor")
  per_scene = (time.perf_counter() - t) / 5
  assert per_scene < 0.5, per_scene    # ~0.02-0.06 s here; loose bound for loaded CI machines


def test_bad_arguments():
  with pytest.raises(ValueError, match="kind"):
    synthetic.make_scene(0, "forest")
  with pytest.raises(ValueError, match="num_points"):
    synthetic.make_scene(0, "indoor", num_points=0)


def test_longtail_rooms_tail_is_rare_but_learnable_by_shape_not_colour():
  """'longtail': tail classes < 1% of points each yet >= 2 voxels (0.1 m) wide; their colour is a furniture
  colour, so colour alone (nearest centroid) does not find them, while the common classes it does."""
  scenes = [synthetic.make_scene((0, 0, i), "longtail") for i in range(16)]
  names = synthetic.CLASS_NAMES["longtail"]
  g = synthetic.CLASS_GROUPS["longtail"]
  assert sorted(g["head"] + g["common"] + g["tail"]) == list(range(len(names)))
  counts = np.bincount(np.concatenate([s.segment for s in scenes]), minlength=len(names))
  f = counts / counts.sum()
  assert (counts > 0).all() and f[g["tail"]].max() < 0.01 and f[g["common"]].min() > 2 * f[g["tail"]].max()
  for s in scenes:
    assert 10_000 <= s.num_points <= 30_000 and data.validate_scene(s, num_classes=len(names)) is not None
    for inst in np.unique(s.instance[np.isin(s.segment, g["tail"])]):
      pts = s.coord[s.instance == inst]
      extent = pts.max(0) - pts.min(0)
      assert extent[:2].min() > 0.2 and extent.max() > 0.4, (names[s.segment[s.instance == inst][0]], extent)
  x = np.concatenate([s.color for s in scenes])
  y = np.concatenate([s.segment for s in scenes])
  centroids = np.stack([x[y == c].mean(0) for c in range(len(names))])
  pred = np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), 1)
  recall = np.array([np.mean(pred[y == c] == c) for c in range(len(names))])
  assert recall[g["tail"]].mean() < 0.5 < recall[g["common"]].mean(), recall
