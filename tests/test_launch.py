"""The command-line entry points: clear errors from `launch.train` (`launch.sweep` is in tests/test_sweep.py).

These subprocesses fail before anything compiles, so they take a few seconds each. The training runs of
`launch.train` (SIGTERM / SIGKILL / resume) are in tests/train/test_loop.py.
"""

import os
import subprocess
import sys

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
