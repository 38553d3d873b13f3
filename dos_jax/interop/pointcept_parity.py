r"""dos_jax vs upstream Pointcept PTv3 on one real scene: `run(...)`, the report of `python -m launch.parity
--against pointcept [--checkpoint PATH] [--scene DIR] [--grid-size M] [--json PATH]`.

Without --checkpoint both run the same random PT-v3m2 (3 stages, 4 blocks in the last: all four orders) drawn
upstream; with one, dos_jax loads it (`dos_jax.interop.pointcept.load_checkpoint`) and upstream is built from the
inferred config holding the exported weights (`to_state_dict` -> `load_state_dict(strict=True)`, so the export is
checked too). Default scene: ../shared/data/scannet_votenet50k/scene0000_00, whole, grid-sampled at 0.05 m.

Report: per stage (rows matched by grid coordinate) and for the up-cast features, max abs and max relative
difference (max |dos - upstream| / max |upstream|), tolerance 1e-4 relative (float32 through ~20 layers: ~1e-6
measured); exit code 1 when any exceeds it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from dos_jax.interop import pointcept_upstream

TOLERANCE = 1e-4
DEFAULT_SCENE = os.path.join(os.path.dirname(pointcept_upstream.ROOT), "shared", "data", "scannet_votenet50k",
                             "scene0000_00")
RANDOM_MODEL = dict(kind="PT-v3m2", channels=(16, 32, 64), depths=(1, 1, 4), heads=(1, 2, 4), patch=48)


def _diff(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  d = float(np.abs(a - b).max()) if a.size else 0.0
  return {"max_abs": d, "max_rel": d / max(float(np.abs(b).max()) if b.size else 0.0, 1e-300)}


def _by_grid(grid: np.ndarray, feat: np.ndarray) -> np.ndarray:
  return feat[np.lexsort(grid.T[::-1])]


def run(checkpoint: Optional[str] = None, scene: Optional[str] = None, grid_size: float = 0.05,
        overrides: Optional[Dict[str, Any]] = None, seed: int = 0) -> Dict[str, Any]:
  """The comparison report {ok, failures, tolerance, points, model, stages: {stage{s}: diff}, upcast: diff}."""
  from dos_jax.interop import pointcept  # pylint: disable=g-import-not-at-top
  overrides = dict(overrides or {})
  if checkpoint:
    params, cfg = pointcept.load_checkpoint(checkpoint, **overrides)
    model = pointcept_upstream.build_from_config(cfg, params)
  else:
    r = RANDOM_MODEL
    model = pointcept_upstream.build_random(r["kind"], r["channels"], r["depths"], r["heads"], r["patch"], seed=seed)
    params, cfg = pointcept.from_state_dict(pointcept_upstream.state_dict(model), enc_num_head=r["heads"],
                                            enc_patch_size=r["patch"])
  coord, feat, grid = pointcept_upstream.scan(scene or DEFAULT_SCENE, grid_size, int(cfg["in_channels"]))
  ours, ours_up = pointcept.stage_features(params, cfg, coord, feat, grid)
  theirs, theirs_up = pointcept_upstream.forward(model, coord, feat, grid)
  stages = {}
  for s, ((g_a, f_a), (g_b, f_b)) in enumerate(zip(ours, theirs)):
    if len(g_a) != len(g_b):
      raise AssertionError(f"stage {s}: {len(g_a)} dos points vs {len(g_b)} upstream")
    stages[f"stage{s}"] = _diff(_by_grid(g_a, f_a), _by_grid(g_b, f_b))
  upcast = _diff(ours_up, theirs_up)
  failures = [f"{k}: rel {v['max_rel']:.3g} > {TOLERANCE:g}" for k, v in list(stages.items()) + [("upcast", upcast)]
              if not v["max_rel"] <= TOLERANCE]
  return {"ok": not failures, "failures": failures, "tolerance": TOLERANCE, "against": "pointcept",
          "checkpoint": checkpoint, "scene": scene or DEFAULT_SCENE, "grid_size": grid_size, "points": len(coord),
          "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, "stages": stages,
          "upcast": upcast}


def summary_lines(report: Dict[str, Any]) -> Sequence[str]:
  lines = [f"pointcept {report['model']['type']} on {report['points']} points @ {report['grid_size']} m"]
  for name, d in list(report["stages"].items()) + [("upcast", report["upcast"])]:
    flag = "ok  " if d["max_rel"] <= report["tolerance"] else "FAIL"
    lines.append(f"  {name:8s} {flag} max_abs {d['max_abs']:.2e} max_rel {d['max_rel']:.2e} "
                 f"(tol {report['tolerance']:.0e})")
  return lines
