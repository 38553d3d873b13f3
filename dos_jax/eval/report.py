"""A short human-readable result of one run folder: the probes' table, pretraining steps and time, and where files
are. Everything is read from the folder's own files, so a reprint shows what the first print showed.

  text = report.run_summary(workdir)
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Optional

from dos_jax import io as fileio
from dos_jax.errors import ConfigError

# (file, row label when the file holds a probe of a checkpoint), in table order.
PROBE_FILES = (("probe.json", "DOS (pretrained)"), ("probe_random_init.json", "random init"),
               ("probe_supervised.json", "supervised"))


def _read(path: str) -> Optional[Dict[str, Any]]:
  try:
    return fileio.read_json(path)
  except (OSError, ValueError):
    return None


def _pct(value) -> str:
  return "-" if value is None else f"{100.0 * float(value):.1f}"


def pretraining_seconds(workdir: str) -> Optional[float]:
  """Wall seconds of the training loop, summed over DIR/metrics.jsonl's rows: `interval_seconds` (the steps since
  the previous row, the first step's compile included) plus the in-training evaluations (`eval/<name>/seconds`);
  None when the file has no such rows."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = fileio.read_jsonl(path) if os.path.exists(path) else []
  times = [float(v) for r in rows for k, v in r.items()
           if (k == "interval_seconds" or (k.startswith("eval/") and k.endswith("/seconds")))
           and isinstance(v, (int, float))]
  return sum(times) if times else None


def row_label(name: str, result: Dict[str, Any]) -> str:
  """What a probe file's encoder was, from its content (never from its file name alone): a random-init encoder
  is 'random init' in whatever file it was written to."""
  encoder = str(result.get("encoder", ""))
  if result.get("mode") == "random_init" or encoder.startswith("random init"):
    return "random init"
  if result.get("mode") == "supervised" or encoder.startswith("supervised"):
    return "supervised"
  if encoder and not encoder.startswith("checkpoint"):
    return encoder  # e.g. "pointcept checkpoint sonata.pth" (probe --init-from)
  return dict(PROBE_FILES)[name]


def run_summary(workdir: str) -> str:
  """A Markdown table (one row per probe file present: DOS probe, random-init probe, supervised baseline; mIoU,
  head/common/tail, pretraining steps, pretraining and probe seconds) and the paths of the result JSONs, figures
  and TensorBoard logs in `workdir`.

  Raises:
    ConfigError: `workdir` is not a directory.
  """
  if not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir}: no such directory (pass the folder launch.train / launch.probe wrote)")
  rows: List[str] = ["| encoder | mIoU | head | common | tail | pretraining steps | pretraining (s) | probe (s) |",
                     "|---|---|---|---|---|---|---|---|"]
  files = []
  train_seconds = pretraining_seconds(workdir)
  for name, _ in PROBE_FILES:
    path = os.path.join(workdir, name)
    res = _read(path)
    if res is None:
      continue
    files.append(path)
    label = row_label(name, res)
    steps = res.get("checkpoint_step") if label == "DOS (pretrained)" else None
    pretrain = f"{train_seconds:.0f}" if steps is not None and train_seconds is not None else "-"
    probe = "-" if res.get("seconds") is None else f"{float(res['seconds']):.0f}"
    rows.append(f"| {label} | {_pct(res.get('miou'))} | {_pct(res.get('head'))} | {_pct(res.get('common'))} | "
                f"{_pct(res.get('tail'))} | {steps if steps is not None else '-'} | {pretrain} | {probe} |")
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
