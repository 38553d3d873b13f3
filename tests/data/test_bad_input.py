"""Bad input to the scene loaders raises DataError naming the file and the problem.

Input kinds tried (26 hand-written cases + a hypothesis fuzz over shapes, dtypes and values):
  folder: missing folder, a file instead of a folder, missing coord.npy, requested segment file missing;
  corrupt: truncated .npy, random bytes, pickled object array, an .npz saved as .npy;
  coord: int dtype, float16, wrong column count, 1-D, 3-D, NaN, +inf, empty (0 points), huge (1e7 m);
  color: out of 0-255, float [0, 1] mistaken for 0-255, NaN, string dtype, wrong length;
  labels: float dtype, < -1, >= num_classes, wrong length, 2-D (N, 2);
  normal: wrong shape; raw readers: truncated .bin, label count mismatch, missing label file.
Fuzz (hypothesis, 2 tests, 300 examples):
  files: random N (0..40), dtypes (f16/f32/f64/i8/i32/u8/bool), column counts, NaN/inf injection, duplicate
    points, huge values and label ranges for coord / color / segment: every case either loads a scene that
    satisfies the Scene invariants or raises DataError whose message names a file in the folder;
  in memory (validate_scene): the same arrays plus scalars, None, nested lists, complex and string dtypes, tiny
    and all-one-class clouds: validated scenes satisfy the invariants, the rest raise DataError naming the scene.
"""

import os
import shutil
import tempfile

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from dos_jax import data
from dos_jax.data import pointcept


def _folder(tmp_path, n=20, **overrides):
  """A valid scene folder with arrays replaced by `overrides` (None removes the file, bytes are written raw)."""
  rng = np.random.default_rng(0)
  arrays = dict(coord=rng.normal(size=(n, 3)).astype(np.float32),
                color=rng.integers(0, 256, (n, 3)).astype(np.uint8),
                normal=np.tile(np.float32([0, 0, 1]), (n, 1)),
                segment20=rng.integers(-1, 20, n).astype(np.int16))
  arrays.update(overrides)
  path = tmp_path / "scene0007_00"
  path.mkdir()
  for key, value in arrays.items():
    if value is None:
      continue
    if isinstance(value, bytes):
      (path / f"{key}.npy").write_bytes(value)
    else:
      np.save(path / f"{key}.npy", value, allow_pickle=True)
  return str(path)


def _npy_bytes(arr):
  with tempfile.TemporaryFile() as f:
    np.save(f, arr)
    f.seek(0)
    return f.read()


CASES = {
    "missing coord": (dict(coord=None), "coord.npy", "not found"),
    "truncated npy": (dict(coord=_npy_bytes(np.zeros((20, 3), np.float32))[:100]), "coord.npy", "corrupt"),
    "random bytes": (dict(color=b"\x00garbage" * 20), "color.npy", "corrupt"),
    "pickled objects": (dict(segment20=np.array([{"a": 1}] * 20, dtype=object)), "segment20.npy", "corrupt"),
    "int coords": (dict(coord=np.zeros((20, 3), np.int32)), "coord.npy", "int32 not accepted"),
    "float16 coords": (dict(coord=np.zeros((20, 3), np.float16)), "coord.npy", "float16 not accepted"),
    "coord 4 columns": (dict(coord=np.zeros((20, 4), np.float32)), "coord.npy", r"expected \(N, 3\)"),
    "coord 1-D": (dict(coord=np.zeros(60, np.float32)), "coord.npy", r"expected \(N, 3\)"),
    "coord 3-D": (dict(coord=np.zeros((20, 3, 1), np.float32)), "coord.npy", r"expected \(N, 3\)"),
    "nan coord": (dict(coord=np.where(np.arange(60).reshape(20, 3) == 7, np.nan, 0).astype(np.float32)),
                  "coord.npy", "1 point.*NaN/inf"),
    "inf coord": (dict(coord=np.full((20, 3), np.inf, np.float32)), "coord.npy", "20 point.*NaN/inf"),
    "empty cloud": (dict(coord=np.zeros((0, 3), np.float32), color=None, normal=None, segment20=None),
                    "coord.npy", "empty"),
    "huge coords": (dict(coord=np.full((20, 3), 1e7, np.float32)), "scene0007_00", "recentre"),
    "color > 255": (dict(color=np.full((20, 3), 300, np.int32)), "color.npy", "outside 0-255"),
    "color in [0,1]": (dict(color=np.full((20, 3), 0.5, np.float32)), "color.npy", "look like"),
    "nan color": (dict(color=np.full((20, 3), np.nan, np.float32)), "color.npy", "NaN"),
    "string color": (dict(color=np.full((20, 3), "red")), "color.npy", "not numeric"),
    "short color": (dict(color=np.zeros((19, 3), np.uint8)), "color.npy", "19 rows.*20 points"),
    "float labels": (dict(segment20=np.zeros(20, np.float32)), "segment20.npy", "must be integers"),
    "label < -1": (dict(segment20=np.full(20, -2, np.int32)), "segment20.npy", "label -2 out of range"),
    "label length": (dict(segment20=np.zeros(21, np.int32)), "segment20.npy", "21 rows.*20 points"),
    "labels 2-D": (dict(segment20=np.zeros((20, 2), np.int32)), "segment20.npy", r"expected \(N,\)"),
    "normal shape": (dict(normal=np.zeros((20, 2), np.float32)), "normal.npy", r"expected \(N, 3\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_folder(tmp_path, case):
  overrides, fname, problem = CASES[case]
  path = _folder(tmp_path, **overrides)
  with pytest.raises(data.DataError, match=problem) as info:
    data.load_scene(path)
  assert os.path.join(path, fname) in str(info.value) or fname == "scene0007_00" and path in str(info.value)


def test_labels_beyond_num_classes(tmp_path):
  path = _folder(tmp_path, segment20=np.full(20, 20, np.int32))
  data.load_scene(path)      # fine while the class count is unknown
  with pytest.raises(data.DataError, match="segment20.npy: label 20 out of range for 20 classes"):
    data.load_scene(path, num_classes=20)


def test_missing_folder_and_not_a_folder(tmp_path):
  with pytest.raises(data.DataError, match="nowhere: scene folder does not exist"):
    data.load_scene(str(tmp_path / "nowhere"))
  (tmp_path / "file").write_text("x")
  with pytest.raises(data.DataError, match="file: not a folder"):
    data.load_scene(str(tmp_path / "file"))


def test_npz_named_npy(tmp_path):
  path = _folder(tmp_path)
  os.remove(os.path.join(path, "coord.npy"))
  np.savez(os.path.join(path, "coord.npz"), np.zeros((20, 3), np.float32))
  os.rename(os.path.join(path, "coord.npz"), os.path.join(path, "coord.npy"))
  with pytest.raises(data.DataError, match="coord.npy: expected one array"):
    data.load_scene(path)


def test_raw_readers(tmp_path):
  np.zeros(10, np.float32).tofile(tmp_path / "f.bin")            # 40 bytes: not a multiple of 16
  with pytest.raises(data.DataError, match=r"f.bin: 40 bytes is not a multiple"):
    pointcept.read_semantickitti(str(tmp_path / "f.bin"))
  np.zeros((4, 4), np.float32).tofile(tmp_path / "g.bin")
  np.zeros(5, np.uint32).tofile(tmp_path / "g.label")
  with pytest.raises(data.DataError, match=r"g.label: 5 labels but .*g.bin has 4 points"):
    pointcept.read_semantickitti(str(tmp_path / "g.bin"), str(tmp_path / "g.label"))
  with pytest.raises(data.DataError, match="h.label: file not found"):
    pointcept.read_semantickitti(str(tmp_path / "g.bin"), str(tmp_path / "h.label"))
  with pytest.raises(data.DataError, match="nope: folder does not exist"):
    pointcept.find_scannet_votenet(str(tmp_path / "nope"))
  (tmp_path / "x.las").write_bytes(b"LASF" + b"\0" * 50)
  with pytest.raises(data.DataError, match="x.las: unreadable LAS"):
    pointcept.read_las(str(tmp_path / "x.las"))


_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8, np.bool_]


@st.composite
def _arrays(draw):
  n = draw(st.integers(0, 40))
  out = {}
  for key, cols in (("coord", 3), ("color", 3), ("segment", None)):
    if key != "coord" and draw(st.booleans()):
      continue                                            # optional file absent
    rows = n if draw(st.integers(0, 5)) else draw(st.integers(0, 41))   # mostly matching lengths
    ncol = cols if draw(st.integers(0, 5)) else draw(st.integers(1, 4))
    shape = (rows,) if ncol is None else (rows, ncol)
    dtype = draw(st.sampled_from(_DTYPES))
    scale = draw(st.sampled_from([1.0, 255.0, 1e3, 1e8]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    arr = rng.uniform(-2 if key == "segment" else 0, scale, shape)
    if draw(st.booleans()) and arr.size:
      arr[tuple(rng.integers(0, s) for s in arr.shape)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if draw(st.booleans()) and arr.shape[0] > 1:
      arr[1] = arr[0]                                   # duplicate points
    with np.errstate(invalid="ignore", over="ignore"):
      out[key] = arr.astype(dtype)
  return out


@pytest.mark.system
@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(_arrays())
def test_fuzz_load_scene(arrays):
  root = tempfile.mkdtemp()
  try:
    path = os.path.join(root, "fz")
    os.mkdir(path)
    for key, arr in arrays.items():
      np.save(os.path.join(path, key + ".npy"), arr)
    try:
      s = data.load_scene(path)
    except data.DataError as e:
      assert path in str(e)
      return
    n = s.num_points
    assert n > 0 and s.coord.shape == (n, 3) and s.coord.dtype == np.float32 and np.isfinite(s.coord).all()
    assert s.color.shape == (n, 3) and 0 <= s.color.min() and s.color.max() <= 1
    if s.segment is not None:
      assert s.segment.shape == (n,) and s.segment.dtype == np.int32 and s.segment.min() >= -1
  finally:
    shutil.rmtree(root)


_ODD = [None, 3.0, "abc", [[1, 2, 3]], [[1, 2], [3]], np.zeros((2, 3), np.complex64), np.full((2, 3), "x"),
        np.zeros((0, 3), np.float32), np.ones((1, 3), np.float32)]


@st.composite
def _scenes(draw):
  arrays = draw(_arrays())
  fields = {"coord": arrays.get("coord"), "color": arrays.get("color"), "segment": arrays.get("segment")}
  for key in ("coord", "color", "normal", "segment", "instance", "strength"):
    if draw(st.integers(0, 9)) == 0:
      fields[key] = draw(st.sampled_from(_ODD))
  if fields.get("color") is None and fields["coord"] is not None and draw(st.booleans()):
    n = len(np.atleast_1d(fields["coord"]))
    fields["color"] = np.zeros((n, 3), np.float32)
  if draw(st.booleans()) and isinstance(fields["segment"], np.ndarray) and fields["segment"].size:
    fields["segment"] = np.full(fields["segment"].shape, 3, np.int32)      # all one class
  return fields


@pytest.mark.system
@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(_scenes())
def test_fuzz_validate_scene(fields):
  s = data.Scene(coord=fields["coord"], color=fields["color"], normal=fields.get("normal"),
                 segment=fields.get("segment"), instance=fields.get("instance"), strength=fields.get("strength"),
                 name="fuzzed-scene")
  try:
    v = data.validate_scene(s, num_classes=24)
  except data.DataError as e:
    assert str(e).startswith("fuzzed-scene")
    return
  n = v.num_points
  assert n > 0 and v.coord.shape == (n, 3) and v.coord.dtype == np.float32 and np.isfinite(v.coord).all()
  assert np.abs(v.coord).max() <= 1e5 and v.color.shape == (n, 3) and 0 <= v.color.min() <= v.color.max() <= 1
  for f in ("segment", "instance"):
    arr = getattr(v, f)
    assert arr is None or (arr.shape == (n,) and arr.dtype == np.int32 and arr.min() >= -1)
  assert v.segment is None or v.segment.max() < 24
