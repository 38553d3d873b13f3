"""Scene validation and Pointcept-folder save/load round trips."""

import os

import numpy as np
import pytest

from dos_jax import data
from dos_jax import errors
from dos_jax.data import scene as scene_lib


def _scene(n=50, seed=0, name="s"):
  rng = np.random.default_rng(seed)
  normal = rng.normal(size=(n, 3))
  return data.Scene(
      coord=rng.uniform(-3, 3, (n, 3)).astype(np.float32),
      color=rng.integers(0, 256, (n, 3)).astype(np.float32) / 255,   # representable in uint8
      normal=(normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32),
      segment=rng.integers(-1, 20, n).astype(np.int32),
      instance=rng.integers(-1, 5, n).astype(np.int32),
      strength=rng.uniform(0, 1, n).astype(np.float32),
      name=name)


def test_exports():
  assert data.DataError is errors.DataError
  for name in ("Scene", "load_scene", "save_scene", "validate_scene", "make_scene", "scene_source"):
    assert callable(getattr(data, name))


def test_round_trip(tmp_path):
  s = _scene()
  path = data.save_scene(s, str(tmp_path / "room"), segment_key="segment20")
  assert sorted(os.listdir(path)) == ["color.npy", "coord.npy", "instance.npy", "normal.npy", "segment20.npy",
                                      "strength.npy"]
  assert np.load(os.path.join(path, "color.npy")).dtype == np.uint8
  assert np.load(os.path.join(path, "strength.npy")).shape == (50, 1)
  back = data.load_scene(path)
  for field in ("coord", "normal", "segment", "instance", "strength"):
    np.testing.assert_array_equal(getattr(back, field), getattr(s, field), err_msg=field)
  np.testing.assert_allclose(back.color, s.color, atol=1e-7)
  assert back.coord.dtype == np.float32 and back.segment.dtype == np.int32 and back.name == path


def test_round_trip_minimal_and_color_quantisation(tmp_path):
  rng = np.random.default_rng(1)
  s = data.Scene(coord=rng.normal(size=(7, 3)).astype(np.float32), color=rng.uniform(0, 1, (7, 3)).astype(np.float32))
  back = data.load_scene(data.save_scene(s, str(tmp_path / "a")))
  assert back.normal is None and back.segment is None and back.instance is None and back.strength is None
  assert np.abs(back.color - s.color).max() <= 0.5 / 255 + 1e-7   # uint8 storage rounds to the nearest level


def test_segment_key_choice(tmp_path):
  s = _scene(n=10)
  path = data.save_scene(s, str(tmp_path / "x"), segment_key="segment200")
  np.save(os.path.join(path, "segment20.npy"), np.zeros(10, np.int16))
  np.save(os.path.join(path, "segment.npy"), np.ones(10, np.int64))
  assert (data.load_scene(path).segment == 0).all()                       # segment20 first
  np.testing.assert_array_equal(data.load_scene(path, segment_key="segment200").segment, s.segment)
  assert (data.load_scene(path, segment_key="segment").segment == 1).all()
  os.remove(os.path.join(path, "segment20.npy"))
  np.testing.assert_array_equal(data.load_scene(path).segment, s.segment)  # then segment200
  with pytest.raises(errors.DataError, match="segment20.npy"):
    data.load_scene(path, segment_key="segment20")


def test_lidar_folder_without_color(tmp_path):
  p = tmp_path / "sweep"
  p.mkdir()
  np.save(p / "coord.npy", np.ones((4, 3), np.float64))        # float64 accepted and cast
  np.save(p / "strength.npy", np.linspace(0, 1, 4).astype(np.float32)[:, None])
  np.save(p / "segment.npy", np.array([[0], [1], [-1], [2]], np.int64))   # (N, 1) accepted
  s = data.load_scene(str(p))
  assert s.coord.dtype == np.float32 and (s.color == 0).all() and s.color.shape == (4, 3)
  np.testing.assert_array_equal(s.segment, [0, 1, -1, 2])
  assert s.strength.shape == (4,)


def test_save_is_atomic_and_refuses_bad_scenes(tmp_path):
  s = _scene()
  s.coord[3, 1] = np.nan
  with pytest.raises(errors.DataError, match="NaN"):
    data.save_scene(s, str(tmp_path / "bad"))
  assert os.listdir(tmp_path) == []                       # nothing written, not even a temp folder
  good = data.save_scene(_scene(seed=1), str(tmp_path / "ok"))
  with pytest.raises(errors.DataError, match="already exists"):
    data.save_scene(_scene(seed=2), good)
  data.save_scene(_scene(seed=2, n=30), good, overwrite=True)
  assert data.load_scene(good).num_points == 30
  assert os.listdir(tmp_path) == ["ok"]


def test_validate_casts_and_checks():
  s = _scene()
  s64 = data.Scene(coord=s.coord.astype(np.float64), color=s.color.astype(np.float64),
                   segment=s.segment.astype(np.int64), name="x")
  v = data.validate_scene(s64)
  assert v.coord.dtype == np.float32 and v.color.dtype == np.float32 and v.segment.dtype == np.int32
  assert data.validate_scene(s).coord is s.coord          # no copy when already canonical
  with pytest.raises(errors.DataError, match="myscene.*label 19 out of range for 10 classes"):
    data.validate_scene(data.Scene(s.coord, s.color, segment=np.full(50, 19)), name="myscene", num_classes=10)
  with pytest.raises(errors.DataError, match="color outside"):
    data.validate_scene(data.Scene(s.coord, s.color * 2, name="c"))
  with pytest.raises(errors.DataError, match="fewer than the required 64"):
    data.validate_scene(s, min_points=64)
  with pytest.raises(errors.DataError, match="recentre"):
    data.validate_scene(data.Scene(s.coord + 2e5, s.color, name="far"))
  with pytest.raises(errors.DataError, match="normal has 3 rows"):
    data.validate_scene(data.Scene(s.coord, s.color, normal=s.normal[:3], name="n"))
  with pytest.raises(errors.DataError, match="expected a Scene"):
    data.validate_scene({"coord": s.coord})


def test_max_abs_coord_is_a_float32_precision_bound():
  # float32 spacing at the bound stays below a centimetre, so grid sampling at 2 cm is still meaningful.
  assert np.spacing(np.float32(scene_lib.MAX_ABS_COORD)) < 0.01
