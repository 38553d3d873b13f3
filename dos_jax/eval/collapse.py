"""Failure signatures of prototype-based self-distillation, measured on prototype scores of labelled scenes.

Inputs are, per scene, the prototype scores `scores: f32[N, K]` (cosine / tau; any monotone logits work) of its
N real points, and optionally the labels `i32[N]` (-1 = ignore). Definitions:

  * Prototype collapse: prototype k's activation map is its softmap column p_k = softmax over the scene's points
    of scores[:, k]. A pair (j, k) is collapsed when cos(p_j, p_k) > `threshold` (0.95). Reported: the fraction
    of the K(K-1)/2 pairs that are collapsed and the fraction of prototypes in at least one collapsed pair
    (averaged over scenes). Near-uniform ("dead") prototypes have near-identical maps and count as collapsed.
  * Point-wise collapse: a point is claimed when it lies in the top-k points of at least one prototype's
    softmap, with k = ceil(N / K) (if the K prototypes tiled the scene evenly, every point would be claimed).
    Reported: the share of points no prototype claims (pooled over scenes). Softmaps that concentrate on the same
    few points leave most of the scene unclaimed.
  * Over-segmentation: each point is assigned to its arg-max prototype (over K). A used prototype's class is
    the majority label of its assigned labelled points; prototypes_per_class[c] counts the prototypes whose
    majority is c (pooled over scenes). Frequent classes split across many prototypes are over-segmented;
    reported as the mean over head vs tail classes present (via `groups`) and overall.
  * Usage: how many prototypes are some point's arg-max, their effective number exp(H(usage)), and the usage
    counts of the used prototypes sorted by rank (for the rank-frequency plot against the Zipf prior).
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _map_cosines(scores):
  """scores f32[N, K] -> f32[K, K] cosine between prototypes' softmaps over the N points."""
  p = jax.nn.softmax(scores, axis=0)
  p = p / jnp.maximum(jnp.linalg.norm(p, axis=0, keepdims=True), 1e-12)
  return p.T @ p


def prototype_collapse(scores, threshold: float = 0.95) -> Dict[str, float]:
  """Collapsed prototype pairs of ONE scene.

  Args:
    scores: f32[N, K] prototype logits of the scene's real points.
    threshold: cosine above which two softmaps count as the same map.
  Returns:
    dict(collapsed_pairs: int, collapsed_pair_fraction, collapsed_prototype_fraction).
  """
  scores = np.asarray(scores, np.float32)
  k = scores.shape[1]
  cos = np.asarray(_map_cosines(scores))
  upper = np.triu(cos > threshold, 1)
  pairs = int(upper.sum())
  involved = (upper | upper.T).any(1)
  total = k * (k - 1) // 2
  return {"collapsed_pairs": pairs, "collapsed_pair_fraction": pairs / total if total else 0.0,
          "collapsed_prototype_fraction": float(involved.mean()) if k else 0.0}


def unclaimed_points(scores, top_k: Optional[int] = None) -> np.ndarray:
  """bool[N]: points of ONE scene that are in no prototype's top-`top_k` (default ceil(N / K)) softmap points.

  The softmap is monotone in the scores along the point axis, so the top-k of scores[:, k] is the top-k of p_k.
  """
  scores = np.asarray(scores, np.float32)
  n, k = scores.shape
  if n == 0:
    return np.zeros((0,), bool)
  top_k = max(1, math.ceil(n / k)) if top_k is None else max(1, min(int(top_k), n))
  top = np.argpartition(-scores, top_k - 1, axis=0)[:top_k]   # [top_k, K] point indices
  claimed = np.zeros(n, bool)
  claimed[top.reshape(-1)] = True
  return ~claimed


def prototype_class_counts(assignment, labels, num_classes: int, num_prototypes: int,
                           ignore_index: int = -1) -> np.ndarray:
  """i64[K, C]: joint[k, c] = labelled points of class c whose arg-max prototype is k (sum it over scenes).

  Args:
    assignment: int[M] arg-max prototype of each point.
    labels: int[M] class of each point (`ignore_index` and out-of-range labels are not counted).
    num_classes: C.
    num_prototypes: K.
  """
  assignment = np.asarray(assignment).reshape(-1).astype(np.int64)
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  keep = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  return np.bincount(assignment[keep] * num_classes + labels[keep],
                     minlength=num_prototypes * num_classes).reshape(num_prototypes, num_classes)


def prototypes_per_class(assignment, labels, num_classes: int, num_prototypes: int,
                         ignore_index: int = -1) -> np.ndarray:
  """i64[C]: number of prototypes whose assigned labelled points have majority class c (see module doc)."""
  joint = prototype_class_counts(assignment, labels, num_classes, num_prototypes, ignore_index)
  return _majority_counts(joint)


def _majority_counts(joint: np.ndarray) -> np.ndarray:
  used = joint.sum(1) > 0
  return np.bincount(joint.argmax(1)[used], minlength=joint.shape[1]).astype(np.int64)


def usage_counts(assignment, num_prototypes: int) -> np.ndarray:
  """i64[K]: points per prototype (as arg-max), in prototype index order."""
  return np.bincount(np.asarray(assignment).reshape(-1), minlength=num_prototypes).astype(np.int64)


def effective_count(counts) -> float:
  """exp(entropy) of the usage distribution: K for uniform usage, 1 when one prototype takes every point."""
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  if total <= 0:
    return 0.0
  p = counts[counts > 0] / total
  return float(np.exp(-(p * np.log(p)).sum()))


def collapse_report(scores_per_scene: Sequence[np.ndarray], labels_per_scene: Optional[Sequence[np.ndarray]] = None,
                    num_classes: Optional[int] = None, groups: Optional[Mapping[str, Sequence[int]]] = None,
                    threshold: float = 0.95, max_points: int = 8192, seed: int = 0) -> Dict[str, object]:
  """All failure signatures over a set of scenes, as a JSON-ready dict.

  Args:
    scores_per_scene: list of f32[N_i, K] prototype logits of each scene's real points.
    labels_per_scene: optional list of i32[N_i] labels (-1 ignore); enables the over-segmentation metrics.
    num_classes: C (needed with labels).
    groups: {group: class indices}, e.g. head/common/tail, for per-group prototypes-per-class means.
    threshold: prototype-collapse cosine threshold.
    max_points: scenes larger than this are subsampled (fixed seed) for the K x K map cosines.
    seed: subsampling seed.
  """
  rng = np.random.default_rng(seed)
  num_prototypes = int(scores_per_scene[0].shape[1]) if scores_per_scene else 0
  pair_frac, proto_frac, unclaimed, total = [], [], 0, 0
  usage = np.zeros(num_prototypes, np.int64)
  joint = np.zeros((num_prototypes, num_classes or 0), np.int64)
  for i, scores in enumerate(scores_per_scene):
    scores = np.asarray(scores, np.float32)
    if scores.shape[0] == 0:
      continue
    sub = scores
    if scores.shape[0] > max_points:
      sub = scores[rng.choice(scores.shape[0], max_points, replace=False)]
    pc = prototype_collapse(sub, threshold)
    pair_frac.append(pc["collapsed_pair_fraction"])
    proto_frac.append(pc["collapsed_prototype_fraction"])
    unclaimed += int(unclaimed_points(scores).sum())
    total += scores.shape[0]
    assignment = scores.argmax(1)
    usage += usage_counts(assignment, num_prototypes)
    if labels_per_scene is not None and num_classes:
      joint += prototype_class_counts(assignment, labels_per_scene[i], num_classes, num_prototypes)
  report: Dict[str, object] = {
      "num_prototypes": num_prototypes,
      "collapsed_pair_fraction": float(np.mean(pair_frac)) if pair_frac else None,
      "collapsed_prototype_fraction": float(np.mean(proto_frac)) if proto_frac else None,
      "unclaimed_point_fraction": unclaimed / total if total else None,
      "used_prototypes": int((usage > 0).sum()),
      "effective_prototypes": effective_count(usage),
      # Used prototypes only (the remaining num_prototypes - used_prototypes have 0 points).
      "usage_by_rank": [int(u) for u in np.sort(usage)[::-1] if u > 0],
  }
  if labels_per_scene is not None and num_classes:
    present = np.zeros(num_classes, bool)
    for labels in labels_per_scene:
      labels = np.asarray(labels)
      labels = labels[(labels >= 0) & (labels < num_classes)]
      present[labels] = True
    ppc = _majority_counts(joint)
    report["prototypes_per_class"] = ppc.tolist()
    report["prototypes_per_class_mean"] = float(ppc[present].mean()) if present.any() else None
    for name, ids in (groups or {}).items():
      ids = [c for c in ids if 0 <= c < num_classes and present[c]]
      report[f"prototypes_per_class_{name}"] = float(ppc[ids].mean()) if ids else None
  return report
