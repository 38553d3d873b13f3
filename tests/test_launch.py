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


def test_train_failures_are_one_line_with_their_exit_code(tmp_path, monkeypatch, capsys):
  """launch.train.main maps each failure of the loop to one stderr line and its exit code (no traceback)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from dos_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  from dos_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from dos_jax.train import loop  # pylint: disable=g-import-not-at-top
  from dos_jax.train import workdir_lock  # pylint: disable=g-import-not-at-top
  from launch import train  # pylint: disable=g-import-not-at-top
  flags.FLAGS(["train", f"--config={ROOT}/configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path}"])
  cases = [(loop.NonFiniteError("non-finite loss or gradient at step 2"), 1, "NonFiniteError: non-finite loss"),
           (checkpoint.NoRestorableCheckpointError("no checkpoint in D can be restored"), 2,
            "NoRestorableCheckpointError: no checkpoint in D"),
           (DataError("scene.npy: label 27 out of range"), 2, "DataError: scene.npy: label 27"),
           (workdir_lock.WorkdirBusyError("workdir D is in use by host h pid 1"), 3, "WorkdirBusyError: workdir D")]
  for error, code, line in cases:
    def fail(*args, error=error, **kwargs):
      raise error
    monkeypatch.setattr(loop, "train_and_evaluate", fail)
    assert train.main(["train"]) == code
    err = capsys.readouterr().err
    assert err.strip().startswith(line) and "\n" not in err.strip(), err
  flags.FLAGS.unparse_flags()
