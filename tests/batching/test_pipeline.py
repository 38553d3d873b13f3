"""Training/eval batches: contract fields, visible-only student, targets, cross matches, overflow, determinism."""

import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax.batching import pipeline
from dos_jax.data.scene import Scene
from dos_jax.errors import ConfigError, DataError


def _room(seed, n=6000):
  """Floor and two walls of a 2 x 1.6 x 1.5 m room, with colours, normals and labels."""
  rng = np.random.default_rng(seed)
  size = np.array([2.0, 1.6, 1.5])
  coord = rng.uniform(0, 1, (n, 3)) * size
  face = rng.choice(3, n, p=[0.4, 0.3, 0.3])  # 0: floor z=0, 1: wall x=0, 2: wall y=0
  axis = np.array([2, 0, 1])[face]
  coord[np.arange(n), axis] = 0.0
  normal = np.zeros((n, 3), np.float32)
  normal[np.arange(n), axis] = 1.0
  return Scene(coord=coord.astype(np.float32), color=rng.random((n, 3)).astype(np.float32), normal=normal,
               segment=face.astype(np.int32), name=f"room{seed}")


def _cfg(**kw):
  cfg = synthetic_tiny.get_config()
  cfg.data.capacity = 512
  cfg.data.student_capacity = 256
  cfg.data.num_workers = 0
  for k, v in kw.items():
    node = cfg
    *path, last = k.split(".")
    for part in path:
      node = node[part]
    node[last] = v
  return cfg


SCENES = [_room(i) for i in range(3)]


def _leaves(tree, prefix=""):
  import dataclasses
  if isinstance(tree, np.ndarray):
    yield prefix, tree
  elif isinstance(tree, tuple):
    for i, t in enumerate(tree):
      yield from _leaves(t, f"{prefix}[{i}]")
  else:
    for f in dataclasses.fields(tree):
      yield from _leaves(getattr(tree, f.name), f"{prefix}.{f.name}")


def _view(batch, b, v):
  """The (b, v) element of a [B, V] TrainBatch as plain arrays."""
  import dataclasses

  def pick(t):
    if isinstance(t, np.ndarray):
      return t[b, v]
    if isinstance(t, tuple):
      return tuple(pick(x) for x in t)
    return type(t)(**{f.name: pick(getattr(t, f.name)) for f in dataclasses.fields(t)})
  return pick(batch)


def test_shapes_fixed_and_fields():
  cfg = _cfg()
  a = pipeline.make_train_batch(SCENES[:2], cfg, np.random.default_rng(0))
  b = pipeline.make_train_batch(SCENES[1:], cfg, np.random.default_rng(5))
  shapes_a = {k: (x.shape, x.dtype) for k, x in _leaves(a)}
  assert shapes_a == {k: (x.shape, x.dtype) for k, x in _leaves(b)}
  assert a.teacher.coord.shape == (2, 2, 512, 3) and a.student.coord.shape == (2, 2, 256, 3)
  assert a.teacher.feat.shape == (2, 2, 512, 9)  # coord + color + normal
  assert [s.valid.shape[-1] for s in a.teacher.stages] == [512, 256, 128]
  assert a.target_index.dtype == np.int32 and a.cross_valid.dtype == bool and a.mask_token.shape == (2, 2, 256)
  assert not a.mask_token.any()


def test_student_holds_exactly_the_visible_points():
  # Same rng: 'observable' and 'masked_tokens' draw identical views and masks, so the observable student must be
  # exactly the teacher's points that masked_tokens marks as not masked.
  obs = pipeline.make_train_batch(SCENES[:2], _cfg(**{"data.student_capacity": 512}), np.random.default_rng(3))
  tok = pipeline.make_train_batch(SCENES[:2], _cfg(supervision="masked_tokens"), np.random.default_rng(3))
  for b in range(2):
    for v in range(2):
      o, t = _view(obs, b, v), _view(tok, b, v)
      np.testing.assert_array_equal(o.teacher.point_index, t.teacher.point_index)
      masked_ids = t.teacher.point_index[t.mask_token]
      visible_ids = t.teacher.point_index[t.teacher.valid & ~t.mask_token]
      student_ids = o.student.point_index[o.student.valid]
      assert set(student_ids) == set(visible_ids)
      assert not set(student_ids) & set(masked_ids)
      ratio = t.mask_token.sum() / t.teacher.valid.sum()
      assert 0.4 < ratio < 0.95  # mask_ratio 0.7 of cells


@pytest.mark.parametrize("supervision", ["observable", "masked_tokens", "token_jitter"])
def test_targets_and_cross_matches(supervision):
  cfg = _cfg(supervision=supervision)
  batch = pipeline.make_train_batch(SCENES[:2], cfg, np.random.default_rng(1))
  n_t = cfg.data.capacity
  radius = 2 * cfg.data.grid_size
  for b in range(2):
    scene_coord = SCENES[b].coord
    for v in range(2):
      x = _view(batch, b, v)
      other = _view(batch, b, 1 - v).teacher
      sv = x.student.valid
      # Same-view targets: the teacher slot holds the same original point.
      np.testing.assert_array_equal(x.teacher.point_index[x.target_index[sv]], x.student.point_index[sv])
      assert (x.target_index[~sv] == n_t).all() and not x.target_valid[~sv].any()
      if supervision == "observable":
        np.testing.assert_array_equal(x.target_valid, sv)
      else:
        np.testing.assert_array_equal(x.target_valid, x.mask_token)
        assert 0 < x.mask_token.sum() < sv.sum()
        np.testing.assert_array_equal(x.student.valid, x.teacher.valid)
        moved = np.abs(x.student.coord - x.teacher.coord).max(1) > 0
        if supervision == "masked_tokens":
          assert not moved.any()
        else:
          assert not moved[~x.mask_token].any() and moved[x.mask_token].mean() > 0.9
      # Cross-view: nearest real point of the other view's teacher by original coordinates, within the radius.
      cv = x.cross_valid
      assert cv.sum() > 10 and not cv[~sv].any() and (x.cross_index[~cv] == n_t).all()
      if supervision != "observable":
        # The token baselines supervise masked points only in BOTH terms (a visible point's cross-view target
        # would give the baseline part of the observable supervision).
        assert not cv[~x.mask_token].any()
      other_ids = other.point_index[other.valid]
      for i in np.flatnonzero(cv if supervision != "observable" else sv)[::7]:
        d = np.linalg.norm(scene_coord[other_ids] - scene_coord[x.student.point_index[i]], axis=1)
        if cv[i]:
          j = x.cross_index[i]
          assert other.valid[j]
          np.testing.assert_allclose(np.linalg.norm(scene_coord[other.point_index[j]] -
                                                    scene_coord[x.student.point_index[i]]), d.min(), atol=1e-6)
          assert d.min() <= radius
        else:
          assert d.min() > radius - 1e-6


def test_overflow_error_and_downsample():
  cfg = _cfg(mask_ratio=0.2, **{"data.capacity": 128, "data.student_capacity": 64, "data.overflow": "error"})
  with pytest.raises(DataError, match="room0.*data.capacity"):
    pipeline.make_train_batch(SCENES[:1], cfg, np.random.default_rng(0))
  cfg.data.overflow = "downsample"
  batch = pipeline.make_train_batch(SCENES[:1], cfg, np.random.default_rng(0))
  assert (batch.teacher.valid.sum(-1) == 128).all()
  assert (batch.student.valid.sum(-1) == 64).all()
  x = _view(batch, 0, 0)
  sv = x.student.valid
  np.testing.assert_array_equal(x.teacher.point_index[x.target_index[sv]], x.student.point_index[sv])


def test_config_errors():
  with pytest.raises(ConfigError, match="supervision"):
    pipeline.params_from_config(_cfg(supervision="everything"))
  with pytest.raises(ConfigError, match="feat_keys"):
    pipeline.params_from_config(_cfg(**{"data.feat_keys": ("coord", "curvature")}))
  with pytest.raises(ConfigError, match="patch size"):
    pipeline.params_from_config(_cfg(**{"data.capacity": 100}))


def test_iterator_is_a_pure_function_of_step():
  cfg = _cfg()
  cfg.batch_size = 2
  with pipeline.TrainIterator(cfg, SCENES, start_step=0, num_workers=2, prefetch=3) as it:
    batches = [next(it) for _ in range(4)]
  with pipeline.TrainIterator(cfg, SCENES, start_step=2, num_workers=0) as it:
    resumed = next(it)
    assert it.step == 3
  for (k, x), (_, y) in zip(_leaves(batches[2]), _leaves(resumed)):
    np.testing.assert_array_equal(x, y, err_msg=k)
  assert not np.array_equal(batches[0].teacher.coord, batches[1].teacher.coord)
  # Epochs: every scene is used once per epoch (3 scenes, 2 per step).
  idx = np.concatenate([pipeline.scene_indices(3, 2, 0, t) for t in range(3)])
  assert sorted(idx[:3]) == [0, 1, 2] and sorted(idx[3:6]) == [0, 1, 2]
  # Hosts read disjoint shards.
  h0 = pipeline.scene_indices(10, 4, 0, 0, 0, 2)
  h1 = pipeline.scene_indices(10, 4, 0, 0, 1, 2)
  assert (h0 % 2 == 0).all() and (h1 % 2 == 1).all()


def test_labeled_batch_and_inverse():
  cfg = _cfg()
  batch, inverse = pipeline.make_labeled_batch(SCENES[:2], cfg, capacity=4096)
  assert batch.points.coord.shape == (2, 4096, 3) and batch.segment.shape == (2, 4096)
  for b, scene in enumerate(SCENES[:2]):
    inv = inverse[b]
    assert inv.shape == (scene.num_points,)
    pts = batch.points
    assert pts.valid[b][inv].all()
    # Each original point maps to the representative of its own voxel (voxels of the centred scene: x, y
    # bounding-box centre and minimum z at 0).
    lo, hi = scene.coord.min(0), scene.coord.max(0)
    centred = scene.coord - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], np.float32)
    vox = np.floor(centred.astype(np.float64) / cfg.data.grid_size).astype(int)
    rep = pts.point_index[b][inv]
    np.testing.assert_array_equal(vox[rep], vox)
    np.testing.assert_array_equal(batch.segment[b][inv], scene.segment[rep])
    assert (batch.segment[b][~pts.valid[b]] == -1).all()
  # Too small a capacity: deterministic subsample; dropped points map to their nearest kept point.
  small, inv_small = pipeline.make_labeled_batch(SCENES[:1], cfg, capacity=512)
  again, _ = pipeline.make_labeled_batch(SCENES[:1], cfg, capacity=512)
  np.testing.assert_array_equal(small.points.point_index, again.points.point_index)
  kept = small.points.point_index[0][inv_small[0]]
  assert small.points.valid[0][inv_small[0]].all()
  d = np.linalg.norm(SCENES[0].coord[kept] - SCENES[0].coord, axis=1)
  assert np.median(d) < 0.15


def test_student_overflow_error_names_key():
  cfg = _cfg(mask_ratio=0.1, **{"data.capacity": 1024, "data.student_capacity": 64, "data.overflow": "error"})
  with pytest.raises(DataError, match="room0.*data.student_capacity"):
    pipeline.make_train_batch(SCENES[:1], cfg, np.random.default_rng(0))


def test_iterator_raises_data_errors_from_workers():
  bad = Scene(coord=np.zeros((0, 3), np.float32), color=np.zeros((0, 3), np.float32), name="empty_scene")
  cfg = _cfg()
  cfg.batch_size = 1
  with pipeline.TrainIterator(cfg, [bad], num_workers=1, prefetch=2) as it:
    with pytest.raises(DataError, match="empty_scene"):
      next(it)


def test_real_scan_batch():
  from tests import conftest
  root = conftest.require_shared("data", "scannet_votenet50k")
  from dos_jax.data import pointcept
  scene = pointcept.read_scannet_votenet(pointcept.find_scannet_votenet(root)[0])
  cfg = _cfg(**{"model.variant": "base", "data.grid_size": 0.08, "data.capacity": 8192,
                "data.student_capacity": 4096})
  batch = pipeline.make_train_batch([scene], cfg, np.random.default_rng(0))
  assert [s.valid.shape[-1] for s in batch.teacher.stages] == [8192, 4096, 2048, 1024, 512]
  n = batch.teacher.valid.sum(-1)
  assert (n > 4000).all()  # a 60% crop of a 50k-point room at 8 cm
  assert (batch.teacher.feat[..., 6:][batch.teacher.valid] == 0).all()  # no normals in this source -> zeros
  ratio = 1 - batch.student.valid.sum(-1) / n
  assert ((ratio > 0.5) & (ratio < 0.9)).all()
  assert (batch.cross_valid.sum(-1) > 0.2 * batch.student.valid.sum(-1)).all()


def test_process_backend_matches_threads():
  cfg = _cfg()
  cfg.batch_size = 2
  reference = pipeline.TrainIterator(cfg, SCENES, num_workers=0).batch_at(1)
  with pipeline.TrainIterator(cfg, SCENES, start_step=1, num_workers=1, prefetch=1, backend="process") as it:
    got = next(it)
  for (k, x), (_, y) in zip(_leaves(reference), _leaves(got)):
    np.testing.assert_array_equal(x, y, err_msg=k)
  with pytest.raises(ConfigError, match="worker_backend"):
    pipeline.TrainIterator(cfg, SCENES, backend="fibers")

  class Unpicklable(list):
    def __reduce__(self):
      raise TypeError("no pickling")
  with pytest.raises(ConfigError, match="picklable"):
    pipeline.TrainIterator(cfg, Unpicklable(SCENES), num_workers=1, backend="process")


def test_token_jitter_is_sonatas_clipped_gaussian():
  """Masked points move by N(0, 0.01^2) per axis clipped at 0.02 m (defaults, metres); visible points do not move.

  The std of N(0, sigma^2) clipped at 2 sigma is sigma * sqrt(E[min(|z|, 2)^2]), computed below from the normal
  distribution (~0.94 sigma); with n jittered coordinates its standard error is ~std / sqrt(2 n), and the test
  allows 5 of them. The unclipped default of before (one grid cell, 0.1 m) fails both the max and the std check.
  """
  import math
  cfg = _cfg(supervision="token_jitter", mask_ratio=0.7)
  batch = pipeline.make_train_batch(SCENES[:2], cfg, np.random.default_rng(5))
  moves = []
  for b in range(2):
    for v in range(2):
      x = _view(batch, b, v)
      # Teacher slot target_index[i] holds the same original point, at its un-jittered position.
      tok = np.flatnonzero(x.mask_token)
      d = x.student.coord[tok] - x.teacher.coord[x.target_index[tok]]
      vis = np.flatnonzero(x.student.valid & ~x.mask_token)
      np.testing.assert_array_equal(x.student.coord[vis], x.teacher.coord[x.target_index[vis]])
      moves.append(d.reshape(-1))
  d = np.concatenate(moves)
  assert np.abs(d).max() <= 0.02 + 1e-6  # float32 coordinates of a few metres: ulp ~ 5e-7
  # E[min(|z|, 2)^2] for z ~ N(0, 1): integral of z^2 over |z| < 2 plus 4 * P(|z| > 2).
  p_out = math.erfc(2 / math.sqrt(2))
  inner = (1 - p_out) - 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi)
  want = 0.01 * math.sqrt(inner + 4 * p_out)
  se = want / math.sqrt(2 * d.size)
  assert abs(d.std() - want) < 5 * se, (d.std(), want, d.size)
  assert np.mean(np.abs(d) >= 0.02 - 1e-6) > 0.02  # some mass sits at the clip (4.6% expected)


def test_duplicate_views_share_one_crop():
  """data.views='duplicate': both views come from ONE crop, so (up to grid sampling and augmentation) every student
  point has a cross-view match; 'independent' crops of a 12 m corridor overlap only partly (measured: ~50%)."""
  rng = np.random.default_rng(0)
  coord = rng.uniform(0, 1, (6000, 3)).astype(np.float32) * np.float32([12.0, 1.0, 0.0])
  corridor = Scene(coord=coord, color=rng.random((6000, 3)).astype(np.float32),
                   normal=np.tile(np.float32([0, 0, 1]), (6000, 1)), segment=np.zeros(6000, np.int32), name="corr")
  frac = {}
  for mode in ("duplicate", "independent"):
    cfg = _cfg(**{"data.views": mode, "data.crop_ratio": 0.3, "data.capacity": 1024})  # no overflow crop
    batch = pipeline.make_train_batch([corridor] * 4, cfg, np.random.default_rng(2))
    frac[mode] = [_view(batch, b, v).cross_valid.sum() / _view(batch, b, v).student.valid.sum()
                  for b in range(4) for v in range(2)]
  assert min(frac["duplicate"]) > 0.95, frac
  assert np.mean(frac["independent"]) < 0.8, frac


def test_views_key_is_checked():
  with pytest.raises(ConfigError, match="data.views"):
    pipeline.params_from_config(_cfg(**{"data.views": "triplicate"}))
