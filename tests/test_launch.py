"""The command-line entry points: clear errors from `launch.train`, and `launch.sweep`'s modes and results table.

These subprocesses fail before anything compiles, so they take a few seconds each. The training runs of
`launch.train` (SIGTERM / SIGKILL / resume) are in tests/train/test_loop.py.
"""

import json
import os
import subprocess
import sys

from launch import sweep

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _run(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_train_rejects_an_unknown_override_in_one_line(tmp_path):
  proc = _run("launch.train", "--config=configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path}",
              "--config.zipf_alpah=1.6")
  assert proc.returncode == 2
  assert "ConfigError: unknown config key(s) on the command line: --config.zipf_alpah" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_train_rejects_an_impossible_value_before_compiling(tmp_path):
  proc = _run("launch.train", "--config=configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path / 'run'}",
              "--config.mask_ratio=1.0", "--config.num_devices=1")
  assert proc.returncode == 2
  assert "ConfigError: config.mask_ratio=1.0: expected a finite number in [0.0, 1.0)" in proc.stderr
  assert not (tmp_path / "run").exists()  # refused before touching the workdir


def test_train_rejects_a_workdir_with_a_missing_parent(tmp_path):
  proc = _run("launch.train", "--config=configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path / 'a' / 'b'}",
              "--config.num_devices=1")
  assert proc.returncode == 2 and "parent directory" in proc.stderr and "does not exist" in proc.stderr


def test_sweep_commands_mode_prints_one_train_command_per_alpha(tmp_path):
  proc = _run("launch.sweep", "--config=configs/sweep_zipf_alpha.py", f"--workdir={tmp_path}", "--mode=commands",
              "--", "--config.total_steps=50")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 5
  for alpha, line in zip(("0.0", "0.6", "1.3", "1.6", "2.0"), lines):
    assert line.startswith("python -m launch.train --config=configs/sweep_zipf_alpha.py ")
    assert f"--workdir={tmp_path}/zipf_alpha={alpha}" in line
    assert f"--config.zipf_alpha={alpha}" in line and line.endswith("--config.total_steps=50")


def test_sweep_collects_a_results_table(tmp_path):
  runs = sweep.load_sweep(os.path.join(ROOT, "configs", "sweep_zipf_alpha.py"))
  # Two finished runs (one with a probe result), the others never started.
  for overrides, loss, eff in ((runs[0], 5.0, 40.0), (runs[2], 4.5, 21.5)):
    run_dir = tmp_path / sweep.run_name(overrides)
    run_dir.mkdir()
    with open(run_dir / "metrics.jsonl", "w") as f:
      f.write(json.dumps({"step": 10, "loss": loss + 1, "effective_prototypes": eff + 3}) + "\n")
      f.write(json.dumps({"step": 20, "loss": loss, "effective_prototypes": eff}) + "\n")
  (tmp_path / sweep.run_name(runs[2]) / "probe.json").write_text(json.dumps({"miou": 0.42}))
  rows = sweep.collect(str(tmp_path), runs)
  table = sweep.write_results(str(tmp_path), rows)
  assert [r["loss"] for r in rows] == [5.0, None, 4.5, None, None]
  assert rows[2]["effective_prototypes"] == 21.5 and rows[2]["probe_miou"] == 0.42 and rows[2]["step"] == 20
  assert "| zipf_alpha=1.3 | logged | 20 | 4.5 | 21.5 | 0.42 |" in table
  assert "| zipf_alpha=0.6 | missing | - | - | - | - |" in table
  with open(tmp_path / "results.json") as f:
    assert json.load(f) == rows
  assert (tmp_path / "results.md").read_text().endswith(table)
