"""PNG figures for the results: alpha vs group mIoU, loss curves, prototype rank-frequency, top-down renders.

matplotlib runs on the non-interactive Agg backend (no display needed); every figure is written atomically
(temp file in the target folder, then rename), so a reader never sees a half-written PNG.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from dos_jax import io as fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from dos_jax.errors import DataError  # pylint: disable=g-import-not-at-top,wrong-import-position


def save_figure(fig, path: str, dpi: int = 120) -> str:
  """Writes `fig` to `path` as PNG atomically and closes it; returns the path."""
  try:
    with fileio.atomic_open(path, "wb") as f:
      fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
  finally:
    plt.close(fig)
  return path


def zipf_prior(num_prototypes: int, alpha: float) -> np.ndarray:
  """f64[K] w_k = k^-alpha / sum_j j^-alpha (same formula as dos_jax.objective.zipf_prior, on the host)."""
  w = np.arange(1, num_prototypes + 1, dtype=np.float64) ** (-float(alpha))
  return w / w.sum()


def plot_alpha_vs_miou(rows: Sequence[Mapping[str, float]], path: str,
                       keys: Sequence[str] = ("head", "common", "tail", "miou")) -> str:
  """Mean +- std (over seeds) of each metric in `keys` against alpha.

  Args:
    rows: one dict per run with 'alpha' and the metric keys (None/NaN values are skipped), e.g. probe.json rows.
    path: output PNG.
  """
  fig, ax = plt.subplots(figsize=(5, 3.5))
  alphas = sorted({float(r["alpha"]) for r in rows})
  for key in keys:
    means, stds, xs = [], [], []
    for a in alphas:
      vals = [float(r[key]) for r in rows if float(r["alpha"]) == a and r.get(key) is not None
              and np.isfinite(float(r[key]))]
      if vals:
        xs.append(a)
        means.append(np.mean(vals))
        stds.append(np.std(vals))
    if xs:
      ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=key)
  ax.set_xlabel("Zipf exponent alpha")
  ax.set_ylabel("linear-probe mIoU")
  ax.grid(alpha=0.3)
  ax.legend()
  return save_figure(fig, path)


def plot_loss_curves(metrics_files: Mapping[str, str], path: str, key: str = "loss",
                     logy: bool = False) -> str:
  """`key` against `step` for each run.

  Args:
    metrics_files: {label: path to a metrics.jsonl (one JSON object per logged step with 'step' and `key`)}.
    path: output PNG.
    key: metric to plot.
    logy: log-scale y axis.
  """
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for label, file in metrics_files.items():
    rows = [r for r in fileio.read_jsonl(file, missing_ok=False) if key in r and "step" in r and r[key] is not None]
    if rows:
      ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=label)
  ax.set_xlabel("step")
  ax.set_ylabel(key)
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  if metrics_files:
    ax.legend(fontsize=7)
  return save_figure(fig, path)


def plot_rank_frequency(usage: Mapping[str, Sequence[float]] | Sequence[float], alpha: float, path: str,
                        num_prototypes: Optional[int] = None) -> str:
  """Prototype usage frequency by rank (log-log) against the Zipf prior with exponent `alpha`.

  Args:
    usage: counts per prototype (any order; sorted here), or {label: counts} for several runs.
    alpha: exponent of the prior line.
    path: output PNG.
    num_prototypes: K for the prior (default: length of the counts).
  """
  runs: Dict[str, Sequence[float]] = dict(usage) if isinstance(usage, Mapping) else {"observed": usage}
  fig, ax = plt.subplots(figsize=(5, 3.5))
  k = num_prototypes
  for label, counts in runs.items():
    counts = np.sort(np.asarray(counts, np.float64))[::-1]
    k = k or counts.size
    freq = counts / max(counts.sum(), 1e-12)
    ranks = np.arange(1, counts.size + 1)
    nz = freq > 0
    ax.loglog(ranks[nz], freq[nz], marker=".", linestyle="-", label=label)
  if k:
    ax.loglog(np.arange(1, k + 1), zipf_prior(k, alpha), "k--", label=f"Zipf prior alpha={alpha:g}")
  ax.set_xlabel("prototype rank")
  ax.set_ylabel("share of points (arg-max)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  return save_figure(fig, path)


def plot_topdown(coord, assignment, path: str, title: str = "", point_size: float = 1.0,
                 max_height_fraction: Optional[float] = 0.85) -> str:
  """Top-down (x-y) scatter of a scene coloured by each point's arg-max prototype (or class).

  Args:
    coord: f32[N, 3] coordinates; drawn from low to high z so upper surfaces stay visible.
    assignment: int[N] prototype (or class) id per point; ids are mapped to a fixed 20-colour cycle.
    path: output PNG.
    title: figure title.
    point_size: marker size.
    max_height_fraction: hide points above this fraction of the scene's z range (the ceiling of an indoor room
      would otherwise cover everything); None draws every point.
  """
  coord = np.asarray(coord, np.float32)
  assignment = np.asarray(assignment).reshape(-1)
  if coord.ndim != 2 or coord.shape[1] < 2 or coord.shape[0] != assignment.shape[0]:
    raise DataError(f"plot_topdown: coord {coord.shape} and assignment {assignment.shape} do not match")
  order = np.argsort(coord[:, 2]) if coord.shape[1] > 2 else np.arange(coord.shape[0])
  if max_height_fraction is not None and coord.shape[1] > 2 and coord.shape[0]:
    lo, hi = coord[:, 2].min(), coord[:, 2].max()
    order = order[coord[order, 2] <= lo + max_height_fraction * (hi - lo)]
  # Shuffle ids through a fixed permutation so neighbouring prototype ids get distinct colours.
  ids = np.unique(assignment, return_inverse=True)[1]
  perm = np.random.default_rng(0).permutation(max(int(ids.max()) + 1, 1)) if ids.size else np.zeros(1, int)
  colours = plt.get_cmap("tab20")(perm[ids] % 20)
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(coord[order, 0], coord[order, 1], c=colours[order], s=point_size, linewidths=0)
  ax.set_aspect("equal")
  ax.set_xlabel("x (m)")
  ax.set_ylabel("y (m)")
  ax.set_title(title or f"{len(np.unique(assignment))} prototypes")
  return save_figure(fig, path)



def plot_softmap(coord, logits, path: str, title: str = "", point_size: float = 1.0,
                 max_height_fraction: Optional[float] = 0.85) -> str:
  """Top-down picture of ONE prototype's softmap on a scene: softmax of its logits over the scene's points,
  shown as N * softmap (1 = the uniform share) on a log colour scale.

  The collapse signatures the DOS paper lists read off these pictures: two prototypes whose pictures look the same
  activate identically; a region dark in every prototype's picture is claimed by none.

  Args:
    coord: f32[N, 3] coordinates.
    logits: f[N] the prototype's logits (cos / tau) at those points.
    path: output PNG.
  """
  coord = np.asarray(coord, np.float32)
  logits = np.asarray(logits, np.float64).reshape(-1)
  if coord.ndim != 2 or coord.shape[0] != logits.shape[0] or coord.shape[0] == 0:
    raise DataError(f"plot_softmap: coord {coord.shape} and logits {logits.shape} do not match")
  share = np.exp(logits - logits.max())
  share = share / share.sum() * len(share)
  order = np.argsort(coord[:, 2])
  if max_height_fraction is not None:
    lo, hi = coord[:, 2].min(), coord[:, 2].max()
    order = order[coord[order, 2] <= lo + max_height_fraction * (hi - lo)]
  fig, ax = plt.subplots(figsize=(5.6, 5))
  norm = matplotlib.colors.LogNorm(vmin=max(share.min(), 1e-3), vmax=max(share.max(), 1e-3 * 10))
  sc = ax.scatter(coord[order, 0], coord[order, 1], c=np.maximum(share[order], 1e-3), s=point_size, linewidths=0,
                  cmap="magma", norm=norm)
  fig.colorbar(sc, ax=ax, label="N x softmap (1 = uniform)")
  ax.set_aspect("equal")
  ax.set_xlabel("x (m)")
  ax.set_ylabel("y (m)")
  ax.set_title(title, fontsize=9)
  return save_figure(fig, path)


def pca_rgb(feat, max_fit_rows: int = 20000, seed: int = 0) -> np.ndarray:
  """Per-point features f32[N, D] -> colours f32[N, 3] in [0, 1]: the first 3 principal components (fitted on at
  most `max_fit_rows` random rows, in float64), each scaled from its 1st..99th percentile to [0, 1] and clipped.
  The picture Sonata users look at first: similar features get similar colours."""
  feat = np.asarray(feat, np.float64)
  if feat.ndim != 2 or feat.shape[0] < 2:
    raise DataError(f"pca_rgb: expected features [N >= 2, D], got {feat.shape}")
  rows = feat
  if feat.shape[0] > max_fit_rows:
    rows = feat[np.random.default_rng(seed).choice(feat.shape[0], max_fit_rows, replace=False)]
  mean = rows.mean(0)
  _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
  comp = (feat - mean) @ vt[:3].T
  if comp.shape[1] < 3:
    comp = np.pad(comp, ((0, 0), (0, 3 - comp.shape[1])))
  lo, hi = np.percentile(comp, 1, axis=0), np.percentile(comp, 99, axis=0)
  return np.clip((comp - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def plot_feature_views(coord, rgb, path: str, title: str = "", point_size: float = 0.5,
                       max_height_fraction: Optional[float] = 0.85) -> str:
  """Top-down (x-y, ceiling hidden as in `plot_topdown`) and side (x-z) views of a cloud coloured by `rgb:
  f32[N, 3]` (e.g. `pca_rgb` of its features), one PNG."""
  coord = np.asarray(coord, np.float32)
  rgb = np.asarray(rgb, np.float32)
  if coord.ndim != 2 or coord.shape[1] != 3 or rgb.shape != (coord.shape[0], 3):
    raise DataError(f"plot_feature_views: coord {coord.shape} and rgb {rgb.shape} must be [N, 3] both")
  top = np.argsort(coord[:, 2])
  if max_height_fraction is not None and coord.shape[0]:
    lo, hi = coord[:, 2].min(), coord[:, 2].max()
    top = top[coord[top, 2] <= lo + max_height_fraction * (hi - lo)]
  side = np.argsort(-coord[:, 1])  # far points first, near points drawn over them
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5))
  a.scatter(coord[top, 0], coord[top, 1], c=rgb[top], s=point_size, linewidths=0)
  a.set_aspect("equal")
  a.set(xlabel="x (m)", ylabel="y (m)", title="top-down")
  b.scatter(coord[side, 0], coord[side, 2], c=rgb[side], s=point_size, linewidths=0)
  b.set_aspect("equal")
  b.set(xlabel="x (m)", ylabel="z (m)", title="side")
  fig.suptitle(title or "features: PCA to RGB")
  return save_figure(fig, path)


def plot_eval_curve(metrics_file: str, path: str, keys: Sequence[str], title: str = "") -> str:
  """Several metrics of one run (e.g. the in-training probe's `eval/linear_probe/miou`, `.../tail`) against the
  step, from the rows of its metrics.jsonl that hold them, markers at the evaluated steps."""
  rows = fileio.read_jsonl(metrics_file, missing_ok=False)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for key in keys:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    if points:
      ax.plot(*zip(*points), marker="o", label=key.rsplit("/", 1)[-1])
  ax.set_xlabel("step")
  ax.set_ylabel("score")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return save_figure(fig, path)
