r"""Run a sweep: one `launch.train` run per override dict of a sweep config's `get_sweep()`, then a results table.

  python -m launch.sweep --config configs/sweep_zipf_alpha.py --workdir DIR                 # local, sequential
  python -m launch.sweep --config configs/sweep_zipf_alpha.py --workdir DIR --mode commands # one line per run
  python -m launch.sweep --config configs/sweep_zipf_alpha.py --workdir DIR --mode collect  # table only

Extra `--config.key=value` overrides after `--` apply to every run, e.g. `-- --config.total_steps=50`.
Run `i` trains in DIR/<name> where name spells its overrides (`zipf_alpha=1.3`). `local` runs them one after
another (a failed run is reported and the sweep continues); `commands` prints one shell command per run for a
cluster scheduler; every mode except `commands` ends by writing DIR/results.md and DIR/results.json: final loss,
effective prototypes (last logged), probe mIoU when DIR/<name>/probe.json exists, and the run's status.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags

from dos_jax import io as fileio

_CONFIG = flags.DEFINE_string("config", None, "Sweep config file with get_config() and get_sweep() "
                              "(optionally path.py:arg, passed to get_config).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory; run i trains in DIR/<run name>.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "commands", "collect"],
                          "local: run sequentially here; commands: print one command per run; collect: table only.")
flags.mark_flags_as_required(["config", "workdir"])

# The train step's collapse diagnostic: exp(entropy of prototype usage) (dos_jax.eval.diagnostics).
_EFFECTIVE_KEY = "effective_prototypes"


def load_sweep(config_spec: str) -> List[Dict[str, Any]]:
  """Imports the sweep config file of `path.py[:arg]` and returns its get_sweep() list of override dicts."""
  path = config_spec.split(":", 1)[0]
  if not os.path.isfile(path):
    raise app.UsageError(f"--config={config_spec}: no such file {path}")
  spec = importlib.util.spec_from_file_location("_dos_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise app.UsageError(f"--config={config_spec}: {path} has no get_sweep() returning a list of override dicts")
  sweep = list(module.get_sweep())
  if not sweep or not all(isinstance(o, dict) for o in sweep):
    raise app.UsageError(f"--config={config_spec}: get_sweep() must return a non-empty list of dicts")
  return sweep


def run_name(overrides: Dict[str, Any]) -> str:
  """Directory name of a run, from its overrides: {'zipf_alpha': 1.3} -> 'zipf_alpha=1.3'."""
  parts = [f"{k}={v}" for k, v in sorted(overrides.items())]
  return ",".join(parts).replace("/", "_").replace(" ", "") or "base"


def train_command(config_spec: str, workdir: str, overrides: Dict[str, Any],
                  extra: Sequence[str] = ()) -> List[str]:
  """argv of the `launch.train` run of one sweep point."""
  argv = [sys.executable, "-m", "launch.train", f"--config={config_spec}",
          f"--workdir={os.path.join(workdir, run_name(overrides))}"]
  argv += [f"--config.{k}={v}" for k, v in sorted(overrides.items())]
  return argv + list(extra)


def collect(workdir: str, sweep: Sequence[Dict[str, Any]], status: Optional[Dict[str, str]] = None
            ) -> List[Dict[str, Any]]:
  """One row per run: name, overrides, status, last step, final loss, effective prototypes, probe mIoU."""
  rows = []
  for overrides in sweep:
    name = run_name(overrides)
    run_dir = os.path.join(workdir, name)
    last = fileio.last_jsonl_row(os.path.join(run_dir, "metrics.jsonl"))
    effective = last.get(_EFFECTIVE_KEY)
    probe = None
    probe_path = os.path.join(run_dir, "probe.json")
    if os.path.exists(probe_path):
      with open(probe_path) as f:
        probe = json.load(f).get("miou")
    row_status = (status or {}).get(name) or ("logged" if last else "missing")
    rows.append(dict(run=name, overrides=overrides, status=row_status, step=last.get("step"),
                     loss=last.get("loss"), effective_prototypes=effective, probe_miou=probe))
  return rows


def _fmt(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def write_results(workdir: str, rows: Sequence[Dict[str, Any]]) -> str:
  """Writes DIR/results.json and DIR/results.md (atomically); returns the markdown table."""
  header = "| run | status | step | final loss | effective prototypes | probe mIoU |\n|---|---|---|---|---|---|\n"
  body = "".join(f"| {r['run']} | {r['status']} | {_fmt(r['step'])} | {_fmt(r['loss'])} | "
                 f"{_fmt(r['effective_prototypes'])} | {_fmt(r['probe_miou'])} |\n" for r in rows)
  table = header + body
  os.makedirs(workdir, exist_ok=True)
  fileio.write_json(os.path.join(workdir, "results.json"), list(rows), indent=2)
  fileio.write_text(os.path.join(workdir, "results.md"), "# Sweep results\n\n" + table)
  return table


def main(argv):
  extra = [a for a in argv[1:] if a != "--"]
  bad = [a for a in extra if not a.startswith("--config.")]
  if bad:
    raise app.UsageError(f"only --config.key=value overrides may follow '--', got {bad}")
  sweep = load_sweep(_CONFIG.value)
  workdir = _WORKDIR.value
  commands = [train_command(_CONFIG.value, workdir, o, extra) for o in sweep]
  # Each run's --workdir must have an existing parent (launch.train refuses to create a tree from a typo).
  os.makedirs(workdir, exist_ok=True)
  if _MODE.value == "commands":
    for argv_i in commands:
      print(shlex.join(["python"] + argv_i[1:]))
    return 0
  status = {}
  if _MODE.value == "local":
    for overrides, argv_i in zip(sweep, commands):
      name = run_name(overrides)
      print(f"[sweep] {name}: {shlex.join(argv_i)}", flush=True)
      rc = subprocess.call(argv_i)
      status[name] = "done" if rc == 0 else f"failed (exit {rc})"
  print(write_results(workdir, collect(workdir, sweep, status)))
  return 0 if all(s == "done" for s in status.values()) else 1


if __name__ == "__main__":
  app.run(main)
