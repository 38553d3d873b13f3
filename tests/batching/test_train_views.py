"""Training views: contract fields, visible-only student, targets, cross matches, overflow, a real scan."""

import numpy as np
import pytest

from dos_jax.batching import spec as spec_lib
from dos_jax.batching import train_views
from dos_jax.data.scene import Scene
from dos_jax.errors import DataError
from tests import batching as helpers


def test_shapes_fixed_and_fields():
  cfg = helpers.cfg()
  a = helpers.view_batch(helpers.SCENES[:2], spec_lib.batch_spec(cfg), np.random.default_rng(0))
  b = helpers.view_batch(helpers.SCENES[1:], spec_lib.batch_spec(cfg), np.random.default_rng(5))
  shapes_a = {k: (x.shape, x.dtype) for k, x in helpers.leaves(a)}
  assert shapes_a == {k: (x.shape, x.dtype) for k, x in helpers.leaves(b)}
  assert a.teacher.coord.shape == (2, 2, 512, 3) and a.student.coord.shape == (2, 2, 256, 3)
  assert a.teacher.feat.shape == (2, 2, 512, 9)  # coord + color + normal
  assert [s.valid.shape[-1] for s in a.teacher.stages] == [512, 256, 128]
  assert a.target_index.dtype == np.int32 and a.cross_valid.dtype == bool and a.mask_token.shape == (2, 2, 256)
  assert not a.mask_token.any()


def test_student_holds_exactly_the_visible_points():
  # Same rng: 'observable' and 'masked_tokens' draw identical views and masks, so the observable student must be
  # exactly the teacher's points that masked_tokens marks as not masked.
  obs_spec = spec_lib.batch_spec(helpers.cfg(**{"data.student_capacity": 512}))
  tok_spec = spec_lib.batch_spec(helpers.cfg(supervision="masked_tokens"))
  obs = helpers.view_batch(helpers.SCENES[:2], obs_spec, np.random.default_rng(3))
  tok = helpers.view_batch(helpers.SCENES[:2], tok_spec, np.random.default_rng(3))
  for b in range(2):
    for v in range(2):
      o, t = helpers.view(obs, b, v), helpers.view(tok, b, v)
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
  cfg = helpers.cfg(supervision=supervision)
  batch = helpers.view_batch(helpers.SCENES[:2], spec_lib.batch_spec(cfg), np.random.default_rng(1))
  n_t = cfg.data.capacity
  radius = cfg.data.cross_radius
  for b in range(2):
    scene_coord = helpers.SCENES[b].coord
    for v in range(2):
      x = helpers.view(batch, b, v)
      other = helpers.view(batch, b, 1 - v).teacher
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
  cfg = helpers.cfg(mask_ratio=0.2, **{"data.capacity": 128, "data.student_capacity": 64, "data.overflow": "error"})
  with pytest.raises(DataError, match="room0.*data.capacity"):
    helpers.view_batch(helpers.SCENES[:1], spec_lib.batch_spec(cfg), np.random.default_rng(0))
  cfg.data.overflow = "downsample"
  batch = helpers.view_batch(helpers.SCENES[:1], spec_lib.batch_spec(cfg), np.random.default_rng(0))
  assert (batch.teacher.valid.sum(-1) == 128).all()
  assert (batch.student.valid.sum(-1) == 64).all()
  x = helpers.view(batch, 0, 0)
  sv = x.student.valid
  np.testing.assert_array_equal(x.teacher.point_index[x.target_index[sv]], x.student.point_index[sv])


def test_student_overflow_error_names_key():
  cfg = helpers.cfg(mask_ratio=0.1, **{"data.capacity": 1024, "data.student_capacity": 64, "data.overflow": "error"})
  with pytest.raises(DataError, match="room0.*data.student_capacity"):
    helpers.view_batch(helpers.SCENES[:1], spec_lib.batch_spec(cfg), np.random.default_rng(0))


def test_real_scan_batch():
  from tests import conftest
  root = conftest.require_shared("data", "scannet_votenet50k")
  from dos_jax.data import pointcept
  scene = pointcept.read_scannet_votenet(pointcept.find_scannet_votenet(root)[0])
  cfg = helpers.cfg(**{"model.variant": "base", "data.grid_size": 0.08, "data.capacity": 8192,
                "data.student_capacity": 4096})
  batch = helpers.view_batch([scene], spec_lib.batch_spec(cfg), np.random.default_rng(0))
  assert [s.valid.shape[-1] for s in batch.teacher.stages] == [8192, 4096, 2048, 1024, 512]
  n = batch.teacher.valid.sum(-1)
  assert (n > 4000).all()  # a 60% crop of a 50k-point room at 8 cm
  assert (batch.teacher.feat[..., 6:][batch.teacher.valid] == 0).all()  # no normals in this source -> zeros
  ratio = 1 - batch.student.valid.sum(-1) / n
  assert ((ratio > 0.5) & (ratio < 0.9)).all()
  assert (batch.cross_valid.sum(-1) > 0.2 * batch.student.valid.sum(-1)).all()


def test_token_jitter_is_sonatas_clipped_gaussian():
  """Masked points move by N(0, 0.01^2) per axis clipped at 0.02 m (defaults, metres); visible points do not move.

  The std of N(0, sigma^2) clipped at 2 sigma is sigma * sqrt(E[min(|z|, 2)^2]), computed below from the normal
  distribution (~0.94 sigma); with n jittered coordinates its standard error is ~std / sqrt(2 n), and the test
  allows 5 of them. The unclipped default of before (one grid cell, 0.1 m) fails both the max and the std check.
  """
  import math
  cfg = helpers.cfg(supervision="token_jitter", mask_ratio=0.7)
  batch = helpers.view_batch(helpers.SCENES[:2], spec_lib.batch_spec(cfg), np.random.default_rng(5))
  moves = []
  for b in range(2):
    for v in range(2):
      x = helpers.view(batch, b, v)
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
    cfg = helpers.cfg(**{"data.views": mode, "data.crop_ratio": 0.3, "data.crop_ratio_max": 0.3,
                         "data.capacity": 1024})  # a fixed crop small enough for no overflow crop
    batch = helpers.view_batch([corridor] * 4, spec_lib.batch_spec(cfg), np.random.default_rng(2))
    frac[mode] = [helpers.view(batch, b, v).cross_valid.sum() / helpers.view(batch, b, v).student.valid.sum()
                  for b in range(4) for v in range(2)]
  assert min(frac["duplicate"]) > 0.95, frac
  assert np.mean(frac["independent"]) < 0.8, frac
