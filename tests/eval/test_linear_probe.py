"""Linear probe on features with a known answer."""

import numpy as np
import pytest

from dos_jax.batching import spec as spec_lib
from dos_jax.errors import DataError
from dos_jax.eval import linear_probe
from dos_jax.eval import miou


def _separable(num_classes=5, per_class=200, dim=8, seed=0):
  """Gaussian blobs around orthogonal-ish centres, far apart relative to their spread: linearly separable."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim)) * 10.0
  labels = np.repeat(np.arange(num_classes), per_class)
  feats = centres[labels] + rng.normal(size=(labels.size, dim)) * 0.3
  return feats.astype(np.float32), labels.astype(np.int32)


@pytest.mark.system
def test_separable_features_reach_miou_one():
  feats, labels = _separable()
  # Some points are unlabelled: they must be ignored in training.
  labels_train = labels.copy()
  labels_train[::17] = -1
  params = linear_probe.fit_linear_probe(feats, labels_train, num_classes=5, steps=150, lr=0.05, seed=0,
                                         batch_points=256)
  test_feats, test_labels = _separable(seed=0)
  pred = linear_probe.predict(params, test_feats)
  score = miou.mean_iou(miou.confusion_matrix(pred, test_labels, 5))
  assert score > 0.99


def test_class_weights_balance_total_mass():
  labels = np.array([0] * 90 + [1] * 9 + [2] * 1 + [-1] * 5)
  w = linear_probe.class_weights(labels, num_classes=4, class_balanced=True)
  counts = np.array([90, 9, 1, 0])
  # Each present class carries the same total weight; absent class gets 0; mean weight over points is 1.
  np.testing.assert_allclose(w[:3] * counts[:3], [100 / 3] * 3, rtol=1e-6)
  assert w[3] == 0.0
  assert (w * counts).sum() / counts.sum() == pytest.approx(1.0)
  np.testing.assert_array_equal(linear_probe.class_weights(labels, 4, False), np.ones(4))


@pytest.mark.system
def test_class_balanced_raises_minority_recall():
  # Overlapping 1-D classes, 95:5: the unweighted optimum sacrifices the minority; the balanced one does not.
  rng = np.random.default_rng(1)
  labels = np.array([0] * 950 + [1] * 50, np.int32)
  feats = (rng.normal(size=(1000, 1)) + 1.5 * labels[:, None]).astype(np.float32)
  recalls = []
  for balanced in (False, True):
    params = linear_probe.fit_linear_probe(feats, labels, 2, steps=200, lr=0.05, class_balanced=balanced,
                                           batch_points=None)
    pred = linear_probe.predict(params, feats)
    recalls.append(np.mean(pred[labels == 1] == 1))
  assert recalls[1] > recalls[0] + 0.3
  assert recalls[1] > 0.6


def test_bad_labels_raise():
  feats = np.zeros((4, 2), np.float32)
  with pytest.raises(DataError, match="num_classes"):
    linear_probe.fit_linear_probe(feats, np.array([0, 1, 2, 7]), 3, steps=1)
  with pytest.raises(DataError, match="no labelled"):
    linear_probe.fit_linear_probe(feats, np.full(4, -1), 3, steps=1)


def test_extract_features_maps_voxels_back_to_every_point():
  # A stand-in "encoder" that returns each stage-0 point's (centred) coordinate: after mapping back, every
  # original point must get the coordinate of a representative in its own voxel (up to the scene's centring shift).
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax.data import scene as scene_lib  # pylint: disable=g-import-not-at-top
  cfg = synthetic_tiny.get_config("smoke")
  spec = spec_lib.batch_spec(cfg)
  rng = np.random.default_rng(0)
  # A 1 m cube: few enough voxels that no stage overflows its capacity (no voxel is dropped).
  scenes = [scene_lib.Scene(coord=rng.uniform(0, 1, (n, 3)).astype(np.float32), color=np.zeros((n, 3), np.float32),
                            segment=rng.integers(-1, 3, n).astype(np.int32), name=f"s{i}")
            for i, n in enumerate((700, 900, 500))]
  out = linear_probe.extract_features(lambda p, points: points.coord, None, scenes, spec, batch_size=2)
  np.testing.assert_array_equal(out.offsets, [0, 700, 1600, 2100])
  np.testing.assert_array_equal(out.labels, np.concatenate([s.segment for s in scenes]))
  for i, s in enumerate(scenes):
    diff = out.features[out.offsets[i]:out.offsets[i + 1]] - s.coord
    # Pointcept's CenterShift(apply_z=True): x/y centred on the bounding box, z from the minimum.
    lo, hi = s.coord.min(0), s.coord.max(0)
    shift = -np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    # Same voxel as its representative: each axis differs by less than one cell.
    assert np.abs(diff - shift).max() < cfg.data.grid_size
    # Stage-0 features are the real voxels only, with the voxel representative's label.
    assert out.stage0[i].shape[0] == out.stage0_labels[i].shape[0] <= cfg.data.capacity
  small = linear_probe.extract_features(lambda p, points: points.coord, None, scenes, spec, batch_size=2,
                                        map_to_points=False)
  assert small.features.shape[0] == sum(x.shape[0] for x in out.stage0)


def test_extract_features_sees_every_voxel_of_a_large_scene():
  """A scene with ~4x more voxels than data.capacity: by default every voxel reaches the encoder (no thinning,
  dropped counts 0); with a fixed small capacity the drops are counted exactly (voxels - kept slots)."""
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax.data import scene as scene_lib  # pylint: disable=g-import-not-at-top
  from dos_jax.data import transforms  # pylint: disable=g-import-not-at-top
  cfg = synthetic_tiny.get_config("smoke")  # data.capacity 1024, grid 0.1 m
  spec = spec_lib.batch_spec(cfg)
  rng = np.random.default_rng(1)
  n = 20000
  coord = rng.uniform(0, 1, (n, 3)).astype(np.float32) * np.float32([8.0, 8.0, 0.05])  # a floor: ~6400 voxels
  scene = scene_lib.Scene(coord=coord, color=np.zeros((n, 3), np.float32),
                          segment=rng.integers(0, 3, n).astype(np.int32), name="floor")
  centred = transforms.center_shift(apply_z=True)(transforms.from_scene(scene), None)["coord"]
  voxels = len(transforms.grid_sample(centred, cfg.data.grid_size)[0])
  assert voxels > 4 * cfg.data.capacity
  full = linear_probe.extract_features(lambda p, points: points.coord, None, [scene], spec, batch_size=1)
  assert full.stage0[0].shape[0] == voxels and full.dropped_voxels == 0 and full.dropped_points == 0
  thin = linear_probe.extract_features(lambda p, points: points.coord, None, [scene], spec, batch_size=1,
                                       capacity=1024)
  kept = thin.stage0[0].shape[0]
  assert kept <= 1024 and thin.dropped_voxels == voxels - kept
  assert 0 < thin.dropped_points < n and thin.features.shape[0] == n


def _labelled_scenes(num=2, n=400, seed=0):
  from dos_jax.data import scene as scene_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  scenes = []
  for i in range(num):
    coord = rng.uniform(0, 2, (n, 3)).astype(np.float32)
    seg = (coord[:, 0] > 1.0).astype(np.int32) + 2 * (coord[:, 2] > 1.0)  # 4 classes from position
    scenes.append(scene_lib.Scene(coord=coord, color=rng.uniform(size=(n, 3)).astype(np.float32), segment=seg,
                                  name=f"s{i}"))
  return scenes


@pytest.mark.system
def test_train_supervised_takes_specs_and_lowers_the_loss():
  """The supervised reference from decoded specs and explicit optimisation arguments (no experiment config):
  the cross-entropy on its training batch falls from the initial params' value."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax import schema, specs  # pylint: disable=g-import-not-at-top
  from dos_jax.batching import eval_batch  # pylint: disable=g-import-not-at-top
  cfg = schema.validate(synthetic_tiny.get_config("smoke"))
  model_spec, batch_spec = specs.model_spec(cfg), spec_lib.batch_spec(cfg)
  scenes = _labelled_scenes()
  kw = dict(batch_size=2, lr=3e-3, weight_decay=0.0, clip_norm=1.0, seed=0)
  batch, _ = eval_batch.make_labeled_batch(scenes, batch_spec)

  def loss(params):
    logit = np.asarray(linear_probe.supervised_logits(params, batch.points, model_spec))
    assert logit.shape == batch.segment.shape + (4,)
    ok = (np.asarray(batch.segment) >= 0) & np.asarray(batch.points.valid)
    logp = np.asarray(jax.nn.log_softmax(logit))
    return -np.take_along_axis(logp, np.where(ok, batch.segment, 0)[..., None], -1)[..., 0][ok].mean()

  init = linear_probe.train_supervised(model_spec, batch_spec, scenes, 0, 4, **kw)
  trained = linear_probe.train_supervised(model_spec, batch_spec, scenes, 8, 4, **kw)
  assert init["linear"]["w"].shape == (trained["linear"]["w"].shape[0], 4)
  assert loss(trained) < 0.8 * loss(init)
  with pytest.raises(DataError, match="num_classes=3"):
    linear_probe.train_supervised(model_spec, batch_spec, scenes, 1, 3, **kw)
