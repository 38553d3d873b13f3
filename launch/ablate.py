r"""Small-scale ablations of DOS with the project's own commands: pretrain + linear probe per run, then a table.

  python -m launch.ablate --workdir /tmp/dos_ablate --seeds 0,1 --steps 120
  python -m launch.ablate --workdir /tmp/dos_ablate --only baseline          # DOS vs random-init only
  python -m launch.ablate --workdir /tmp/dos_ablate --only alpha --alphas 0,1.3,1.6
  python -m launch.ablate --workdir /tmp/dos_scan --only baseline \
      --config configs/scannet_tiny.py:root=/tmp/scannet_tree                # the same on real scans
  python -m launch.ablate --workdir /tmp/dos_ablate --collect                # table and plots only

Runs (each = `launch.train` then `launch.probe`, at a fixed budget: config + `--steps`), per seed:
  default        supervision=observable, normalization=softmap, zipf_alpha=1.3 (shared by all groups) and, in
                 its run folder, the random-init probe baseline (`launch.probe --random-init`, same seed);
  supervision    masked_tokens, token_jitter;
  normalization  clustering;
  alpha          zipf_alpha in --alphas (default 0,0.6,1.3,1.6,2.0; 1.3 is the default run).
Run `name` of seed `s` lives in DIR/<name>/seed<s>/ (metrics.jsonl, checkpoints, probe.json,
probe_random_init.json). A run whose probe.json already exists is skipped, so an interrupted ablation resumes.
`--parallel N` runs N configurations at once (default 1: one after another); the seeds of one configuration
always run one after another, so that seeds after the first reuse its compiled train step from JAX's persistent
compilation cache (set JAX_COMPILATION_CACHE_DIR; on a busy 2-core machine the compile costs more than 100 steps).
`--runs a,b` restricts the plan to those run names (e.g. to resume part of it in a second process).
At the end (and after every finished run)
it writes DIR/ablation.json (per-seed values and mean/std), DIR/ablation.md (Markdown table: mean ± sample std
over seeds) and PNGs in DIR/figures/: alpha vs head/common/tail mIoU, loss curves, prototype rank-frequency against
the Zipf prior, and a top-down render of an evaluation scene coloured by arg-max prototype.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dos_jax import io as fileio

GROUPS = ("baseline", "supervision", "normalization", "alpha")
DEFAULT_ALPHAS = (0.0, 0.6, 1.3, 1.6, 2.0)
DEFAULT_OVERRIDES = {"supervision": "observable", "normalization": "softmap", "zipf_alpha": 1.3}
# Metrics of the table: (key in a seed's record, column title).
METRICS = (("miou", "mIoU"), ("accuracy", "point acc"), ("head", "head"), ("common", "common"), ("tail", "tail"),
           ("loss", "final loss"),
           ("effective_prototypes", "eff. prototypes (train)"), ("unclaimed", "unclaimed pts"),
           ("collapsed_pairs", "collapsed pairs"))
_PERCENT = ("miou", "accuracy", "head", "common", "tail", "unclaimed", "collapsed_pairs")


@dataclasses.dataclass(frozen=True)
class Run:
  """One pretraining configuration of the plan (all seeds share it).

  name: folder name under DIR; groups: the ablation groups it belongs to (the default run is in all of them);
  overrides: `--config.key=value` settings on top of the config; random_init: also probe a random-init encoder.
  """
  name: str
  groups: Tuple[str, ...]
  overrides: Dict[str, Any]
  random_init: bool = False


def _alpha_name(alpha: float) -> str:
  return f"alpha={float(alpha):g}"


def plan(only: Optional[Sequence[str]] = None, alphas: Sequence[float] = DEFAULT_ALPHAS) -> List[Run]:
  """The runs of the ablation, in execution order (the key comparison first), restricted to groups `only`.

  The default run (observable / softmap / alpha 1.3) belongs to every group, so it is listed once; the alpha group
  reuses it for alpha=1.3.
  """
  only = tuple(only or GROUPS)
  bad = [g for g in only if g not in GROUPS]
  if bad:
    raise ValueError(f"--only: unknown group(s) {bad}; expected some of {list(GROUPS)}")
  runs = [Run("default", GROUPS, dict(DEFAULT_OVERRIDES), random_init=True)]
  runs.append(Run("masked_tokens", ("supervision",), dict(DEFAULT_OVERRIDES, supervision="masked_tokens")))
  runs.append(Run("clustering", ("normalization",), dict(DEFAULT_OVERRIDES, normalization="clustering")))
  # Extremes of alpha first (alpha=0 is the uniform-Sinkhorn ablation the paper contrasts with).
  others = sorted((float(a) for a in alphas if float(a) != 1.3), key=lambda a: (a not in (0.0, 1.6), a))
  alpha_runs = [Run(_alpha_name(a), ("alpha",), dict(DEFAULT_OVERRIDES, zipf_alpha=a)) for a in others]
  key_alphas = sum(1 for a in others if a in (0.0, 1.6))
  runs += alpha_runs[:key_alphas]
  runs.append(Run("token_jitter", ("supervision",), dict(DEFAULT_OVERRIDES, supervision="token_jitter")))
  runs += alpha_runs[key_alphas:]
  return [r for r in runs if set(r.groups) & set(only)]


def run_dir(workdir: str, run: Run, seed: int) -> str:
  return os.path.join(workdir, run.name, f"seed{seed}")


def commands(config: str, workdir: str, run: Run, seed: int, steps: Optional[int] = None,
             probe_args: Sequence[str] = ()) -> List[List[str]]:
  """argv lists of one run/seed: train, [probe --random-init], probe (same config and overrides for all)."""
  out_dir = run_dir(workdir, run, seed)
  cfg = [f"--config={config}", f"--workdir={out_dir}", f"--config.seed={seed}"]
  cfg += [f"--config.{k}={v}" for k, v in sorted(run.overrides.items())]
  if steps:
    cfg.append(f"--config.total_steps={int(steps)}")
  py = [sys.executable, "-m"]
  cmds = [py + ["launch.train"] + cfg]
  if run.random_init:
    cmds.append(py + ["launch.probe"] + cfg + ["--random-init", "--plots=false"] + list(probe_args))
  cmds.append(py + ["launch.probe"] + cfg + list(probe_args))
  return cmds


# ----------------------------------------------------------------------------------------------- results


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _probe_record(probe: Dict[str, Any]) -> Dict[str, Any]:
  col = probe.get("collapse") if isinstance(probe.get("collapse"), dict) else {}
  return {"miou": probe.get("miou"), "accuracy": probe.get("accuracy"), "head": probe.get("head"),
          "common": probe.get("common"),
          "tail": probe.get("tail"), "unclaimed": col.get("unclaimed_point_fraction"),
          "collapsed_pairs": col.get("collapsed_pair_fraction"),
          "probe_effective_prototypes": col.get("effective_prototypes"),
          "checkpoint_step": probe.get("checkpoint_step")}


def seed_records(workdir: str, runs: Sequence[Run], seeds: Sequence[int], suffix: str = ""
                 ) -> Dict[str, Dict[int, Dict[str, Any]]]:
  """{row name: {seed: metrics}} from the run folders; rows are the runs plus 'random_init' (probe only).

  Reads probe{suffix}.json and probe_random_init{suffix}.json (a suffix selects another probe of the same
  checkpoints, e.g. '_balanced' for `--config.probe.class_balanced=true --out probe_balanced.json`).
  """
  rows: Dict[str, Dict[int, Dict[str, Any]]] = {}
  for run in runs:
    for seed in seeds:
      d = run_dir(workdir, run, seed)
      probe = _read_json(os.path.join(d, f"probe{suffix}.json"))
      last = fileio.last_jsonl_row(os.path.join(d, "metrics.jsonl"))
      if probe is not None:
        rec = _probe_record(probe)
        rec.update(loss=last.get("loss"), effective_prototypes=last.get("effective_prototypes"),
                   step=last.get("step"))
        rows.setdefault(run.name, {})[seed] = rec
      rnd = _read_json(os.path.join(d, f"probe_random_init{suffix}.json")) if run.random_init else None
      if rnd is not None:
        rows.setdefault("random_init", {})[seed] = _probe_record(rnd)
  return rows


def _mean_std(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
  vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
  if not vals:
    return None, None, 0
  mean = sum(vals) / len(vals)
  std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
  return mean, std, len(vals)


def summarize(records: Dict[str, Dict[int, Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
  """{row: {'seeds': [...], metric: {'mean', 'std', 'values'}}} with std the sample std (ddof=1) over seeds."""
  out = {}
  for name, by_seed in records.items():
    seeds = sorted(by_seed)
    row: Dict[str, Any] = {"seeds": seeds, "checkpoint_step": [by_seed[s].get("checkpoint_step") for s in seeds]}
    for key, _ in METRICS:
      values = [by_seed[s].get(key) for s in seeds]
      mean, std, _ = _mean_std(values)
      row[key] = {"mean": mean, "std": std, "values": values}
    out[name] = row
  return out


def _cell(stat: Optional[Dict[str, Any]], percent: bool) -> str:
  if not stat or stat.get("mean") is None:
    return "-"
  scale, fmt = (100.0, "{:.1f}") if percent else (1.0, "{:.3g}")
  return f"{fmt.format(stat['mean'] * scale)} ± {fmt.format(stat['std'] * scale)}"


def format_table(summary: Dict[str, Dict[str, Any]], order: Optional[Sequence[str]] = None) -> str:
  """Markdown table: one row per run, mean ± sample std over seeds (mIoU and fractions in %)."""
  names = [n for n in (order or [])] + sorted(n for n in summary if n not in (order or []))
  head = "| run | seeds | " + " | ".join(t for _, t in METRICS) + " | pretrain steps |\n"
  sep = "|---|---|" + "---|" * (len(METRICS) + 1) + "\n"
  lines = []
  for name in names:
    if name not in summary:
      continue
    row = summary[name]
    cells = [_cell(row.get(k), percent=k in _PERCENT) for k, _ in METRICS]
    steps = sorted({s for s in row.get("checkpoint_step") or () if s is not None})
    cells.append(",".join(str(s) for s in steps) or "0 (random init)")
    lines.append(f"| {name} | {','.join(str(s) for s in row['seeds'])} | " + " | ".join(cells) + " |\n")
  return head + sep + "".join(lines)


def write_report(workdir: str, runs: Sequence[Run], seeds: Sequence[int], settings: Dict[str, Any],
                 plots: bool = True, suffix: str = "") -> str:
  """Writes DIR/ablation{suffix}.json, DIR/ablation{suffix}.md and the figures; returns the Markdown table."""
  records = seed_records(workdir, runs, seeds, suffix)
  summary = summarize(records)
  order = ["default", "random_init"] + [r.name for r in runs if r.name != "default"]
  table = format_table(summary, order)
  doc = {"settings": settings, "runs": [dataclasses.asdict(r) for r in runs], "per_seed": records,
         "summary": summary}
  fileio.write_json(os.path.join(workdir, f"ablation{suffix}.json"), doc, indent=1, default=str)
  md = ("# DOS ablation (small scale)\n\n" + "Settings: `" + json.dumps(settings, default=str) + "`\n\n"
        "mean ± sample std over seeds; mIoU, head/common/tail, unclaimed points and collapsed prototype pairs in "
        "%. Final loss is not comparable between softmap and clustering (different targets).\n\n" + table)
  fileio.write_text(os.path.join(workdir, f"ablation{suffix}.md"), md)
  if plots:
    try:
      make_plots(workdir, runs, seeds, records, float(settings.get("prior_alpha", 1.3)), suffix)
    except Exception as e:  # pylint: disable=broad-except  (a figure must never lose the table)
      print(f"[ablate] plots failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
  return table


def make_plots(workdir: str, runs: Sequence[Run], seeds: Sequence[int],
               records: Dict[str, Dict[int, Dict[str, Any]]], prior_alpha: float = 1.3, suffix: str = ""
               ) -> List[str]:
  """PNGs in DIR/figures/ from what has finished so far; returns their paths."""
  from dos_jax.eval import plots  # pylint: disable=g-import-not-at-top
  fig_dir = os.path.join(workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  out = []
  alpha_rows = []
  for run in runs:
    if "alpha" not in run.groups:
      continue
    for seed, rec in records.get(run.name, {}).items():
      alpha_rows.append(dict(alpha=float(run.overrides["zipf_alpha"]), **{k: rec.get(k) for k in
                                                                         ("head", "common", "tail", "miou")}))
  if alpha_rows:
    out.append(plots.plot_alpha_vs_miou(alpha_rows, os.path.join(fig_dir, f"alpha_vs_miou{suffix}.png")))
  first = min(seeds)
  curves = {r.name: os.path.join(run_dir(workdir, r, first), "metrics.jsonl") for r in runs}
  curves = {k: v for k, v in curves.items() if os.path.exists(v)}
  if curves:
    out.append(plots.plot_loss_curves(curves, os.path.join(fig_dir, "loss_curves.png")))
  usage = {}
  for run in runs:
    if "alpha" in run.groups:
      probe = _read_json(os.path.join(run_dir(workdir, run, first), "probe.json")) or {}
      col = probe.get("collapse")
      if isinstance(col, dict) and col.get("usage_by_rank"):
        usage[f"alpha={float(run.overrides['zipf_alpha']):g}"] = col["usage_by_rank"]
        num_prototypes = col.get("num_prototypes")
  if usage:
    out.append(plots.plot_rank_frequency(usage, prior_alpha, os.path.join(fig_dir, "rank_frequency.png"),
                                         num_prototypes=num_prototypes))
  default = [r for r in runs if r.name == "default"]
  if default:
    src = os.path.join(run_dir(workdir, default[0], first), "probe_topdown.png")
    if os.path.exists(src):
      dst = os.path.join(fig_dir, "topdown_argmax_prototype.png")
      shutil.copyfile(src, dst)
      out.append(dst)
  return out


# ----------------------------------------------------------------------------------------------- CLI


def _run_one(cmds: List[List[str]], log_path: str, lock: threading.Lock) -> int:
  """Runs one run/seed's commands in order (stop at the first failure); output appended to `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a", encoding="utf-8") as log:
    for argv in cmds:
      with lock:
        print(f"[ablate] {time.strftime('%H:%M:%S')} {' '.join(argv[2:])}", flush=True)
      log.write(f"\n$ {' '.join(argv)}\n")
      log.flush()
      rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
      if rc != 0:
        return rc
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", required=True, help="ablation folder (runs in DIR/<run>/seed<s>/)")
  p.add_argument("--config", default="configs/ablation_tiny.py", help="base config (path.py[:arg])")
  p.add_argument("--seeds", default="0,1", help="comma-separated seeds (>= 2 for a spread)")
  p.add_argument("--steps", type=int, default=None, help="pretraining steps per run (default: the config's)")
  p.add_argument("--only", default="", help=f"comma-separated groups of {list(GROUPS)} (default all)")
  p.add_argument("--alphas", default=",".join(f"{a:g}" for a in DEFAULT_ALPHAS), help="zipf_alpha values")
  p.add_argument("--parallel", type=int, default=1, help="configurations at once (default 1); seeds in sequence")
  p.add_argument("--runs", default="", help="comma-separated run names to do (default: the whole plan)")
  p.add_argument("--probe-args", default="", help="extra launch.probe flags, space-separated")
  p.add_argument("--collect", action="store_true", help="only write the table and plots")
  p.add_argument("--suffix", default="", help="with --collect: table of probe{SUFFIX}.json files")
  args = p.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    runs = plan([g for g in args.only.split(",") if g] or None, alphas)
    todo = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(todo) - {r.name for r in runs})
    if unknown:
      raise ValueError(f"--runs: {unknown} not in the plan {[r.name for r in runs]}")
  except ValueError as e:
    print(f"ConfigError: {e}", file=sys.stderr)
    return 2
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  settings = {"config": args.config, "steps": args.steps, "seeds": seeds, "alphas": alphas,
              "only": args.only or "all", "probe_args": args.probe_args, "prior_alpha": 1.3}
  status: Dict[str, str] = {}
  if not args.collect:
    lock = threading.Lock()

    def job(run: Run) -> None:  # the seeds of one configuration, one after another
      for seed in seeds:
        key = f"{run.name}/seed{seed}"
        if os.path.exists(os.path.join(run_dir(workdir, run, seed), "probe.json")):
          status[key] = "done (earlier)"
          continue
        cmds = commands(args.config, workdir, run, seed, args.steps, args.probe_args.split())
        rc = _run_one(cmds, os.path.join(run_dir(workdir, run, seed), "ablate.log"), lock)
        with lock:
          status[key] = "done" if rc == 0 else f"failed (exit {rc})"
          print(f"[ablate] {time.strftime('%H:%M:%S')} {key}: {status[key]}", flush=True)
          write_report(workdir, runs, seeds, dict(settings, status=dict(status)))

    selected = [r for r in runs if not todo or r.name in todo]
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
      for fut in [pool.submit(job, r) for r in selected]:
        fut.result()
  print(write_report(workdir, runs, seeds, dict(settings, status=status), suffix=args.suffix))
  return 0 if all(s.startswith("done") for s in status.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
