"""An oracle probe that needs no encoder: a linear classifier on hand-made local-geometry features of each voxel.

It answers "is this class learnable from shape at this grid?" independently of the network being evaluated: if a
linear map of a voxel's height, normal and neighbourhood shape (PCA eigenvalues at three radii) separates a class,
the class is geometrically learnable at that grid, and an encoder that scores ~0 on it is not limited by the data.
Used to check that the synthetic long-tail rooms' tail classes are rare but learnable (docs/results.md).

Features (`local_geometry_features`), per voxel, f32[N, 4 + 8 * len(radii)]: height z, |normal| (3); per radius r:
the covariance eigenvalues of the neighbours within r (up to `max_neighbours[r]` nearest) divided by their sum
(3: sorted descending), linearity (l1 - l2) / l1, planarity (l2 - l3) / l1, |z| of the principal direction
(vertical or horizontal extent), log of the neighbour count, and the neighbours' z range. Colour is left out on
purpose (the long-tail rooms colour their tail objects like furniture).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
from scipy.spatial import cKDTree

RADII = (0.15, 0.3, 0.6)
MAX_NEIGHBOURS = (8, 24, 64)


def voxelize(coord: np.ndarray, grid: float):
  """(index of one point per occupied voxel i64[V], voxel of each point i64[N]) for a grid of `grid` metres."""
  key = np.floor(np.asarray(coord) / grid).astype(np.int64)
  _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
  return first, inverse.reshape(-1)


def local_geometry_features(coord: np.ndarray, normal: np.ndarray, radii: Sequence[float] = RADII,
                            max_neighbours: Sequence[int] = MAX_NEIGHBOURS) -> np.ndarray:
  """Hand-made shape features f32[N, 4 + 8 * len(radii)] of points coord f64[N, 3] with normals f[N, 3]."""
  coord = np.asarray(coord, np.float64)
  tree = cKDTree(coord)
  out = [coord[:, 2:3], np.abs(np.asarray(normal, np.float64))]
  for r, k in zip(radii, max_neighbours):
    k = min(int(k), len(coord))
    dist, idx = tree.query(coord, k=k, distance_upper_bound=r)
    dist, idx = dist.reshape(len(coord), k), idx.reshape(len(coord), k)
    valid = np.isfinite(dist)                                  # the point itself is always within r
    nb = coord[np.where(valid, idx, 0)]                        # [N, k, 3]
    w = valid[..., None].astype(np.float64)
    count = w.sum(1)                                           # [N, 1]
    mean = (nb * w).sum(1) / count
    d = (nb - mean[:, None]) * w
    cov = np.einsum("nki,nkj->nij", d, d) / count[..., None]
    evals, evecs = np.linalg.eigh(cov)                         # ascending
    evals = np.clip(evals[:, ::-1], 0.0, None) + 1e-12         # descending l1 >= l2 >= l3
    total = evals.sum(1, keepdims=True)
    l1, l2, l3 = evals[:, 0], evals[:, 1], evals[:, 2]
    zs = np.where(valid, nb[..., 2], np.nan)
    out += [evals / total, ((l1 - l2) / l1)[:, None], ((l2 - l3) / l1)[:, None],
            np.abs(evecs[:, 2, 2])[:, None], np.log(count), (np.nanmax(zs, 1) - np.nanmin(zs, 1))[:, None]]
  return np.concatenate(out, 1).astype(np.float32)


def scene_voxel_features(scene, grid: float):
  """(features f32[V, F], labels i32[V], voxel of each point i64[N]) of one labelled scene."""
  first, inverse = voxelize(scene.coord, grid)
  normal = scene.normal if scene.normal is not None else np.zeros_like(scene.coord)
  return (local_geometry_features(scene.coord[first], normal[first]), np.asarray(scene.segment)[first],
          inverse)


def geometry_probe(train_scenes: Sequence, eval_scenes: Sequence, num_classes: int, grid: float,
                   class_names: Sequence[str], groups: Dict[str, Sequence[int]], steps: int = 500,
                   lr: float = 1e-2, class_balanced: bool = True, seed: int = 0) -> Dict[str, Any]:
  """Fits the linear probe on the training scenes' voxels; mIoU on every original point of the evaluation scenes.

  Each evaluation point takes its voxel's prediction (as the encoder probe maps stage-0 features back to points),
  so the metrics are comparable with `dos_jax.eval.probe.run_probe`'s.
  """
  from dos_jax.eval import linear_probe, miou  # pylint: disable=g-import-not-at-top
  feats, labels = zip(*[scene_voxel_features(s, grid)[:2] for s in train_scenes])
  params = linear_probe.fit_linear_probe(np.concatenate(feats), np.concatenate(labels), num_classes, steps=steps,
                                         lr=lr, class_balanced=class_balanced, seed=seed, batch_points=None)
  conf = np.zeros((num_classes, num_classes), np.int64)
  for s in eval_scenes:
    f, _, inverse = scene_voxel_features(s, grid)
    conf += miou.confusion_matrix(linear_probe.predict(params, f)[inverse], s.segment, num_classes)
  result = miou.segmentation_metrics(conf, class_names, groups)
  result.update(probe={"steps": steps, "lr": lr, "class_balanced": class_balanced, "seed": seed,
                       "features": "local geometry (no colour)", "grid": grid},
                train_scenes=len(train_scenes), eval_scenes=len(eval_scenes))
  return result
