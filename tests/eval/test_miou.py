"""mIoU against hand-computed confusion matrices (ignore label, absent classes, predicted-only classes)."""

import jax
import numpy as np
import pytest

from dos_jax.errors import DataError
from dos_jax.eval import miou

# Pairs (target, pred); -1 targets are ignored whatever the prediction.
PRED = np.array([0, 0, 1, 1, 2, 2, 0, 1])
TARGET = np.array([0, 1, 1, 1, 2, -1, 0, -1])
# Counted by hand: t0->p0 twice; t1->p0 once, t1->p1 twice; t2->p2 once; class 3 never appears.
HAND_CONF = np.array([[2, 0, 0, 0],
                      [1, 2, 0, 0],
                      [0, 0, 1, 0],
                      [0, 0, 0, 0]])


def test_confusion_matrix_by_hand_with_ignore_label():
  conf = miou.confusion_matrix(PRED, TARGET, num_classes=4)
  np.testing.assert_array_equal(conf, HAND_CONF)


def test_jnp_confusion_matches_numpy_under_jit():
  fn = jax.jit(miou.confusion_matrix_jnp, static_argnums=(2,))
  np.testing.assert_array_equal(np.asarray(fn(PRED, TARGET, 4)), HAND_CONF)
  # The extra validity mask drops entries too (here the first point).
  valid = np.ones(8, bool)
  valid[0] = False
  expect = HAND_CONF.copy()
  expect[0, 0] -= 1
  np.testing.assert_array_equal(np.asarray(miou.confusion_matrix_jnp(PRED, TARGET, 4, valid=valid)), expect)


def test_jnp_confusion_random_agrees_with_numpy():
  rng = np.random.default_rng(0)
  pred = rng.integers(0, 7, 500)
  target = rng.integers(-1, 7, 500)
  np.testing.assert_array_equal(np.asarray(miou.confusion_matrix_jnp(pred, target, 7)),
                                miou.confusion_matrix(pred, target, 7))


def test_iou_absent_class_is_nan_and_excluded():
  iou = miou.iou_per_class(HAND_CONF)
  # IoU0 = 2/(2+1+0), IoU1 = 2/(2+0+1), IoU2 = 1, class 3 absent -> NaN.
  np.testing.assert_allclose(iou[:3], [2 / 3, 2 / 3, 1.0])
  assert np.isnan(iou[3])
  assert miou.mean_iou(HAND_CONF) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
  assert miou.overall_accuracy(HAND_CONF) == pytest.approx(5 / 6)
  assert miou.mean_class_accuracy(HAND_CONF) == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_predicted_only_class_counts_as_zero():
  # One more class-2 point predicted as class 4, which never occurs in the ground truth.
  conf = miou.confusion_matrix(np.append(PRED, 4), np.append(TARGET, 2), num_classes=5)
  iou = miou.iou_per_class(conf)
  assert iou[2] == pytest.approx(1 / 2)
  assert iou[4] == 0.0
  assert np.isnan(iou[3])
  assert miou.mean_iou(conf) == pytest.approx((2 / 3 + 2 / 3 + 1 / 2 + 0) / 4)


def test_group_means_and_json_report():
  groups = {"head": (0, 1), "common": (2,), "tail": (3,)}
  report = miou.segmentation_metrics(HAND_CONF, class_names=["a", "b", "c", "d"], groups=groups)
  assert report["head"] == pytest.approx(2 / 3)
  assert report["common"] == pytest.approx(1.0)
  assert report["tail"] is None  # no tail class present
  assert report["per_class_iou"]["d"] is None
  assert report["num_points"] == 6
  assert report["num_present_classes"] == 3


def test_bad_labels_raise():
  with pytest.raises(DataError, match="outside"):
    miou.confusion_matrix([0, 1], [0, 5], num_classes=3)
  with pytest.raises(DataError, match="predictions"):
    miou.confusion_matrix([0, 1, 2], [0, 1], num_classes=3)


def test_perfect_prediction():
  t = np.array([0, 1, 2, 2, -1])
  p = np.where(t < 0, 0, t)
  assert miou.mean_iou(miou.confusion_matrix(p, t, 3)) == 1.0
