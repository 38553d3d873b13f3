"""Semantic segmentation metrics from a confusion matrix: per-class IoU, mIoU, accuracy, group means.

Conventions (written down because benchmarks differ):
  * `conf[t, p]` counts points with ground truth `t` predicted as `p` (rows = ground truth).
  * Points whose ground truth equals `ignore_index` are dropped before counting (ScanNet/Pointcept: -1).
  * IoU_c = TP / (TP + FP + FN). A class with TP + FP + FN = 0 (absent from BOTH ground truth and prediction) has
    IoU = NaN and is excluded from every mean, as the ScanNet/S3DIS evaluators do on a split that misses a class.
    A class that is only predicted (never in the ground truth) has IoU 0 and counts: false positives are penalised.
  * Group means (head/common/tail) are NaN-excluding means over the group's classes; NaN when none is present.
  * Accumulate ONE confusion matrix over the whole evaluation set, then compute IoU (not a mean of per-scene IoUs).
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dos_jax.errors import DataError


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = -1) -> np.ndarray:
  """Confusion matrix on the host.

  Args:
    pred: int[M] predicted labels in [0, num_classes).
    target: int[M] ground-truth labels in [0, num_classes) or `ignore_index`.
    num_classes: C.
    ignore_index: ground-truth value that is not evaluated.
  Returns:
    i64[C, C], conf[t, p].
  Raises:
    DataError: shapes differ, or a label outside [0, C) that is not `ignore_index`.
  """
  pred = np.asarray(pred).reshape(-1).astype(np.int64)
  target = np.asarray(target).reshape(-1).astype(np.int64)
  if pred.shape != target.shape:
    raise DataError(f"confusion_matrix: {pred.shape[0]} predictions for {target.shape[0]} labels")
  keep = target != ignore_index
  pred, target = pred[keep], target[keep]
  bad_t = (target < 0) | (target >= num_classes)
  if bad_t.any():
    raise DataError(f"ground-truth label {int(target[bad_t][0])} outside [0, {num_classes}) and not the ignore "
                    f"label {ignore_index}: check config.probe.num_classes / the segment file")
  bad_p = (pred < 0) | (pred >= num_classes)
  if bad_p.any():
    raise DataError(f"predicted label {int(pred[bad_p][0])} outside [0, {num_classes})")
  flat = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def confusion_matrix_jnp(pred, target, num_classes: int, ignore_index: int = -1, valid=None) -> jax.Array:
  """Jit-able confusion matrix (num_classes static).

  Args:
    pred: int[...] predicted labels.
    target: int[...] ground truth; `ignore_index`, and any value outside [0, C), is not counted.
    num_classes: C (static).
    ignore_index: ground-truth value that is not evaluated.
    valid: optional bool[...] extra mask (e.g. padding); False entries are not counted.
  Returns:
    i32[C, C], conf[t, p]. Predictions outside [0, C) are not counted (the caller should not produce them).
  """
  pred = jnp.asarray(pred).reshape(-1).astype(jnp.int32)
  target = jnp.asarray(target).reshape(-1).astype(jnp.int32)
  keep = (target != ignore_index) & (target >= 0) & (target < num_classes) & (pred >= 0) & (pred < num_classes)
  if valid is not None:
    keep &= jnp.asarray(valid).reshape(-1)
  # Dropped entries are sent to an extra bin C*C that is sliced off, so shapes stay static.
  index = jnp.where(keep, target * num_classes + pred, num_classes * num_classes)
  flat = jnp.zeros(num_classes * num_classes + 1, jnp.int32).at[index].add(1)
  return flat[:-1].reshape(num_classes, num_classes)


def iou_per_class(conf) -> np.ndarray:
  """f64[C] IoU per class; NaN for classes absent from both ground truth and prediction."""
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  union = conf.sum(0) + conf.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(conf) -> float:
  """Mean IoU over the present classes (NaN-excluding); NaN if no class is present."""
  return _nanmean(iou_per_class(conf))


def overall_accuracy(conf) -> float:
  """Share of evaluated points predicted correctly; NaN when no point is evaluated."""
  conf = np.asarray(conf, np.float64)
  total = conf.sum()
  return float(np.trace(conf) / total) if total > 0 else float("nan")


def mean_class_accuracy(conf) -> float:
  """Mean over ground-truth classes of per-class recall (classes absent from the ground truth excluded)."""
  conf = np.asarray(conf, np.float64)
  support = conf.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(support > 0, np.diag(conf) / np.where(support > 0, support, 1.0), np.nan)
  return _nanmean(recall)


def group_means(iou, groups: Mapping[str, Sequence[int]]) -> Dict[str, float]:
  """{group: NaN-excluding mean IoU over the group's class indices} (NaN when none is present)."""
  iou = np.asarray(iou, np.float64)
  out = {}
  for name, ids in groups.items():
    ids = np.asarray([i for i in ids if 0 <= i < iou.shape[0]], np.int64)
    out[name] = _nanmean(iou[ids]) if ids.size else float("nan")
  return out


def segmentation_metrics(conf, class_names: Optional[Sequence[str]] = None,
                         groups: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, object]:
  """All metrics as a JSON-ready dict (NaN -> None).

  Returns keys: miou, accuracy (overall), mean_class_accuracy, num_points, num_present_classes, per_class_iou
  {name: iou or None}, and one key per group (e.g. head, common, tail) when `groups` is given.
  """
  conf = np.asarray(conf)
  iou = iou_per_class(conf)
  names = list(class_names) if class_names is not None else [str(i) for i in range(conf.shape[0])]
  if len(names) != conf.shape[0]:
    names = [str(i) for i in range(conf.shape[0])]
  out: Dict[str, object] = {
      "miou": _json(mean_iou(conf)),
      "accuracy": _json(overall_accuracy(conf)),
      "mean_class_accuracy": _json(mean_class_accuracy(conf)),
      "num_points": int(conf.sum()),
      "num_present_classes": int(np.sum(~np.isnan(iou))),
  }
  if groups:
    for name, value in group_means(iou, groups).items():
      out[name] = _json(value)
  out["per_class_iou"] = {n: _json(v) for n, v in zip(names, iou)}
  return out


def _nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float("nan")


def _json(x: float):
  x = float(x)
  return None if math.isnan(x) else x
