"""TFDS builders: build into tmp_path with array_record and read back through as_data_source, without TensorFlow."""

import os
import sys

import numpy as np
import pytest

from dos_jax import errors
from dos_jax import schema
from dos_jax.data import catalog
from dos_jax.data import scene as scene_lib
from dos_jax.data import sources
from dos_jax.data import synthetic
from dos_jax.data import tfds_builder

FIELDS = ("coord", "color", "normal", "segment", "instance", "strength")


def _equal(a, b):
  for f in FIELDS:
    x, y = getattr(a, f), getattr(b, f)
    assert (x is None and y is None) or np.array_equal(x, y), f


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  tfds_builder.prepare_synthetic(d, "indoor", num_train=3, num_val=1)
  return d


def test_synthetic_round_trip(synthetic_dir):
  src = tfds_builder.tfds_source(synthetic_dir, "train")
  assert len(src) == 3 and src.num_classes == synthetic.NUM_CLASSES
  assert src.class_names == synthetic.CLASS_NAMES["indoor"]
  assert src.groups == synthetic.CLASS_GROUPS["indoor"]
  for i in range(3):
    got, want = src[i], synthetic.make_scene((0, 0, i), "indoor")
    assert got.name == want.name
    _equal(got, want)
  val = tfds_builder.tfds_source(synthetic_dir, "val")
  _equal(val[0], synthetic.make_scene((0, 1, 0), "indoor"))
  assert len(tfds_builder.tfds_source(synthetic_dir, "all")) == 4
  assert "tensorflow" not in sys.modules          # built and read without TensorFlow


def test_scene_source_tfds_format(synthetic_dir):
  cfg = schema.default_config().data
  cfg.update(format="tfds", root=synthetic_dir, dataset="synthetic", kind="indoor")
  src = catalog.scene_source(cfg, "train")
  _equal(src[2], synthetic.make_scene((0, 0, 2), "indoor"))


def test_pointcept_builder(tmp_path):
  root = tmp_path / "scenes"
  rng = np.random.default_rng(0)
  scenes = []
  for i, name in enumerate(["scene0000_00", "scene0000_01", "scene0001_00", "scene0002_00", "scene0003_00"]):
    n = 50 + i
    s = scene_lib.Scene(coord=rng.normal(size=(n, 3)).astype(np.float32),
                        color=rng.integers(0, 256, (n, 3)).astype(np.float32) / np.float32(255),
                        segment=rng.integers(-1, 20, n).astype(np.int32), name=name)
    if i % 2:
      s.normal = np.tile(np.float32([0, 0, 1]), (n, 1))
    scene_lib.save_scene(s, str(root / name), segment_key="segment20")
    scenes.append(s)
  data_dir = str(tmp_path / "tfds")
  tfds_builder.prepare_pointcept(data_dir, str(root), dataset="scannet")
  for split in ("train", "val"):
    direct = sources.pointcept_source(str(root), split, "scannet")
    via = tfds_builder.tfds_source(data_dir, split)
    assert len(via) == len(direct) > 0 and via.num_classes == 20
    for i in range(len(via)):
      assert via[i].name == os.path.basename(direct.items[i])
      _equal(via[i], direct[i])


def test_errors(tmp_path, synthetic_dir):
  with pytest.raises(errors.DataError, match="does not exist"):
    tfds_builder.tfds_source(str(tmp_path / "none"))
  with pytest.raises(errors.ConfigError, match="no prepared dataset"):
    tfds_builder.tfds_source(str(tmp_path))
