"""benchmarks/gpu.sh's summary: one summary.json from the step files in OUT_DIR (same fields on GPU and CPU).

  python benchmarks/gpu_summary.py OUT_DIR

Fields: device, dry_run, peak_tflops_bf16, peak_GBps (null when the device's peak is unknown, e.g. a CPU dry
run; PEAK_TFLOPS / PEAK_GBPS override), encoder_base_bf16 (rows of points, batch, step_s, achieved_tflops, mfu),
sinkhorn ({NxK: GBps, fraction_of_peak, speedup_jax_over_torch}), train_step (jax_step_s, torch_step_s,
speedup_jax_over_torch, jax_compile_s, torch_device), pointcept_fwd_bwd (rows of model, points, dos_jax_s,
upstream_s, speedup; GPU run only) and failed (the steps whose JSON is missing). The field
names do not change in a dry run (tiny sizes, CPU), so the first real GPU run is read by the same code.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from dos_jax import io as fileio  # noqa: E402

# Dense bf16 TFLOP/s and HBM GB/s of the SXM parts (vendor data sheets).
PEAKS = {"H200": (989.0, 4800.0), "H100": (989.0, 3350.0), "A100": (312.0, 2039.0), "L4": (121.0, 300.0),
         "A10": (125.0, 600.0)}
STEP_FILES = {"encoder_base_bf16": "encoder_base_bf16.json", "sinkhorn": "sinkhorn_gpu.json",
              "train_step": "train_step_gpu.json", "pointcept_fwd_bwd": "pointcept_gpu.json"}
POINTCEPT_KEYS = ("model", "points", "dos_jax_s", "upstream_s", "speedup")
TRAIN_STEP_KEYS = ("jax_step_s", "torch_step_s", "speedup_jax_over_torch", "jax_compile_s", "torch_device")


def _load(out_dir, name):
  path = os.path.join(out_dir, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _ratio(a, b):
  return a / b if a is not None and b else None


def summarize(out_dir: str, environ=os.environ) -> dict:
  enc, sk, ts, pc = (_load(out_dir, STEP_FILES[k])
                     for k in ("encoder_base_bf16", "sinkhorn", "train_step", "pointcept_fwd_bwd"))
  dry_run = environ.get("DRY_RUN", "0") == "1"
  kind = str((enc or {}).get("device_kind") or (sk or {}).get("device") or "")
  peak_t, peak_b = next((v for k, v in PEAKS.items() if k in kind), (None, None))
  peak_t = float(environ["PEAK_TFLOPS"]) if environ.get("PEAK_TFLOPS") else peak_t
  peak_b = float(environ["PEAK_GBPS"]) if environ.get("PEAK_GBPS") else peak_b
  steps = {"encoder_base_bf16": enc, "sinkhorn": sk, "train_step": ts}
  if not dry_run:  # the upstream comparison is not part of the dry run
    steps["pointcept_fwd_bwd"] = pc
  summary = {"device": kind, "dry_run": dry_run, "peak_tflops_bf16": peak_t, "peak_GBps": peak_b,
             "encoder_base_bf16": None, "sinkhorn": None, "train_step": None, "pointcept_fwd_bwd": None,
             "failed": [k for k, v in steps.items() if v is None]}
  if enc:
    summary["encoder_base_bf16"] = [
        dict(points=r["points"], batch=r["batch"], step_s=r["step_s"], achieved_tflops=r.get("achieved_tflops"),
             mfu=_ratio(r.get("achieved_tflops"), peak_t)) for r in enc["rows"]]
  if sk:
    summary["sinkhorn"] = {k: {"GBps": v["sinkhorn"]["GBps"], "fraction_of_peak": _ratio(v["sinkhorn"]["GBps"], peak_b),
                               "speedup_jax_over_torch": v.get("speedup_jax_over_torch")}
                           for k, v in sk.items() if isinstance(v, dict)}
  if ts:
    summary["train_step"] = {k: ts.get(k) for k in TRAIN_STEP_KEYS}
  if pc:
    summary["pointcept_fwd_bwd"] = [{k: r.get(k) for k in POINTCEPT_KEYS} for r in pc["rows"]]
  return summary


def main(argv=None):
  out_dir = (argv or sys.argv[1:])[0]
  summary = summarize(out_dir)
  fileio.write_json(os.path.join(out_dir, "summary.json"), summary, indent=1)
  print(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
