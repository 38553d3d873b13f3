r"""Scaling of the encoder step (forward + backward) with the number of points: time and peak memory, log-log PNG.

  python -m benchmarks.scaling [--points 2048,4096,8192,16384] [--variant tiny] [--out benchmarks/scaling.json] \
      [--png benchmarks/scaling.png]

Small N (< ~8k) are dominated by per-op overheads and cache effects on CPU; the default range starts at 4096.
Measured in one run with `benchmarks/encoder.py`'s functions (same synthetic heightfield sets, same jitted
`value_and_grad` of the encoder): per point count N, the step time (min of `--repeats`) and the compiled peak
memory (XLA memory analysis: arguments + outputs + temporaries, the live-buffer bound of the step). Fitted
exponents k_time, k_memory, k_flops (compiled cost analysis, load-independent) are the least-squares slopes in log-log space; attention runs inside fixed-size patches,
so both should be <= ~1 (linear in N) for a fixed patch size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import encoder as encoder_bench  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax import variants  # noqa: E402


def slope(xs, ys):
  """Least-squares slope of log(ys) vs log(xs); None with fewer than 2 points."""
  if len(xs) < 2:
    return None
  return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def plot(result, path: str) -> None:
  """Log-log plot of step time and peak memory vs points, with the fitted exponents; written atomically."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = result["rows"]
  n = np.array([r["points"] for r in rows], float)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  series = [("step_s", "step time [s]", "k_time"), ("peak_mib", "peak memory [MiB]", "k_memory")]
  for ax, (key, label, k) in zip(axes, series):
    y = np.array([r.get(key, np.nan) for r in rows], float)
    ax.loglog(n, y, "o-", label=f"measured (k = {result.get(k)})")
    if np.all(np.isfinite(y)) and len(y):
      ax.loglog(n, y[0] * n / n[0], "--", color="gray", label="linear reference")
    ax.set_xlabel("points per set (capacity N)")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f"encoder fwd+bwd, variant {result['variant']}, {result['platform']} ({result['dtype']})",
               fontsize=10)
  fig.tight_layout()
  with fileio.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)


def run(points, variant="tiny", dtype="float32", batch=1, fill=0.9, repeats=3):
  import jax  # pylint: disable=g-import-not-at-top
  spec = variants.decode_variant(variant)
  from dos_jax.models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
  model = ModelSpec(variant=variant, dtype=dtype, drop_path=0.0, mlp_ratio=4.0, attention="xla")
  args = types.SimpleNamespace(batch=batch, fill=fill, repeats=repeats)
  rows = []
  for n in points:
    rows.append(encoder_bench.bench_one(int(n), args, model, spec))
    print(json.dumps(rows[-1]), flush=True)
  result = dict(benchmark="encoder fwd+bwd scaling", variant=variant, dtype=dtype, batch=batch, fill=fill,
                patch_size=spec["patch_size"], platform=jax.devices()[0].platform, rows=rows,
                k_time=slope([r["points"] for r in rows], [r["step_s"] for r in rows]),
                k_memory=slope([r["points"] for r in rows], [r["peak_mib"] for r in rows if "peak_mib" in r])
                if all("peak_mib" in r for r in rows) else None,
                # FLOPs from the compiled cost analysis do not depend on the machine's load: the clean check of
                # the algorithm's growth, next to the (noisier) measured time.
                k_flops=slope([r["points"] for r in rows], [r["flops"] for r in rows])
                if all(np.isfinite(r.get("flops", np.nan)) for r in rows) else None)
  result["linear_or_better"] = bool(result["k_time"] is not None and result["k_time"] <= 1.15)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--points", default="4096,8192,16384,32768")
  parser.add_argument("--variant", default="tiny")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "scaling.json"))
  parser.add_argument("--png", default=os.path.join(ROOT, "benchmarks", "scaling.png"))
  args = parser.parse_args(argv)
  result = run([int(p) for p in args.points.split(",") if p], args.variant, args.dtype, repeats=args.repeats)
  if args.png:
    plot(result, args.png)
    result["png"] = os.path.relpath(args.png, ROOT)
  fileio.write_json(args.out, result, indent=1)
  os.chmod(args.out, 0o644)
  print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
  return result


if __name__ == "__main__":
  main()
