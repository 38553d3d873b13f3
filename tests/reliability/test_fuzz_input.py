"""Fuzzed input path: scene folders -> load_scene -> transforms -> views/masks -> fixed-shape batches.

Every input either works, and then its output satisfies the contract (Scene invariants; structs.py batch
invariants checked from first principles in `tests/reliability/__init__.py`: shapes and dtypes fixed by the config,
real slots first, orders are permutations with correct inverses, neighbours at exactly grid + offset and none
missed, parents are the pooled voxels, indices in range incl. the sentinel, no NaN/inf), or raises
`dos_jax.errors.DataError` whose message names the scene folder/file and the problem. Any other exception type,
or a run over the per-example time limit (a hang), fails the test.

Input kinds tried: 102 across the three fuzzers (counted per dimension; each hypothesis example combines one
value of every dimension), 195 hypothesis examples per run plus 2 fixed regression cases.
  folders (test_fuzz_scene_folder, 100 examples; 74 kinds over 13 dimensions): point count (0, 1, 2, 3, 4..150:
    5); geometry (blob, line, plane, one voxel, all points identical, two clusters 2e5 m apart, huge 1e4..1e9 m:
    7); coord dtype (f16, f32, f64, >f4, >f8, longdouble, i8, i32, i64, u8, bool, complex64, complex128, object,
    str: 15); coord shape ((n,3), (n,), (n,2), (n,4), (n,3,1), 0-d: 6); NaN/+inf/-inf injection (3); colour
    (absent, uint8, float 0-255, int > 255, float in [0,1], NaN, wrong length: 7); normal (absent, unit, zero,
    NaN: 4); label file (none, segment20, segment200, segment: 4); labels (random, all one class, all ignore,
    >= num_classes, < -1, > int32 max, float, bool, wrong length: 9); instance (absent/present: 2); strength
    (absent, (N,), (N,1), NaN: 4); corruption of one file (truncated at a random byte, random bytes, pickled
    object array that would run code, .npz, empty file, header claiming 1e12 points: 6); num_classes (None, 20:
    2). Loaded scenes then go through the views (train_views) and make_labeled_batch.
  in-memory scenes (test_fuzz_in_memory_scenes_through_the_pipeline, 40 examples): the same arrays (without the
    file corruptions) as Scene fields handed straight to the batching.
  geometry (test_fuzz_geometry_through_the_pipeline, 11 x 5 examples; 28 kinds over 8 dimensions): geometry
    (1 point, 2 points, all identical, a line, a plane, one voxel, two clusters at +-1e5 m, 1e5 m extents, a 1e5 m
    diagonal line, a dense ball, a blob: 11); 1..400 points; labels (none, one class, all ignore, random: 4);
    normals (2); strength (2); supervision (3); overflow policy (2); views (1, 2: 2); feature sets (2). Each runs
    grid_sample at 3 voxel sizes (vs an independent voxel count) and deterministically, the indoor, outdoor and
    all-registered-ops augmentations, make_views, block_mask (vs an independent cell count), train_views
    and make_labeled_batch.
  fixed: a pickled object array in coord/color/segment (never unpickled); clusters 4 * 2**21 voxels apart.
"""

import os
import shutil
import tempfile

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax import schema
from dos_jax.batching import patches
from dos_jax.batching import eval_batch
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import train_views
from dos_jax.batching import structs
from dos_jax.data import scene as scene_lib
from dos_jax.data import transforms
from dos_jax.data import views
from dos_jax.errors import ConfigError, DataError
from tests import reliability as rel

pytestmark = pytest.mark.system

def _view_batch(scenes, spec, rng):
  """The scenes' training views (one Generator, in order) stacked [B, V] for the contract checks."""
  return train_views.stack_views([train_views.train_views(s, spec, rng) for s in scenes])


TIME_LIMIT_S = 30   # per example; the slowest valid example takes well under 2 s
# No 'explain' phase: it reruns a failing example hundreds of times (minutes here) for little extra information.
SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
                suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large])


def _config(supervision="observable", overflow="downsample", num_views=2, feat_keys=("coord", "color", "normal")):
  c = synthetic_tiny.get_config("smoke")
  c.data.capacity = 256
  c.data.student_capacity = 128
  c.data.num_workers = 0
  c.supervision, c.data.overflow, c.data.num_views, c.data.feat_keys = supervision, overflow, num_views, feat_keys
  return c


def _blob_scene(n=300, seed=0):
  """An ordinary scene that fits every capacity of `_config()` (a 1.5 m square patch of floor)."""
  rng = np.random.default_rng(seed)
  return scene_lib.Scene(coord=np.c_[rng.uniform(0, 1.5, (n, 2)), np.zeros(n)].astype(np.float32),
                         color=rng.random((n, 3)).astype(np.float32), name="reference")


# Reference shapes per config, computed once on an ordinary scene: the fuzzed batches must match them exactly.
_REFERENCE = {}


def _reference(cfg, kind):
  key = (cfg.supervision, cfg.data.overflow, cfg.data.num_views, tuple(cfg.data.feat_keys), kind)
  if key not in _REFERENCE:
    ref = [_blob_scene(), _blob_scene(seed=1)]
    if kind == "train":
      spec = spec_lib.batch_spec(cfg)
      _REFERENCE[key] = rel.signature(_view_batch(ref, spec, np.random.default_rng(0)))
    else:
      _REFERENCE[key] = rel.signature(eval_batch.make_labeled_batch(ref, spec_lib.batch_spec(cfg))[0])
  return _REFERENCE[key]


def _through_pipeline(scene, cfg, seed, num_classes=None):
  """The views (train_views) and make_labeled_batch on [scene, scene]: contract holds or DataError naming the scene."""
  p = spec_lib.batch_spec(cfg)
  scenes = [scene, scene]
  try:
    batch = _view_batch(scenes, spec_lib.batch_spec(cfg), np.random.default_rng(seed))
  except DataError as e:
    assert str(e).startswith(scene.name + ":"), str(e)
  else:
    rel.check_train_batch(batch, p, _reference(cfg, "train"), [s.num_points for s in scenes])
  try:
    labeled, inverses = eval_batch.make_labeled_batch(scenes, spec_lib.batch_spec(cfg))
  except DataError as e:
    assert str(e).startswith(scene.name + ":"), str(e)
  else:
    rel.check_labeled_batch(labeled, inverses, p, p.capacity, _reference(cfg, "labeled"), scenes, num_classes)


# ---------------------------------------------------------------------------------------------- scene folders

_COORD_DTYPES = ["f2", "f4", "f8", ">f4", ">f8", "g", "i1", "i4", "i8", "u1", "?", "c8", "c16", "O", "U4"]
_GEOMETRIES = ["blob", "line", "plane", "voxel", "identical", "far", "huge"]


@st.composite
def _folder(draw):
  """{file key: array}, an optional corruption of one file, num_classes and a seed.

  Each field is mostly valid and bad with probability ~1/6 (`pick`), so about a third of the folders load and
  exercise the batching too.
  """
  def pick(good, bad):
    return draw(st.sampled_from(bad)) if draw(st.integers(0, 5)) == 0 else draw(st.sampled_from(good))

  n = pick(list(range(1, 4)) + [draw(st.integers(4, 150))] * 3, [0, 1, 2, 3])
  rng = np.random.default_rng(draw(st.integers(0, 2**20)))
  files = {}
  coord = rel.geometry(draw(st.sampled_from(_GEOMETRIES)), n, rng)
  if n and draw(st.integers(0, 5)) == 0:
    coord[rng.integers(n), rng.integers(3)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
  shape = pick(["n3"], ["n", "n2", "n4", "n31", "scalar"])
  coord = {"n3": coord, "n": coord[:, 0], "n2": coord[:, :2], "n4": np.c_[coord, coord[:, :1]],
           "n31": coord[..., None], "scalar": np.float64(1.0)}[shape]
  files["coord"] = rel.cast(np.asarray(coord), pick(["f4", "f8"], _COORD_DTYPES))
  color = pick([None, "uint8", "float255"], ["int300", "float01", "nan", "length"])
  if color is not None:
    m = n + 1 if color == "length" else n
    files["color"] = {"uint8": lambda: rng.integers(0, 256, (m, 3)).astype(np.uint8),
                      "int300": lambda: np.full((m, 3), 300, np.int32),
                      "float255": lambda: rng.uniform(0, 255, (m, 3)),
                      "float01": lambda: rng.uniform(0.1, 0.9, (m, 3)).astype(np.float32),
                      "nan": lambda: np.full((m, 3), np.nan, np.float32),
                      "length": lambda: np.zeros((m, 3), np.uint8)}[color]()
  normal = pick([None, "unit", "zero"], ["nan"])
  if normal is not None:
    files["normal"] = {"unit": np.tile(np.float32([0, 0, 1]), (n, 1)), "zero": np.zeros((n, 3), np.float32),
                       "nan": np.full((n, 3), np.nan, np.float32)}[normal]
  label_file = draw(st.sampled_from([None, "segment20", "segment200", "segment"]))
  if label_file is not None:
    files[label_file] = rel.labels(pick(rel.LABEL_KINDS[:3], rel.LABEL_KINDS[3:]), n, rng)
  if draw(st.integers(0, 3)) == 0:
    files["instance"] = rng.integers(-1, 5, n).astype(np.int32)
  strength = pick([None, "n", "n1"], ["nan"])
  if strength is not None:
    files["strength"] = {"n": rng.random(n).astype(np.float32), "n1": rng.random((n, 1)),
                         "nan": np.full(n, np.nan, np.float32)}[strength]
  corruption = None
  if draw(st.integers(0, 5)) == 0:
    corruption = (draw(st.sampled_from(sorted(files))),
                  draw(st.sampled_from(["truncate", "random", "pickle", "npz", "empty", "huge_header"])))
  num_classes = draw(st.sampled_from([None, 20]))
  return files, corruption, num_classes, int(rng.integers(0, 2**20))


def _write_folder(root, files, corruption, seed):
  path = os.path.join(root, "scene0042_00")
  os.mkdir(path)
  for key, arr in files.items():
    np.save(os.path.join(path, key + ".npy"), arr, allow_pickle=True)
  if corruption is not None:
    rel.corrupt(os.path.join(path, corruption[0] + ".npy"), corruption[1], np.random.default_rng(seed))
  return path


def _check_loaded(s, files, path, num_classes):
  n = s.num_points
  assert s.name == path and n >= 1
  assert s.coord.shape == (n, 3) and s.coord.dtype == np.float32 and np.isfinite(s.coord).all()
  assert np.abs(s.coord).max() <= scene_lib.MAX_ABS_COORD
  # What was written comes back (only float coords are accepted, cast to float32).
  np.testing.assert_array_equal(s.coord, np.asarray(files["coord"]).astype(np.float32))
  assert s.color.shape == (n, 3) and s.color.dtype == np.float32 and 0 <= s.color.min() <= s.color.max() <= 1
  if s.segment is not None:
    assert s.segment.shape == (n,) and s.segment.dtype == np.int32 and s.segment.min() >= -1
    assert num_classes is None or s.segment.max() < num_classes
  for key in ("normal", "strength"):
    value = getattr(s, key)
    assert value is None or (value.dtype == np.float32 and len(value) == n and np.isfinite(value).all())


@hypothesis.settings(max_examples=100, **SETTINGS)
@hypothesis.given(_folder())
def test_fuzz_scene_folder(example):
  files, corruption, num_classes, seed = example
  root = tempfile.mkdtemp(prefix="dos-fuzz-")
  try:
    path = _write_folder(root, files, corruption, seed)
    with rel.time_limit(TIME_LIMIT_S, "load_scene + batching"):
      try:
        s = scene_lib.load_scene(path, num_classes=num_classes)
      except DataError as e:
        msg = str(e)
        # Names the folder (or one of its files) and then says what is wrong.
        assert msg.startswith(path) and ": " in msg[len(path):] and len(msg.split(": ", 1)[1]) > 5, msg
        hypothesis.event("load_scene: DataError")
        s = None
      if s is not None:
        hypothesis.event("load_scene: loaded, then batched")
        _check_loaded(s, files, path, num_classes)
        assert corruption is None, f"a corrupt file was accepted: {corruption}"
        _through_pipeline(s, _config(), seed, num_classes)
    assert not any(name.endswith(".executed") for name in os.listdir(path)), "unpickling ran code"
  finally:
    shutil.rmtree(root)


@hypothesis.settings(max_examples=40, **SETTINGS)
@hypothesis.given(_folder())
def test_fuzz_in_memory_scenes_through_the_pipeline(example):
  """Scenes built in memory (not read by a validating source) go straight to the batching."""
  files, _, num_classes, seed = example
  color = files.get("color")
  if isinstance(color, np.ndarray) and color.dtype == np.uint8:
    color = color.astype(np.float32) / 255
  segment = next((files[k] for k in ("segment20", "segment200", "segment") if k in files), None)
  scene = scene_lib.Scene(coord=files["coord"], color=color, normal=files.get("normal"), segment=segment,
                          instance=files.get("instance"), strength=files.get("strength"), name="in-memory-scene")
  with rel.time_limit(TIME_LIMIT_S, "batching an in-memory scene"):
    _through_pipeline(scene, _config(), seed)


def test_pickled_object_array_never_executes(tmp_path):
  path = str(tmp_path / "scene")
  os.mkdir(path)
  np.save(os.path.join(path, "coord.npy"), np.zeros((4, 3), np.float32))
  for key in ("coord", "color", "segment20"):
    target = os.path.join(path, key + ".npy")
    rel.corrupt(target, "pickle", np.random.default_rng(0))
    with pytest.raises(DataError, match=f"{key}.npy: unreadable or corrupt .npy"):
      scene_lib.load_scene(path)
    assert not os.path.exists(target + ".executed"), "unpickling ran code"
    # The trap is real: unpickling with pickle allowed does run it (so the check above means something).
    np.load(target, allow_pickle=True)
    assert os.path.isdir(target + ".executed")
    os.rmdir(target + ".executed")
    restored = {"coord": np.zeros((4, 3), np.float32), "color": np.zeros((4, 3), np.uint8),
                "segment20": np.zeros(4, np.int32)}[key]
    np.save(target, restored)


# -------------------------------------------------------------------------------------- in-memory geometry

_SHAPES = ["one", "two", "identical", "line", "plane", "voxel", "far", "extent", "long_line", "ball", "blob"]


def _extreme_scene(kind, n, labels, with_normal, with_strength, rng):
  """A valid Scene (it passes validate_scene) with extreme geometry."""
  limit = scene_lib.MAX_ABS_COORD
  if kind == "one":
    coord = rng.uniform(-limit, limit, (1, 3))
  elif kind == "two":
    coord = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]]) + rng.uniform(-10, 10, 3)
  elif kind == "extent":
    coord = rng.uniform(-limit, limit, (n, 3))
  elif kind == "long_line":
    coord = np.outer(np.linspace(-limit, limit, n), [1.0, 1.0, 1.0])
  else:
    coord = rel.geometry(kind, n, rng)
  n = len(coord)
  segment = {"none": None, "one_class": np.full(n, 3, np.int32), "ignore": np.full(n, -1, np.int32),
             "random": rng.integers(-1, 20, n).astype(np.int32)}[labels]
  normal = None
  if with_normal:
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)
  scene = scene_lib.Scene(coord=coord.astype(np.float32), color=rng.random((n, 3)).astype(np.float32),
                          normal=normal, segment=segment, name=f"extreme-{kind}-{n}",
                          strength=rng.random(n).astype(np.float32) if with_strength else None)
  return scene_lib.validate_scene(scene, num_classes=20)


def _check_grid_sample(coord, grid_size, rng):
  keep, inverse = transforms.grid_sample(coord, grid_size, rng)
  vox = patches.voxelize(coord, grid_size)
  assert len(keep) == len(np.unique(vox, axis=0)), "not one representative per occupied voxel"
  assert len(np.unique(keep)) == len(keep) and keep.min() >= 0 and keep.max() < len(coord)
  assert inverse.shape == (len(coord),) and (vox[keep[inverse]] == vox).all(), "inverse map to another voxel"


def _check_augment(data, op, rng):
  out = op(data, rng)
  n = len(data["coord"])
  assert out["coord"].shape == (n, 3) and np.isfinite(out["coord"]).all()
  assert (out["point_index"] == data["point_index"]).all()
  assert out["color"].shape == (n, 3) and 0 <= out["color"].min() and out["color"].max() <= 1
  if data.get("normal") is not None:
    assert np.isfinite(out["normal"]).all()
  return out


@pytest.mark.parametrize("kind", _SHAPES)
@hypothesis.settings(max_examples=5, **SETTINGS)
@hypothesis.given(n=st.integers(1, 400),
                  labels=st.sampled_from(["none", "one_class", "ignore", "random"]), with_normal=st.booleans(),
                  with_strength=st.booleans(), supervision=st.sampled_from(spec_lib.SUPERVISION),
                  overflow=st.sampled_from(spec_lib.OVERFLOW), num_views=st.sampled_from([2, 2, 1]),
                  feat_keys=st.sampled_from([("coord", "color", "normal"), ("coord", "strength")]),
                  seed=st.integers(0, 2**20))
def test_fuzz_geometry_through_the_pipeline(kind, n, labels, with_normal, with_strength, supervision, overflow,
                                            num_views, feat_keys, seed):
  rng = np.random.default_rng(seed)
  scene = _extreme_scene(kind, n, labels, with_normal, with_strength, rng)
  cfg = _config(supervision, overflow, num_views, feat_keys)
  with rel.time_limit(TIME_LIMIT_S, f"pipeline on {scene.name}"):
    # Host transforms one by one (they run on already-validated scenes: no DataError is expected here).
    data = transforms.from_scene(scene)
    for grid_size in (cfg.data.grid_size, 1e-3, 10.0):
      _check_grid_sample(scene.coord, grid_size, rng)
    _check_grid_sample(scene.coord, cfg.data.grid_size, None)
    for spec in (transforms.default_augmentations("indoor"), transforms.default_augmentations("outdoor"),
                 [(name, {}) for name in sorted(transforms.OPS)]):
      _check_augment(data, transforms.build(spec), rng)
    vs = views.make_views(data, 2, cfg.data.crop_ratio, cfg.data.grid_size,
                          transforms.build(transforms.default_augmentations("indoor")), rng)
    for view in vs:
      idx = view["point_index"]
      assert len(view["coord"]) >= 1 and len(np.unique(idx)) == len(idx) and idx.max() < scene.num_points
      vox = patches.voxelize(view["coord"], cfg.data.grid_size)
      assert len(np.unique(vox, axis=0)) == len(vox), "a view keeps two points of one voxel"
      offset = rng.uniform(0, cfg.data.mask_cell, 3)
      masked = views.block_mask(view["coord"], cfg.data.mask_cell, cfg.mask_ratio, rng, offset=offset)
      cells = np.unique(np.floor((view["coord"].astype(np.float64) + offset) / cfg.data.mask_cell), axis=0)
      assert masked.shape == (len(view["coord"]),) and masked.dtype == bool
      if len(cells) >= 2:
        assert masked.any() and not masked.all(), "visible/masked not both non-empty"
      else:
        assert not masked.any()
    _through_pipeline(scene, cfg, seed)


def test_far_clusters_keep_exact_keys_and_locality():
  """Regression: voxel keys of a cloud spanning > 2**21 voxels per axis overflowed int64 (a ValueError deep in
  the neighbour lookup) and serialization codes dropped high bits (far clusters interleaved in patch order)."""
  rng = np.random.default_rng(0)
  half = 60
  grid_size = 0.02
  # Clusters 4 * 2**21 voxels apart (~1.7e5 m): linear keys need ~70 bits, and 21-bit codes would coincide.
  shift = 2 * 2**21 * grid_size
  coord = np.r_[rng.uniform(0, 1, (half, 3)) - shift, rng.uniform(0, 1, (half, 3)) + shift].astype(np.float32)
  _check_grid_sample(coord, grid_size, None)
  keys = transforms.voxel_keys(coord, grid_size)
  vox = patches.voxelize(coord, grid_size)
  same_key = keys[:, None] == keys[None, :]
  same_voxel = (vox[:, None, :] == vox[None, :, :]).all(-1)
  assert (same_key == same_voxel).all()
  feat = np.zeros((2 * half, 1), np.float32)
  # stage_ratio 1: points this sparse barely pool.
  ps = patches.build_point_set(coord, feat, np.arange(2 * half), grid_size, 128, 3, 64, name="far", ratio=1.0)
  rel.check_point_set(ps, patches.stage_capacities(128, 3, 64, 1.0), 1, 2 * half, "far clusters")
  # Morton codes grow with each coordinate, so a cluster dominating the other on every axis comes after it (the
  # Hilbert curve is not monotone: no such guarantee).
  for o in (structs.ORDERS.index("z"), structs.ORDERS.index("z-trans")):
    cluster = ps.stages[0].order[o, :2 * half] >= half
    assert (np.diff(cluster.astype(int)) != 0).sum() == 1, f"order {structs.ORDERS[o]} interleaves the clusters"


_BAD_OPS = [("random_scale", dict(scale=(0.0, 0.0))), ("random_scale", dict(scale=(0.0, 0.0), anisotropic=True)),
            ("random_scale", dict(scale=(1.0,))), ("random_scale", dict(scale=1.1)),
            ("random_rotate", dict(angle=(float("nan"), 0.0))), ("random_rotate", dict(angle=(10.0, -10.0))),
            ("random_rotate", dict(center=(0.0, 1.0))), ("random_flip", dict(p="x")), ("random_flip", dict(p=1.5)),
            ("random_jitter", dict(sigma=float("inf"))), ("random_jitter", dict(clip=-1.0)),
            ("chromatic_jitter", dict(std=float("nan"))), ("chromatic_translation", dict(ratio=-0.1)),
            ("chromatic_auto_contrast", dict(blend_factor=2.0))]


@pytest.mark.parametrize("op,kwargs", _BAD_OPS)
def test_bad_augmentation_parameters_fail_at_config_time(op, kwargs):
  """Regression: these crashed in the first batch (LinAlgError, IndexError, TypeError) or made NaN colours."""
  cfg = _config()
  cfg.data.augmentations = ((op, kwargs),)
  with pytest.raises(ConfigError, match=f"config.data.augmentations: {op}: {next(iter(kwargs))}="):
    schema.validate(cfg)


@hypothesis.settings(max_examples=40, **SETTINGS)
@hypothesis.given(lo=st.floats(1e-3, 10), span=st.floats(0, 10), p=st.floats(0, 1), sigma=st.floats(0, 1),
                  angle=st.floats(-720, 720), seed=st.integers(0, 2**20))
def test_fuzz_valid_augmentation_parameters_stay_finite(lo, span, p, sigma, angle, seed):
  spec = [("random_rotate", dict(angle=(min(angle, 0.0), max(angle, 0.0)), axis="x", p=p)),
          ("random_scale", dict(scale=(lo, lo + span), anisotropic=True, p=p)), ("random_flip", dict(p=p)),
          ("random_jitter", dict(sigma=sigma, clip=sigma)), ("chromatic_auto_contrast", dict(p=p)),
          ("chromatic_translation", dict(p=p, ratio=sigma)), ("chromatic_jitter", dict(p=p, std=sigma))]
  rng = np.random.default_rng(seed)
  scene = _extreme_scene("plane", 30, "random", True, False, rng)
  out = _check_augment(transforms.from_scene(scene), transforms.build(spec), rng)
  assert np.allclose(np.linalg.norm(out["normal"], axis=1), 1.0, atol=1e-4), "normals no longer unit"
