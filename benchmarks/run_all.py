r"""Runs every CPU benchmark, writes `benchmarks/results.json` and regenerates the table in `benchmarks/RESULTS.md`.

  python -m benchmarks.run_all            # full sizes (objective 65,536 x 1024, ...): ~8 min on 2 idle cores
  python -m benchmarks.run_all --quick    # smaller sizes, ~3 min: a smoke run of the whole suite
  python -m benchmarks.run_all --only objective,scaling

Each benchmark runs in its own subprocess (its own JAX runtime and peak RSS; one failing benchmark does not stop
the others) with a wall-clock limit; its JSON lands in results.json under its name, with `error` instead when it
failed. Only the block between the `run_all` markers of RESULTS.md is rewritten; the rest of the file (other
sections, notes, GPU numbers) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from dos_jax import io as fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

# name -> (module, full args, quick args); `--out` is appended.
BENCHMARKS = {
    "objective": ("benchmarks.objective", ["--points", "65536", "--prototypes", "1024", "--repeats", "3"],
                  ["--points", "8192", "--prototypes", "256", "--repeats", "2"]),
    "input_pipeline": ("benchmarks.input_pipeline", ["--seconds", "3"], ["--seconds", "1"]),
    "scaling": ("benchmarks.scaling", ["--points", "4096,8192,16384,32768", "--repeats", "3"],
                ["--points", "2048,4096,8192", "--repeats", "2"]),
    "train_step": ("benchmarks.train_step", ["--steps", "5", "--pipeline-seconds", "3"],
                   ["--config-arg", "smoke", "--steps", "2", "--pipeline-seconds", "1"]),
}


def run_one(name: str, quick: bool, timeout_s: float, workdir: str) -> Dict[str, Any]:
  module, full, small = BENCHMARKS[name]
  out = os.path.join(workdir, f"{name}.json")
  shown = "python -m " + " ".join([module] + (small if quick else full))
  cmd = [sys.executable, "-m", module] + (small if quick else full) + ["--out", out]
  if name == "scaling":
    cmd += ["--png", os.path.join(ROOT, "benchmarks", "scaling.png")]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout_s:.0f} s", "command": shown}
  wall = round(time.perf_counter() - start, 1)
  if proc.returncode != 0 or not os.path.exists(out):
    return {"error": f"exit code {proc.returncode}", "stderr_tail": proc.stderr[-2000:], "wall_s": wall,
            "command": shown}
  with open(out) as f:
    result = json.load(f)
  result["wall_s"] = wall
  result["command"] = shown
  return result


def _fmt(x, digits=3) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, float):
    return f"{x:.{digits}g}"
  return str(x)


def table(results: Dict[str, Any]) -> List[str]:
  """Markdown table rows (benchmark | measure | value) from results.json's content."""
  rows = ["| benchmark | measure | value |", "|---|---|---|"]
  add = lambda b, m, v: rows.append(f"| {b} | {m} | {v} |")
  host = results["host"]
  for name in BENCHMARKS:
    r = results["benchmarks"].get(name)
    if r is None:
      continue
    if "error" in r:
      add(name, "error", r["error"])
      continue
    if name == "objective":
      size = f"{r['points']:,} x {r['prototypes']}"
      add(f"objective {size}", "Zipf-Sinkhorn + softmap KL, JAX jit / torch eager [s]",
          f"{_fmt(r['jax_value_s'])} / {_fmt(r['torch_value_s'])} (x{_fmt(r['speedup_value'])})")
      add(f"objective {size}", "value and grad, JAX jit / torch eager [s]",
          f"{_fmt(r['jax_value_and_grad_s'])} / {_fmt(r['torch_value_and_grad_s'])} "
          f"(x{_fmt(r['speedup_value_and_grad'])})")
      add(f"objective {size}", "JAX first call (compile + run) [s]", _fmt(r.get("jax_value_first_call_s")))
      add(f"objective {size}", "meets >= 2x target", r.get("meets_target"))
    elif name == "train_step":
      add("train step synthetic_tiny", "JAX jit / torch eager step [s]",
          f"{_fmt(r['jax_step_s'])} / {_fmt(r.get('torch_step_s'))} (x{_fmt(r.get('speedup_jax_over_torch'))})")
      add("train step synthetic_tiny", "JAX compile [s]", _fmt(r["jax_compile_s"]))
      add("train step synthetic_tiny", "first loss JAX / torch (same weights)",
          f"{_fmt(r['jax_first_loss'], 7)} / {_fmt(r.get('torch_first_loss'), 7)}")
      p = r.get("pipeline")
      if p:
        add("input pipeline vs step", "supply / demand [scenes/s] (2 threads)",
            f"{_fmt(p['scenes_per_s'])} / {_fmt(p['demand_scenes_per_s'])} (x{_fmt(p['supply_over_demand'])})")
    elif name == "input_pipeline":
      for wl, w in r.get("workloads", {}).items():
        if "results" not in w:
          continue
        best = max(w["results"], key=lambda x: x["scenes_per_s"])
        add(f"input pipeline {wl}", f"scenes/s ({best['workers']} {best['backend']})",
            f"{_fmt(best['scenes_per_s'])} ({_fmt(best['points_per_s'])} points/s)")
    elif name == "scaling":
      pts = ", ".join(f"{x['points']}: {_fmt(x['step_s'])} s / {_fmt(x.get('peak_mib'))} MiB" for x in r["rows"])
      add(f"encoder {r['variant']} fwd+bwd scaling", "exponent k of time / peak memory / FLOPs (N^k)",
          f"{_fmt(r['k_time'])} / {_fmt(r['k_memory'])} / {_fmt(r.get('k_flops'))} "
          f"(time linear or better: {r['linear_or_better']})")
      add(f"encoder {r['variant']} fwd+bwd scaling", "N: step / peak memory", pts)
  rows.append("")
  rows.append(f"Host: {host['cpus']} CPUs, load average {host['load_start']} at start and {host['load_end']} at "
              f"end (a shared machine: absolute times are noisy, each ratio is measured within one run), "
              f"{'quick' if results['quick'] else 'full'} sizes, {results['date']}. Scaling plot: "
              f"`benchmarks/scaling.png`.")
  return rows


def update_results_md(path: str, rows: List[str]) -> None:
  block = "\n".join([BEGIN, "## CPU benchmarks (`python -m benchmarks.run_all`)", ""] + rows + [END])
  text = open(path).read() if os.path.exists(path) else "# Benchmark results\n\n"
  if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
  else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
  fileio.write_text(path, text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of the suite)")
  parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {list(BENCHMARKS)}")
  parser.add_argument("--timeout", type=float, default=600.0, help="per-benchmark wall-clock limit [s]")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"))
  parser.add_argument("--results-md", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
  args = parser.parse_args(argv)
  names = [n for n in args.only.split(",") if n]
  for n in names:
    if n not in BENCHMARKS:
      parser.error(f"--only: unknown benchmark {n!r} (expected some of {list(BENCHMARKS)})")
  results = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "load_start": round(os.getloadavg()[0], 2)}, "benchmarks": {}}
  with tempfile.TemporaryDirectory() as workdir:
    for name in names:
      print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
      results["benchmarks"][name] = run_one(name, args.quick, args.timeout, workdir)
      print(f"[run_all] {name}: {results['benchmarks'][name].get('error', 'ok')} "
            f"({results['benchmarks'][name].get('wall_s', '?')} s)", file=sys.stderr, flush=True)
  results["host"]["load_end"] = round(os.getloadavg()[0], 2)
  fileio.write_json(args.out, results, indent=1)
  rows = table(results)
  if args.results_md:
    update_results_md(args.results_md, rows)
  print("\n".join(rows))
  return 0 if not any("error" in r for r in results["benchmarks"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
