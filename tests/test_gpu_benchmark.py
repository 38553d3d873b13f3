"""benchmarks/gpu.sh: its CPU dry run (same steps and code, tiny sizes) and the summary it writes.

The GPU run happens only on a lent machine, with minutes to spare; the dry run makes sure that those minutes yield
numbers, not a traceback: every step must write its JSON and summary.json must hold the same fields as on a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_summary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIELDS = {"device", "dry_run", "peak_tflops_bf16", "peak_GBps", "encoder_base_bf16", "sinkhorn", "train_step",
          "pointcept_fwd_bwd", "failed"}


@pytest.mark.system
def test_dry_run_writes_every_step_and_the_summary(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "DOS_WHEELS", "INSTALL")}
  # PYTHON: this interpreter, not whatever `python3` PATH finds (a venv's python runs the suite unactivated).
  env.update(DRY_RUN="1", DOS_WHEELS=str(tmp_path / "no_wheels"), PYTHON=sys.executable)
  proc = subprocess.run(["bash", "benchmarks/gpu.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "failed" not in proc.stdout.replace('"failed"', ""), proc.stdout[-3000:]
  assert "install" not in proc.stdout  # nothing fetched from a package index, no wheels to install
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert set(summary) == FIELDS and summary["failed"] == [] and summary["dry_run"] is True
  assert summary["peak_tflops_bf16"] is None  # a CPU has no entry in the peak table
  (row,) = summary["encoder_base_bf16"]
  assert row["points"] == 1024 and row["step_s"] > 0 and row["achieved_tflops"] > 0 and row["mfu"] is None
  (sink,) = summary["sinkhorn"].values()
  assert sink["GBps"] > 0 and sink["speedup_jax_over_torch"] > 0
  ts = summary["train_step"]
  # The torch reference runs the same views as the JAX step's packs, per-view padded.
  assert ts["jax_step_s"] > 0 and ts["torch_step_s"] > 0 and ts["speedup_jax_over_torch"] > 0
  # Same views and weights, so the first losses agree: float32 sums over ~10^3 points and prototypes per Sinkhorn
  # and KL reduction, relative error <= reduction length x eps ~ 10^3 x 1.2e-7.
  with open(tmp_path / "train_step_gpu.json") as f:
    step = json.load(f)
  assert abs(step["jax_first_loss"] - step["torch_first_loss"]) <= 1.2e-4 * abs(step["torch_first_loss"])


def test_summary_fields_on_a_gpu(tmp_path):
  """The same fields from a GPU's step files; MFU and bandwidth fractions use the detected H200's peaks."""
  (tmp_path / "encoder_base_bf16.json").write_text(json.dumps(
      {"device_kind": "NVIDIA H200", "rows": [{"points": 32768, "batch": 2, "step_s": 0.5, "achieved_tflops": 98.9}]}))
  (tmp_path / "sinkhorn_gpu.json").write_text(json.dumps(
      {"device": "NVIDIA H200", "65536x1024": {"sinkhorn": {"GBps": 2400.0}, "speedup_jax_over_torch": 3.0}}))
  summary = gpu_summary.summarize(str(tmp_path), environ={})
  assert set(summary) == FIELDS and summary["dry_run"] is False
  assert summary["failed"] == ["train_step", "pointcept_fwd_bwd"]
  assert summary["encoder_base_bf16"][0]["mfu"] == 98.9 / 989.0
  assert summary["sinkhorn"]["65536x1024"]["fraction_of_peak"] == 0.5
  overridden = gpu_summary.summarize(str(tmp_path), environ={"PEAK_TFLOPS": "100", "PEAK_GBPS": "4800"})
  assert overridden["encoder_base_bf16"][0]["mfu"] == 98.9 / 100.0
