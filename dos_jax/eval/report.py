"""A short human-readable result of one run folder: DOS vs random-init probe, steps, time, and where files are.

  text = report.run_summary(workdir, train_seconds=312.0)
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Optional

from dos_jax import io as fileio


def _read(path: str) -> Optional[Dict[str, Any]]:
  try:
    return fileio.read_json(path)
  except (OSError, ValueError):
    return None


def _pct(value) -> str:
  return "-" if value is None else f"{100.0 * float(value):.1f}"


def run_summary(workdir: str, train_seconds: Optional[float] = None) -> str:
  """A Markdown table (DOS probe vs random-init probe: mIoU, head/common/tail, pretraining steps, seconds) and the
  paths of the result JSONs, figures and TensorBoard logs in `workdir` (rows/paths that do not exist are left out).

  Args:
    workdir: a `launch.train` + `launch.probe` run folder.
    train_seconds: wall time of the pretraining, added to the DOS row's time when given.
  """
  rows: List[str] = ["| encoder | mIoU | head | common | tail | pretraining steps | time (s) |",
                     "|---|---|---|---|---|---|---|"]
  files = []
  for name, label in (("probe.json", "DOS (pretrained)"), ("probe_random_init.json", "random init")):
    path = os.path.join(workdir, name)
    res = _read(path)
    if res is None:
      continue
    files.append(path)
    seconds = float(res.get("seconds") or 0.0)
    if name == "probe.json" and train_seconds is not None:
      seconds += float(train_seconds)
    steps = res.get("checkpoint_step") if name == "probe.json" else 0
    rows.append(f"| {label} | {_pct(res.get('miou'))} | {_pct(res.get('head'))} | {_pct(res.get('common'))} | "
                f"{_pct(res.get('tail'))} | {steps if steps is not None else '-'} | {seconds:.0f} |")
  figures = sorted(glob.glob(os.path.join(workdir, "*.png")))
  events = sorted(glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True))
  out = ["\n".join(rows), "", "results: " + (", ".join(files) or "(no probe result yet)")]
  if figures:
    out.append("figures: " + ", ".join(figures))
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    out.append("metrics: " + os.path.join(workdir, "metrics.jsonl"))
  if events:
    out.append(f"TensorBoard: tensorboard --logdir {workdir}  ({len(events)} event file(s))")
  return "\n".join(out) + "\n"
