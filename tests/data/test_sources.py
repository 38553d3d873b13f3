"""Scene sources from config.data: synthetic, Pointcept folders (split rules) and the ScanNet demo tree."""

import os

import numpy as np
import pytest

from configs import common
from dos_jax import errors
from dos_jax.data import catalog
from dos_jax.data import scene as scene_lib
from dos_jax.data import sources
from dos_jax.data import synthetic
from tests import conftest


def _cfg(**kw):
  c = common.base_config().data
  for k, v in kw.items():
    c[k] = v
  return c


def test_synthetic_source_from_config():
  cfg = _cfg(num_scenes=5)
  train, val, every = (catalog.scene_source(cfg, s) for s in ("train", "val", "all"))
  assert (len(train), len(val), len(every)) == (5, 1, 6)
  assert train.num_classes == synthetic.NUM_CLASSES and train.class_names == synthetic.CLASS_NAMES["indoor"]
  assert train.groups == synthetic.CLASS_GROUPS["indoor"]
  assert set(train.items).isdisjoint(val.items) and every.items == train.items + val.items
  np.testing.assert_array_equal(train[3].coord, synthetic.make_scene((0, 0, 3), "indoor").coord)
  np.testing.assert_array_equal(val[0].coord, synthetic.make_scene((0, 1, 0), "indoor").coord)
  np.testing.assert_array_equal(train[-1].coord, train[4].coord)
  assert len(train[1:3]) == 2
  with pytest.raises(IndexError):
    train[5]                                           # pylint: disable=pointless-statement
  out = catalog.scene_source(_cfg(kind="outdoor", num_scenes=2), "train", seed=7)
  assert out[0].name == "synthetic-outdoor-7-0-0" and out[0].strength is not None


def test_bad_arguments_and_data(tmp_path):
  """Bad config values are the gate's (tests/test_schema.py); the library names a bad argument or bad data."""
  with pytest.raises(ValueError, match="split"):
    catalog.scene_source(_cfg(), "test")
  with pytest.raises(ValueError, match="format"):
    catalog.scene_source(_cfg(format="hdf5"), "train")
  with pytest.raises(ValueError, match="kind"):
    catalog.scene_source(_cfg(kind="forest"), "train")
  with pytest.raises(errors.DataError, match="does not exist"):
    catalog.scene_source(_cfg(format="pointcept", root=str(tmp_path / "none")), "train")
  with pytest.raises(errors.DataError, match="no scene folder"):
    catalog.scene_source(_cfg(format="pointcept", root=str(tmp_path)), "train")


def _write(root, names, n=20):
  rng = np.random.default_rng(0)
  for name in names:
    s = scene_lib.Scene(coord=rng.normal(size=(n, 3)).astype(np.float32), color=np.zeros((n, 3), np.float32),
                        segment=rng.integers(0, 13, n).astype(np.int32), name=name)
    scene_lib.save_scene(s, os.path.join(root, name))


def test_pointcept_split_folders(tmp_path):
  _write(str(tmp_path / "train"), ["a", "b", "c"])
  _write(str(tmp_path / "val"), ["d"])
  cfg = _cfg(format="pointcept", root=str(tmp_path), dataset="s3dis")
  train, val = catalog.scene_source(cfg, "train"), catalog.scene_source(cfg, "val")
  assert [os.path.basename(p) for p in train.items] == ["a", "b", "c"]
  assert [os.path.basename(p) for p in val.items] == ["d"]
  assert train.num_classes == 13 and train.class_names[0] == "ceiling"
  assert train[0].segment.max() < 13 and len(catalog.scene_source(cfg, "all")) == 4


def test_pointcept_flat_split_keeps_rooms_together(tmp_path):
  names = [f"scene{r:04d}_{k:02d}" for r in range(10) for k in range(1 + r % 3)]
  _write(str(tmp_path), names)
  cfg = _cfg(format="pointcept", root=str(tmp_path))
  train, val = catalog.scene_source(cfg, "train"), catalog.scene_source(cfg, "val")
  room = lambda p: os.path.basename(p)[:9]
  assert {room(p) for p in train.items}.isdisjoint({room(p) for p in val.items})
  assert sorted(train.items + val.items) == catalog.scene_source(cfg, "all").items
  assert 0.55 <= len(train) / len(names) <= 0.85
  again = catalog.scene_source(cfg, "train")
  assert again.items == train.items                    # deterministic


def test_nested_layout(tmp_path):
  _write(str(tmp_path / "Area_1"), ["office_1", "office_2"])
  _write(str(tmp_path / "Area_2"), ["hall_1"])
  found = sources.find_scene_dirs(str(tmp_path))
  assert [os.path.relpath(p, tmp_path) for p in found] == ["Area_1/office_1", "Area_1/office_2", "Area_2/hall_1"]


@pytest.mark.parametrize("split_folders", [False, True])
def test_scannet_demo_tree(tmp_path, split_folders):
  src = conftest.require_shared("data", "scannet_votenet50k")
  root = sources.scannet_demo_tree(src, str(tmp_path / "tree"), scenes=["scene0000_00", "scene0000_01",
                                                                        "scene0001_00", "scene0004_00"],
                                   split_folders=split_folders)
  cfg = _cfg(format="pointcept", root=root, dataset="scannet")
  train, val = catalog.scene_source(cfg, "train"), catalog.scene_source(cfg, "val")
  names = lambda s: sorted(os.path.basename(p) for p in s.items)
  assert sorted(names(train) + names(val)) == ["scene0000_00", "scene0000_01", "scene0001_00", "scene0004_00"]
  # Re-scans of room 0000 stay on one side.
  assert ("scene0000_00" in names(train)) == ("scene0000_01" in names(train))
  s = train[0]
  assert s.num_points == 50000 and train.num_classes == 20 and s.segment.max() < 20


def test_split_scenes_keeps_rooms_together_and_is_deterministic():
  names = [f"/d/scene{r:04d}_{k:02d}" for r in range(10) for k in range(1 + r % 3)]
  train, test = sources.split_scenes(names, 0.7, seed=0)
  assert sorted(train + test) == list(range(len(names)))
  assert not set(train) & set(test)
  rooms_train = {sources.room_of(names[i]) for i in train}
  rooms_test = {sources.room_of(names[i]) for i in test}
  assert not rooms_train & rooms_test
  assert 0.6 <= len(train) / len(names) <= 0.85
  # Same split whatever the input order.
  shuffled = names[::-1]
  train2, _ = sources.split_scenes(shuffled, 0.7, seed=0)
  assert sorted(shuffled[i] for i in train2) == sorted(names[i] for i in train)
  # Two rooms: one each side.
  train3, test3 = sources.split_scenes(["a/scene0000_00", "a/scene0000_01", "a/scene0001_00"], 0.7)
  assert len(train3) >= 1 and len(test3) >= 1
  assert sources.room_of("x/scene0007_02") == "scene0007" and sources.room_of("x/room_3") == "room_3"
