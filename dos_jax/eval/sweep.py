"""Sweeps as data: a plan of named runs (a config's `get_sweep()`), the commands of one run and seed, and the
results table with PAIRED differences to a reference run.

A plan is what a sweep config's `get_sweep()` returns: a list of dicts

  {"name": "dos", "overrides": {"zipf_alpha": 1.3, ...}, "groups": ("chain", "alpha"), "random_init": True}

(`groups` and `random_init` optional). `parse_plan` checks it once. Run `name` of seed `s` lives in
DIR/<name>/seed<s>/ (the `launch.train` workdir: metrics.jsonl, checkpoints, probe.json and, for a run with
`random_init`, probe_random_init.json: the random-init encoder probed with the same seed and scenes).

Statistics: for each run r and metric m, the per-seed values, their mean and sample std, and the paired difference
to the reference run over the seeds both have: d_s = m_r(s) - m_ref(s), its mean and a 95% Student-t interval
mean +- t_{0.975, n-1} * sd(d) / sqrt(n). A difference is *resolved* when that interval excludes 0. Pairing by seed
removes the noise the runs share (the same seed draws the same scenes, views and probe split for every run).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from dos_jax import io as fileio
from dos_jax.errors import ConfigError

RANDOM_INIT = "random_init"
# Metrics of the table: (key in a seed's record, column title, shown in %).
METRICS = (("miou", "mIoU", True), ("head", "head", True), ("common", "common", True), ("tail", "tail", True),
           ("loss", "final loss", False))
DIFF_METRICS = ("miou", "head", "common", "tail")


@dataclasses.dataclass(frozen=True)
class Run:
  """One named configuration of a sweep: `overrides` are `--config.key=value` settings on top of the config."""
  name: str
  overrides: Dict[str, Any]
  groups: tuple = ()
  random_init: bool = False


def parse_plan(entries: Sequence[Mapping[str, Any]], where: str = "get_sweep()") -> List[Run]:
  """Validates a `get_sweep()` list into Runs (ConfigError naming the entry and the problem)."""
  runs, seen = [], set()
  if not entries:
    raise ConfigError(f"{where}: the plan is empty")
  for i, e in enumerate(entries):
    if not isinstance(e, Mapping) or not isinstance(e.get("name"), str) or not isinstance(e.get("overrides"),
                                                                                          Mapping):
      raise ConfigError(f"{where}[{i}]: expected a dict with 'name' (str) and 'overrides' (dict), got {e!r}")
    name = e["name"]
    if not name or any(c in name for c in "/ ,") or name == RANDOM_INIT or name in seen:
      raise ConfigError(f"{where}[{i}]: run name {name!r} must be unique, non-empty, without '/', ' ' or ',' "
                        f"and not {RANDOM_INIT!r}")
    unknown = set(e) - {"name", "overrides", "groups", "random_init"}
    if unknown:
      raise ConfigError(f"{where}[{i}] ({name}): unknown fields {sorted(unknown)}")
    seen.add(name)
    runs.append(Run(name, dict(e["overrides"]), tuple(e.get("groups", ())), bool(e.get("random_init", False))))
  return runs


def select(runs: Sequence[Run], groups: Sequence[str] = (), names: Sequence[str] = ()) -> List[Run]:
  """The runs in any of `groups` or named in `names` (all runs when both are empty), in plan order."""
  known_groups = {g for r in runs for g in r.groups}
  bad = sorted(set(groups) - known_groups) + sorted(set(names) - {r.name for r in runs})
  if bad:
    raise ConfigError(f"--groups/--runs: {bad} not in the plan (groups {sorted(known_groups)}, runs "
                      f"{[r.name for r in runs]})")
  if not groups and not names:
    return list(runs)
  return [r for r in runs if set(r.groups) & set(groups) or r.name in names]


def run_dir(workdir: str, name: str, seed: int) -> str:
  return os.path.join(workdir, name, f"seed{int(seed)}")


def commands(config: str, workdir: str, run: Run, seed: int, extra: Sequence[str] = (),
             probe_args: Sequence[str] = ()) -> List[List[str]]:
  """argv lists of one run and seed: train, [probe --random-init], probe (same config and overrides for all).

  `extra` are further `--config.key=value` overrides applied after the run's own (e.g. a step budget).
  """
  cfg = [f"--config={config}", f"--workdir={run_dir(workdir, run.name, seed)}", f"--config.seed={int(seed)}"]
  cfg += [f"--config.{k}={v}" for k, v in run.overrides.items()] + list(extra)
  py = [sys.executable, "-m"]
  cmds = [py + ["launch.train"] + cfg]
  if run.random_init:
    cmds.append(py + ["launch.probe"] + cfg + ["--random-init", "--noplots"] + list(probe_args))
  cmds.append(py + ["launch.probe"] + cfg + list(probe_args))
  return cmds


def is_done(workdir: str, run: Run, seed: int) -> bool:
  """A run/seed is finished when its probe results exist (written last and atomically): resume skips it."""
  d = run_dir(workdir, run.name, seed)
  need = ["probe.json"] + (["probe_random_init.json"] if run.random_init else [])
  return all(os.path.exists(os.path.join(d, n)) for n in need)


# ----------------------------------------------------------------------------------------------- results


def _read(path: str) -> Optional[Dict[str, Any]]:
  try:
    return fileio.read_json(path)
  except (OSError, ValueError):
    return None


def seed_records(workdir: str, runs: Sequence[Run], seeds: Sequence[int]) -> Dict[str, Dict[int, Dict[str, Any]]]:
  """{row: {seed: {miou, head, common, tail, loss, step, seconds}}}; rows are runs plus 'random_init'."""
  rows: Dict[str, Dict[int, Dict[str, Any]]] = {}
  for run in runs:
    for seed in seeds:
      d = run_dir(workdir, run.name, seed)
      probe = _read(os.path.join(d, "probe.json"))
      if probe is not None:
        last = fileio.last_jsonl_row(os.path.join(d, "metrics.jsonl"))
        rec = {k: probe.get(k) for k in DIFF_METRICS}
        rec.update(loss=last.get("loss"), step=probe.get("checkpoint_step"))
        rows.setdefault(run.name, {})[seed] = rec
      rnd = _read(os.path.join(d, "probe_random_init.json")) if run.random_init else None
      if rnd is not None:
        rows.setdefault(RANDOM_INIT, {})[seed] = {k: rnd.get(k) for k in DIFF_METRICS}
  return rows


def _finite(v) -> bool:
  return v is not None and math.isfinite(float(v))


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
  """{'mean', 'std' (sample, ddof=1; 0 for one value), 'n'} over the finite values (mean None when none)."""
  vals = [float(v) for v in values if _finite(v)]
  if not vals:
    return {"mean": None, "std": None, "n": 0}
  mean = sum(vals) / len(vals)
  std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
  return {"mean": mean, "std": std, "n": len(vals)}


def paired_difference(values: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]],
                      level: float = 0.95) -> Dict[str, Any]:
  """Paired difference over the seeds with finite values on both sides.

  Returns:
    {'n', 'mean', 'low', 'high', 'resolved'}: mean of d_s = values[s] - reference[s] and its Student-t interval
    at `level` (None bounds for n < 2); resolved = the interval excludes 0.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  d = [float(values[s]) - float(reference[s]) for s in sorted(values)
       if s in reference and _finite(values[s]) and _finite(reference[s])]
  n = len(d)
  if n == 0:
    return {"n": 0, "mean": None, "low": None, "high": None, "resolved": False}
  mean = sum(d) / n
  if n < 2:
    return {"n": 1, "mean": mean, "low": None, "high": None, "resolved": False}
  sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
  half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
  low, high = mean - half, mean + half
  return {"n": n, "mean": mean, "low": low, "high": high, "resolved": bool(low > 0 or high < 0)}


def summarize(records: Dict[str, Dict[int, Dict[str, Any]]], reference: str) -> Dict[str, Dict[str, Any]]:
  """{row: {'seeds', metric: mean_std, 'diff': {metric: paired_difference vs `reference`}}}."""
  ref = records.get(reference, {})
  out = {}
  for name, by_seed in records.items():
    seeds = sorted(by_seed)
    row: Dict[str, Any] = {"seeds": seeds, "steps": sorted({by_seed[s].get("step") for s in seeds} - {None})}
    for key, _, _ in METRICS:
      row[key] = dict(mean_std([by_seed[s].get(key) for s in seeds]), values=[by_seed[s].get(key) for s in seeds])
    if name != reference and ref:
      row["diff"] = {k: paired_difference({s: by_seed[s].get(k) for s in seeds},
                                          {s: r.get(k) for s, r in ref.items()}) for k in DIFF_METRICS}
    out[name] = row
  return out


def _pct(x: Optional[float]) -> str:
  return "-" if x is None else f"{100.0 * x:.1f}"


def _cell(stat: Optional[Dict[str, Any]], percent: bool) -> str:
  if not stat or stat.get("mean") is None:
    return "-"
  if percent:
    return f"{_pct(stat['mean'])} ± {_pct(stat['std'])}"
  return f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _diff_cell(diff: Optional[Dict[str, Any]]) -> str:
  if not diff or diff.get("mean") is None:
    return "-"
  if diff.get("low") is None:
    return f"{100 * diff['mean']:+.1f} (n=1)"
  mark = " **" if diff["resolved"] else ""
  return f"{100 * diff['mean']:+.1f} [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]{mark}"


def format_table(summary: Dict[str, Dict[str, Any]], order: Sequence[str], reference: str) -> str:
  """Markdown: per row mean ± sample std (%, loss raw) and the paired Δ to `reference` with its 95% interval
  (percentage points; ** = resolved, the interval excludes 0)."""
  cols = [t for _, t, _ in METRICS] + [f"Δ{k} vs {reference}" for k in ("mIoU", "head", "common", "tail")]
  lines = ["| run | seeds | " + " | ".join(cols) + " | steps |", "|---|---|" + "---|" * (len(cols) + 1)]
  for name in order:
    row = summary.get(name)
    if row is None:
      continue
    cells = [_cell(row.get(k), pct) for k, _, pct in METRICS]
    cells += [_diff_cell((row.get("diff") or {}).get(k)) for k in DIFF_METRICS]
    steps = ",".join(str(s) for s in row["steps"]) or "0"
    lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + f" | {steps} |")
  return "\n".join(lines) + "\n"


def write_report(workdir: str, runs: Sequence[Run], seeds: Sequence[int], reference: str,
                 settings: Mapping[str, Any], plots: bool = True) -> str:
  """Writes DIR/sweep.json and DIR/sweep.md (one table per group, then all runs) and figures; returns the md."""
  records = seed_records(workdir, runs, seeds)
  summary = summarize(records, reference)
  groups: Dict[str, List[str]] = {}
  for r in runs:
    for g in r.groups:
      groups.setdefault(g, []).append(r.name)
  order = [reference, RANDOM_INIT] + [r.name for r in runs if r.name != reference]
  md = ["# Sweep results\n", f"Settings: `{dict(settings)}`\n",
        "mean ± sample std over seeds (mIoU and head/common/tail in %); Δ = paired difference to "
        f"`{reference}` over the seeds both have, mean [95% t-interval] in points; ** = resolved (excludes 0).\n"]
  for g, names in groups.items():
    if [n for n in names if n != reference]:  # a group holding only the reference compares nothing
      md.append(f"## {g}\n\n" + format_table(summary, names, reference))
  md.append("## all runs\n\n" + format_table(summary, order, reference))
  text = "\n".join(md)
  fileio.write_json(os.path.join(workdir, "sweep.json"),
                    {"settings": dict(settings), "runs": [dataclasses.asdict(r) for r in runs],
                     "per_seed": records, "summary": summary}, indent=1, default=str)
  fileio.write_text(os.path.join(workdir, "sweep.md"), text)
  if plots:
    try:
      _plots(workdir, runs, seeds, records)
    except Exception as e:  # pylint: disable=broad-except  (a figure must never lose the table)
      print(f"[sweep] plots failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
  return text


def _plots(workdir: str, runs: Sequence[Run], seeds: Sequence[int], records) -> List[str]:
  from dos_jax.eval import plots  # pylint: disable=g-import-not-at-top
  fig_dir = os.path.join(workdir, "figures")
  out = []
  alpha_rows = [dict(alpha=float(r.overrides["zipf_alpha"]), **rec)
                for r in runs if "alpha" in r.groups and "zipf_alpha" in r.overrides
                for rec in records.get(r.name, {}).values()]
  if alpha_rows:
    out.append(plots.plot_alpha_vs_miou(alpha_rows, os.path.join(fig_dir, "alpha_vs_miou.png")))
  curves = {r.name: os.path.join(run_dir(workdir, r.name, min(seeds)), "metrics.jsonl") for r in runs}
  curves = {k: v for k, v in curves.items() if os.path.exists(v)}
  if curves:
    out.append(plots.plot_loss_curves(curves, os.path.join(fig_dir, "loss_curves.png")))
  return out
