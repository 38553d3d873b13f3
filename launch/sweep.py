r"""Run a sweep: every named run of a config's `get_sweep()`, per seed: `launch.train`, then `launch.probe`.

  python -m launch.sweep --config configs/ablation_tiny.py --workdir DIR --seeds 0,1,2            # the whole plan
  python -m launch.sweep --config configs/ablation_tiny.py --workdir DIR --groups chain,alpha --seeds 0,1,2
  python -m launch.sweep --config configs/ablation_tiny.py --workdir DIR --runs dos,alpha2 --config.total_steps=300
  python -m launch.sweep --config configs/sweep_zipf_alpha.py:base=scannet --workdir DIR --mode commands
  python -m launch.sweep --config configs/ablation_tiny.py --workdir DIR --mode collect           # table only

The plan is data in the config file (`get_sweep()`, see `dos_jax.eval.sweep`); this file only runs it. Run `name`
of seed `s` lives in DIR/<name>/seed<s>/. A run/seed whose probe results exist is skipped, so an interrupted sweep
resumes where it stopped (and `launch.train` itself resumes from its last checkpoint). `--config.key=value`
arguments apply to every run (after the run's own overrides). Seeds of one run go one after another, so later
seeds reuse the compiled step from JAX's persistent cache (JAX_COMPILATION_CACHE_DIR). `local` (default) runs
everything here, one command at a time; `commands` prints one shell line per run/seed for a scheduler; `local`
and `collect` write DIR/sweep.md and DIR/sweep.json (mean ± std per run; paired difference to the reference run,
default the plan's first run with a random-init baseline, with its 95% interval) and DIR/figures/*.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from dos_jax.errors import ConfigError
from dos_jax.eval import sweep


def load_plan(config_spec: str) -> List[sweep.Run]:
  """The validated `get_sweep()` plan of the config file of `path.py[:arg]`."""
  path = config_spec.split(":", 1)[0]
  if not os.path.isfile(path):
    raise ConfigError(f"--config={config_spec}: no such file {path}")
  spec = importlib.util.spec_from_file_location("_dos_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"--config={config_spec}: {path} has no get_sweep() (the plan of named runs)")
  if ":" in config_spec:  # a config-argument typo stops here, not in every run's launch.train
    try:
      module.get_config(config_spec.split(":", 1)[1])
    except (TypeError, ValueError) as e:
      raise ConfigError(f"--config={config_spec}: {e}") from None
  return sweep.parse_plan(list(module.get_sweep()), where=f"{path}: get_sweep()")


def _run_commands(cmds: List[List[str]], log_path: str) -> int:
  """Runs one run/seed's commands in order, output appended to `log_path`; the first failure's exit code."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a", encoding="utf-8") as log:
    for argv in cmds:
      print(f"[sweep] {time.strftime('%H:%M:%S')} {shlex.join(argv[2:])}", flush=True)
      log.write(f"\n$ {shlex.join(argv)}\n")
      log.flush()
      rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
      if rc != 0:
        return rc
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=True, help="config file with get_config() and get_sweep() (path.py[:arg])")
  p.add_argument("--workdir", required=True, help="sweep folder (runs in DIR/<run>/seed<s>/)")
  p.add_argument("--seeds", default="0", help="comma-separated seeds (>= 3 for an interval worth reading)")
  p.add_argument("--groups", default="", help="comma-separated plan groups to run (default: all runs)")
  p.add_argument("--runs", default="", help="comma-separated run names to run (added to --groups)")
  p.add_argument("--mode", choices=("local", "commands", "collect"), default="local")
  p.add_argument("--reference", default="", help="run the differences are paired against")
  p.add_argument("--probe-args", default="", help="extra launch.probe flags, space-separated")
  p.add_argument("--noplots", action="store_true", help="no figures")
  args, extra = p.parse_known_args(argv)
  extra = [a for a in extra if a != "--"]
  try:
    bad = [a for a in extra if not a.startswith("--config.")]
    if bad:
      raise ConfigError(f"unexpected arguments {bad}: only --config.key=value overrides may be added")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    plan = load_plan(args.config)
    runs = sweep.select(plan, [g for g in args.groups.split(",") if g], [r for r in args.runs.split(",") if r])
    reference = args.reference or next((r.name for r in plan if r.random_init), plan[0].name)
    if reference not in {r.name for r in plan}:
      raise ConfigError(f"--reference={reference}: not a run of the plan")
    if reference not in {r.name for r in runs}:  # the differences need it: always run it
      runs.insert(0, next(r for r in plan if r.name == reference))
  except (ConfigError, ValueError) as e:
    print(f"ConfigError: {e}", file=sys.stderr)
    return 2
  workdir = os.path.abspath(args.workdir)
  probe_args = args.probe_args.split()
  if args.mode == "commands":
    for run in runs:
      for seed in seeds:
        print(" && ".join(shlex.join(["python"] + c[1:]) for c in sweep.commands(args.config, workdir, run, seed,
                                                                                  extra, probe_args)))
    return 0
  os.makedirs(workdir, exist_ok=True)
  settings = {"config": args.config, "seeds": seeds, "overrides": extra, "probe_args": probe_args,
              "reference": reference}
  failed = []
  if args.mode == "local":
    for run in runs:
      for seed in seeds:
        if sweep.is_done(workdir, run, seed):
          print(f"[sweep] {run.name}/seed{seed}: done earlier", flush=True)
          continue
        start = time.time()
        rc = _run_commands(sweep.commands(args.config, workdir, run, seed, extra, probe_args),
                           os.path.join(sweep.run_dir(workdir, run.name, seed), "sweep.log"))
        status = "done" if rc == 0 else f"FAILED (exit {rc}; see its sweep.log)"
        print(f"[sweep] {run.name}/seed{seed}: {status} in {time.time() - start:.0f} s", flush=True)
        if rc:
          failed.append(f"{run.name}/seed{seed}")
        sweep.write_report(workdir, runs, seeds, reference, settings, plots=False)
  print(sweep.write_report(workdir, runs, seeds, reference, settings, plots=not args.noplots))
  print(f"[sweep] tables: {os.path.join(workdir, 'sweep.md')} and sweep.json; figures: "
        f"{os.path.join(workdir, 'figures')}", flush=True)
  if failed:
    print(f"[sweep] failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
