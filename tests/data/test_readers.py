"""Readers on every real scan in shared/data, checked against the numbers in each SOURCE.md."""

import collections
import glob
import os

import numpy as np
import pytest

from dos_jax.data import labels
from dos_jax.data import pointcept
from dos_jax.data import scene as scene_lib
from tests import conftest

DATA = conftest.SHARED_DATA
# Tests that read ../shared/data: skipped with a reason in a bare clone, a failure under CI=true (tests/conftest.py).
needs_data = conftest.needs_data

# From scannet_votenet50k/SOURCE.md: #labels, #instances, top-2 (NYU40 id, count), xyz min, xyz max.
SCANNET = {
    "scene0000_00": (24, 68, (1, 8475), (2, 6312), (-3.63, -3.61, -0.06), (3.4, 3.62, 2.96)),
    "scene0000_01": (23, 73, (1, 8772), (3, 8236), (-3.63, -3.58, -0.05), (3.39, 3.74, 3.03)),
    "scene0000_02": (24, 72, (1, 8996), (3, 7100), (-3.54, -3.56, -0.05), (3.84, 3.77, 3.12)),
    "scene0001_00": (10, 24, (2, 17505), (6, 9669), (-2.21, -4.11, -0.09), (2.62, 3.78, 2.19)),
    "scene0001_01": (10, 24, (2, 15571), (6, 9844), (-2.77, -4.16, -0.09), (2.07, 3.54, 2.09)),
    "scene0002_00": (20, 71, (0, 12378), (1, 9744), (-2.16, -2.69, -0.34), (2.38, 2.85, 2.83)),
    "scene0002_01": (19, 64, (0, 12397), (1, 5927), (-2.18, -2.83, -0.09), (2.16, 2.7, 2.73)),
    "scene0003_00": (11, 22, (1, 16286), (3, 10460), (-3.17, -2.04, -0.05), (1.66, 1.6, 2.93)),
    "scene0003_01": (11, 23, (1, 17516), (3, 10762), (-2.06, -1.73, -0.05), (1.62, 3.2, 2.99)),
    "scene0003_02": (10, 23, (1, 16040), (3, 11955), (-1.65, -3.43, -0.06), (1.77, 1.67, 3.0)),
    "scene0004_00": (7, 15, (13, 17448), (2, 11710), (-2.61, -4.98, -0.39), (2.09, 5.03, 1.65)),
    "scene0005_00": (10, 18, (1, 15842), (2, 11315), (-2.01, -2.93, -0.1), (2.06, 1.85, 2.39)),
    "scene0005_01": (10, 19, (1, 15136), (2, 12547), (-1.95, -3.17, -0.06), (2.15, 1.92, 2.43)),
}


@needs_data
def test_every_scannet_scan_is_listed():
  found = [os.path.basename(d) for d in pointcept.find_scannet_votenet(os.path.join(DATA, "scannet_votenet50k"))]
  assert found == sorted(SCANNET)


@needs_data
@pytest.mark.parametrize("name", sorted(SCANNET))
def test_scannet_votenet(name):
  nlab, nins, top1, top2, lo, hi = SCANNET[name]
  folder = os.path.join(DATA, "scannet_votenet50k", name)
  nyu = pointcept.read_scannet_votenet(folder, label_set="nyu40")
  assert nyu.num_points == 50000 and nyu.coord.dtype == np.float32 and nyu.segment.dtype == np.int32
  assert len(np.unique(nyu.segment)) == nlab            # NYU40 0 -> -1 is one-to-one
  assert len(np.unique(nyu.instance)) == nins
  np.testing.assert_allclose(nyu.coord.min(0), lo, atol=0.006)
  np.testing.assert_allclose(nyu.coord.max(0), hi, atol=0.006)
  assert 0.0 <= nyu.color.min() and nyu.color.max() == 1.0   # rgb max 255 in every scan
  for raw, count in (top1, top2):
    assert (nyu.segment == (raw if raw else -1)).sum() == count
  s20 = pointcept.read_scannet_votenet(folder)
  np.testing.assert_array_equal(s20.coord, nyu.coord)
  # Independent mapping: position in the benchmark list, else ignore.
  raw = np.load(os.path.join(folder, name + "_sem_label.npy"))
  bench = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
  expected = np.array([bench.index(int(v)) if v in bench else -1 for v in raw])
  np.testing.assert_array_equal(s20.segment, expected)
  assert s20.segment.min() >= -1 and s20.segment.max() <= 19
  for raw_id, count in (top1, top2):
    if raw_id in bench:
      assert (s20.segment == bench.index(raw_id)).sum() == count


@needs_data
def test_mmdet3d_fixtures():
  root = os.path.join(DATA, "mmdet3d_tiny_fixtures")
  sc = pointcept.read_mmdet3d(os.path.join(root, "scannet"), "scannet", "scene0000_00")
  hist = {1: 14, 3: 14, 2: 13, 16: 11, 6: 7, 0: 7, 40: 5, 15: 4, 22: 4, 7: 4, 38: 4, 4: 3, 33: 2, 25: 2, 8: 2, 14: 2,
          24: 1, 18: 1}   # NYU40 histogram from SOURCE.md
  assert sc.num_points == 100
  expected = collections.Counter()
  for raw, c in hist.items():
    expected[labels.NYU40_TO_SCANNET20.get(raw, -1)] += c
  assert dict(zip(*[a.tolist() for a in np.unique(sc.segment, return_counts=True)])) == dict(expected)
  np.testing.assert_allclose(sc.coord.min(0), [-3.5, -3.57, -0.04], atol=0.005)
  np.testing.assert_allclose(sc.color.max(0) * 255, [255, 254, 249])

  s3 = pointcept.read_mmdet3d(os.path.join(root, "s3dis"), "s3dis", "Area_1_office_2")
  hist = {2: 39, 0: 19, 1: 14, 6: 6, 12: 5, 7: 4, 10: 3, 3: 2, 4: 2, 5: 2, 9: 2, 8: 2}
  assert dict(zip(*[a.tolist() for a in np.unique(s3.segment, return_counts=True)])) == hist
  assert len(np.unique(s3.instance)) == 19

  kt = pointcept.read_mmdet3d(os.path.join(root, "semantickitti"), "semantickitti", "00/000000")
  # raw {50: 25, 70: 17, 71: 3, 0: 2, 80: 2, 52: 1}: building, vegetation, trunk, pole; 0 and 52 -> ignore.
  names = labels.SEMANTICKITTI_NAMES
  got = dict(zip(*[a.tolist() for a in np.unique(kt.segment, return_counts=True)]))
  assert got == {-1: 3, names.index("building"): 25, names.index("vegetation"): 17, names.index("trunk"): 3,
                 names.index("pole"): 2}
  assert kt.strength.max() == pytest.approx(0.67, abs=1e-6)


@needs_data
def test_semantickitti_raw_frame():
  d = os.path.join(DATA, "semantickitti", "spvnas_sample_000000")
  s = pointcept.read_semantickitti(os.path.join(d, "000000.bin"), os.path.join(d, "000000.label"))
  assert s.num_points == 123389
  np.testing.assert_allclose(s.coord.min(0), [-79.6, -79.92, -27.64], atol=0.006)
  np.testing.assert_allclose(s.coord.max(0), [79.0, 78.37, 2.96], atol=0.006)
  assert s.strength.min() == 0.0 and s.strength.max() == pytest.approx(0.99)
  assert len(np.unique(s.instance)) == 12
  # SOURCE.md raw counts pushed through the official learning map by hand.
  n = labels.SEMANTICKITTI_NAMES.index
  expected = {-1: 4458 + 1652 + 809 + 5, n("terrain"): 30925, n("sidewalk"): 30092, n("vegetation"): 24514,
              n("road"): 20975, n("trunk"): 3978, n("building"): 2126, n("traffic-sign"): 1112,
              n("car"): 990 + 544, n("fence"): 531, n("pole"): 413, n("person"): 138 + 23, n("parking"): 84,
              n("bicycle"): 20}
  got = dict(zip(*[a.tolist() for a in np.unique(s.segment, return_counts=True)]))
  assert got == expected


@needs_data
@pytest.mark.parametrize("frame,count,hist", [
    (0, 90404, {17: 34534, 9: 26387, 15: 16894, 0: 7705, 14: 3188, 19: 823, 18: 552, 1: 321}),
    (1, 90318, {17: 35509, 9: 25847, 15: 16361, 0: 7764, 14: 3139, 19: 800, 18: 546, 1: 352}),
    (2, 90449, {17: 36703, 9: 25580, 15: 15440, 0: 7740, 14: 3328, 19: 759, 18: 541, 1: 358}),
])
def test_open3dml_kitti(frame, count, hist):
  d = os.path.join(DATA, "semantickitti", "open3dml_seq01")
  s = pointcept.read_open3dml_kitti(os.path.join(d, f"kitti_01_points_00000{frame}.npy"),
                                    os.path.join(d, f"kitti_01_labels_00000{frame}.npy"))
  assert s.num_points == count and s.strength is None
  got = dict(zip(*[a.tolist() for a in np.unique(s.segment, return_counts=True)]))
  assert got == {learn - 1: c for learn, c in hist.items()}   # learning id k -> train id k-1, 0 -> -1
  assert abs(s.coord[:, :2]).max() < 80


@needs_data
@pytest.mark.parametrize("fname,count,hist,extent", [
    ("autzen_trim.las", 110000, {1: 83893, 2: 26107}, (1177.46, 562.7, 114.25)),
    ("sample_c.las", 14408, {6: 12525, 2: 1368, 31: 339, 3: 93, 14: 45, 4: 29, 5: 7, 11: 2}, (83.4, 74.88, 28.7)),
    ("warsaw_small.las", 3000, {2: 1381, 5: 902, 0: 433, 3: 257, 4: 27}, (33.49, 32.77, 19.85)),
])
def test_las(fname, count, hist, extent):
  s = pointcept.read_las(os.path.join(DATA, "aerial_lidar_las", fname))
  assert s.num_points == count
  np.testing.assert_allclose(s.coord.min(0), 0, atol=1e-6)
  np.testing.assert_allclose(s.coord.max(0), extent, atol=0.011)
  expected = collections.Counter()
  for code, c in hist.items():
    expected[labels.ASPRS_LEARNING_MAP.get(code, -1)] += c
  assert dict(zip(*[a.tolist() for a in np.unique(s.segment, return_counts=True)])) == dict(expected)


def test_nuscenes_written_sample(tmp_path):
  rng = np.random.default_rng(0)
  pts = np.concatenate([rng.normal(size=(300, 3)) * 10, rng.integers(0, 256, (300, 1)),
                        rng.integers(0, 32, (300, 1))], 1).astype(np.float32)
  raw = rng.integers(0, 32, 300).astype(np.uint8)
  pts.tofile(tmp_path / "sweep.bin")
  raw.tofile(tmp_path / "sweep_lidarseg.bin")
  s = pointcept.read_nuscenes(str(tmp_path / "sweep.bin"), str(tmp_path / "sweep_lidarseg.bin"))
  np.testing.assert_array_equal(s.coord, pts[:, :3])
  np.testing.assert_allclose(s.strength, pts[:, 3] / 255)
  # A few facts of the 16-class map, written out: car 17 -> 3, adult 2 / police 6 -> pedestrian, animal 1 -> -1.
  table = {17: 3, 2: 6, 6: 6, 1: -1, 0: -1, 9: 0, 30: 15, 31: -1, 15: 2, 16: 2}
  for r, t in table.items():
    assert np.all(s.segment[raw == r] == t)
  assert set(np.unique(s.segment)) <= set(range(-1, 16))
  assert len(set(labels.NUSCENES_LEARNING_MAP.values())) == 16
  out = pointcept.convert_nuscenes([(str(tmp_path / "sweep.bin"), str(tmp_path / "sweep_lidarseg.bin"))],
                                   str(tmp_path / "pc"))
  back = scene_lib.load_scene(out[0])
  np.testing.assert_array_equal(back.segment, s.segment)
  np.testing.assert_allclose(back.strength, s.strength)
  assert os.path.basename(out[0]) == "sweep"


def test_semantickitti_map_covers_every_raw_id():
  raw_ids = [0, 1, 10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 52, 60, 70, 71, 72, 80, 81, 99,
             252, 253, 254, 255, 256, 257, 258, 259]
  assert sorted(labels.SEMANTICKITTI_LEARNING_MAP) == raw_ids
  assert sorted(set(labels.SEMANTICKITTI_LEARNING_MAP.values())) == list(range(20))
  # moving-* classes share their static class; instance bits do not disturb the semantic id.
  raw = np.array([252 | (7 << 16), 10, 60, 40, 1, 99], np.uint32)
  np.testing.assert_array_equal(labels.semantickitti_raw_to_train(raw), [0, 0, 8, 8, -1, -1])


@needs_data
def test_convert_scannet_votenet_round_trip(tmp_path):
  src = os.path.join(DATA, "scannet_votenet50k")
  out = pointcept.convert_scannet_votenet(src, str(tmp_path), scenes=["scene0004_00"])
  assert [os.path.basename(p) for p in out] == ["scene0004_00"]
  assert sorted(os.listdir(out[0])) == ["color.npy", "coord.npy", "instance.npy", "segment20.npy"]
  assert np.load(os.path.join(out[0], "color.npy")).dtype == np.uint8
  back = scene_lib.load_scene(out[0])
  orig = pointcept.read_scannet_votenet(os.path.join(src, "scene0004_00"))
  np.testing.assert_array_equal(back.coord, orig.coord)
  np.testing.assert_array_equal(back.segment, orig.segment)
  np.testing.assert_array_equal(back.instance, orig.instance)
  np.testing.assert_allclose(back.color, orig.color, atol=1e-6)   # VoteNet colours are whole numbers 0-255


@needs_data
def test_convert_semantickitti_sequence(tmp_path):
  seq = os.path.join(DATA, "mmdet3d_tiny_fixtures", "semantickitti", "sequences", "00")
  out = pointcept.convert_semantickitti(seq, str(tmp_path))
  assert [os.path.basename(p) for p in out] == ["00_000000"]
  back = scene_lib.load_scene(out[0])
  assert back.num_points == 50 and back.strength.shape == (50,)
  assert glob.glob(str(tmp_path / ".*")) == []   # no temp folders left behind


def test_s3dis_stanford_room(tmp_path):
  room = tmp_path / "Area_5" / "office_1"
  (room / "Annotations").mkdir(parents=True)
  objects = {"ceiling_1": 5, "chair_1": 3, "chair_2": 4, "stairs_1": 2, "wall_1": 6}
  rng = np.random.default_rng(0)
  written = {}
  for stem, n in objects.items():
    pts = np.concatenate([rng.uniform(0, 5, (n, 3)).round(3), rng.integers(0, 256, (n, 3))], 1)
    np.savetxt(room / "Annotations" / f"{stem}.txt", pts, fmt="%.3f %.3f %.3f %d %d %d")
    written[stem] = pts
  s = pointcept.read_s3dis_room(str(room))
  assert s.num_points == sum(objects.values())
  names = labels.S3DIS_NAMES
  expected = np.concatenate([np.full(n, names.index(k.rsplit("_", 1)[0]) if k[:6] != "stairs" else
                                     names.index("clutter")) for k, n in objects.items()])
  np.testing.assert_array_equal(s.segment, expected)          # sorted file order = insertion order here
  np.testing.assert_array_equal(s.instance, np.repeat(np.arange(5), list(objects.values())))
  np.testing.assert_allclose(s.coord, np.concatenate([w[:, :3] for w in written.values()]), atol=1e-6)
  out = pointcept.convert_s3dis([str(tmp_path / "Area_5")], str(tmp_path / "pc"))
  assert [os.path.relpath(p, tmp_path / "pc") for p in out] == [os.path.join("Area_5", "office_1")]
  with open(room / "Annotations" / "wall_1.txt", "a") as f:
    f.write("1.0 2.0 3.0 10 20 3\x10\n")                        # the kind of glitch real S3DIS files have
  with pytest.raises(scene_lib.DataError, match=r"wall_1.txt:7: not a number"):
    pointcept.read_s3dis_room(str(room))
