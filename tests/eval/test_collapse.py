"""Collapse signatures on constructed cases with known answers."""

import math

import numpy as np
import pytest

from dos_jax.eval import collapse


def _distinct_scores(n=60, k=6, seed=0):
  # Large random logits: each softmap concentrates on different points, so distinct maps have low cosine.
  return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32) * 5.0


def test_two_identical_prototypes_detected():
  scores = _distinct_scores()
  assert collapse.prototype_collapse(scores)["collapsed_pairs"] == 0
  scores[:, 3] = scores[:, 1]
  out = collapse.prototype_collapse(scores)
  assert out["collapsed_pairs"] == 1
  assert out["collapsed_pair_fraction"] == pytest.approx(1 / 15)
  assert out["collapsed_prototype_fraction"] == pytest.approx(2 / 6)


def test_all_prototypes_on_same_points_leave_points_unclaimed():
  n, k = 40, 4
  # Every prototype scores point i by -i: all softmaps peak on the same first points.
  same = np.tile(-np.arange(n, dtype=np.float32)[:, None], (1, k))
  unclaimed = collapse.unclaimed_points(same)
  top_k = math.ceil(n / k)
  assert unclaimed.sum() == n - top_k
  assert not unclaimed[:top_k].any()
  # A perfect tiling: prototype j owns points [10j, 10j+10): every point is claimed.
  tiling = np.zeros((n, k), np.float32)
  tiling[np.arange(n), np.arange(n) // 10] = 1.0
  assert collapse.unclaimed_points(tiling).sum() == 0


def test_prototypes_per_class_by_hand():
  assignment = np.array([0, 0, 1, 1, 1, 2, 3])
  labels = np.array([0, 0, 0, 0, 1, 1, -1])
  # proto0 -> class 0; proto1 -> class 0 (2 votes vs 1); proto2 -> class 1; proto3 only has ignored points.
  np.testing.assert_array_equal(collapse.prototypes_per_class(assignment, labels, 2, 5), [2, 1])


def test_effective_count():
  assert collapse.effective_count([5, 5, 5, 5]) == pytest.approx(4.0)
  assert collapse.effective_count([9, 0, 0]) == pytest.approx(1.0)


def test_report_over_scenes():
  scores = _distinct_scores(n=50, k=8)
  labels = np.arange(50) % 3
  report = collapse.collapse_report([scores, scores[:20]], [labels, labels[:20]], num_classes=3,
                                    groups={"head": (0,), "tail": (2,)})
  assignment = np.concatenate([scores.argmax(1), scores[:20].argmax(1)])
  assert report["used_prototypes"] == len(np.unique(assignment))
  assert sum(report["usage_by_rank"]) == 70
  assert report["usage_by_rank"] == sorted(report["usage_by_rank"], reverse=True)
  ppc = report["prototypes_per_class"]
  assert sum(ppc) == report["used_prototypes"]
  assert report["prototypes_per_class_head"] == ppc[0]
  assert report["prototypes_per_class_tail"] == ppc[2]
  assert 0.0 <= report["unclaimed_point_fraction"] <= 1.0
