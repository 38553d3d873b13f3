"""The command-line entry points: clear errors from `launch.train` (`launch.sweep` is in tests/test_sweep.py).

These subprocesses fail before anything compiles, so they take a few seconds each. The training runs of
`launch.train` (SIGTERM / SIGKILL / resume) are in tests/train/test_loop.py.
"""

import os
import subprocess
import sys

import pytest
from absl import flags

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _run(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.system
def test_train_rejects_an_unknown_override_in_one_line(tmp_path):
  proc = _run("launch.train", "--config=configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path}",
              "--config.zipf_alpah=1.6")
  assert proc.returncode == 2
  assert "ConfigError: unknown config key(s) on the command line: --config.zipf_alpah" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.system
def test_train_rejects_an_impossible_value_before_compiling(tmp_path):
  proc = _run("launch.train", "--config=configs/synthetic_tiny.py:smoke", f"--workdir={tmp_path / 'run'}",
              "--config.mask_ratio=1.0", "--config.num_devices=1")
  assert proc.returncode == 2
  assert "ConfigError: config.mask_ratio=1.0: expected a finite number in [0.0, 1.0)" in proc.stderr
  assert not (tmp_path / "run").exists()  # refused before touching the workdir


@pytest.mark.system
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


def _check(argv):
  """launch.cli.check_flags on a fresh flag set like launch.train's (--config file flag, --workdir)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from launch import cli  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
  cli.check_flags(argv, fv)
  return fv


def test_a_bad_config_path_or_argument_is_one_line(monkeypatch):
  """A config file that does not exist, a config-argument typo, a bad value, an unknown key or flag: one line
  (launch.cli; `parse_flags` prints it and exits 2) instead of absl's and ml_collections' tracebacks."""
  from launch import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  cases = [(["p", "--config=configs/nope.py", "--workdir=/tmp/x"],
            "ConfigError: --config configs/nope.py: cannot load the config file: no such file"),
           (["p", "--config", "configs/nope.py:smoke", "--config.total_steps=3"],
            "ConfigError: --config configs/nope.py:smoke: cannot load the config file: no such file"),
           (["p", "--config=configs/scannet.py:smok"],
            "ConfigError: --config configs/scannet.py:smok: ValueError: unknown config argument 'smok'; accepted: "
            "['det', 'smoke']"),
           (["p", "--config=configs/scannet.py", "--config.zipf_alpah=1"],
            "ConfigError: unknown config key(s) on the command line: --config.zipf_alpah."),
           (["p", "--config=configs/scannet.py", "--config.zipf_alpha=abc"],
            "flag --config.zipf_alpha=abc: could not convert string to float: 'abc'"),
           (["p", "--config=configs/scannet.py", "--wrokdir=/tmp/x"], "Unknown command line flag 'wrokdir'")]
  for argv, start in cases:
    with pytest.raises(cli.CommandLineError) as e:
      _check(argv)
    assert str(e.value).startswith(start) and "\n" not in str(e.value), (argv, str(e.value))
  assert _check(["p", "--config=configs/scannet.py:smoke", "--config.total_steps=3"]).config.total_steps == 3
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(["p", "--config=configs/nope.py"], flags.FlagValues())
  assert e.value.code == 2


@pytest.mark.system
def test_probe_and_train_print_one_line_for_a_missing_config_file(tmp_path):
  for module in ("launch.train", "launch.probe"):
    proc = _run(module, "--config=configs/scannet.py:smok", f"--workdir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "ConfigError: --config configs/scannet.py:smok: ValueError: unknown config argument 'smok'; accepted: "
        "['det', 'smoke']"]


def test_a_run_ends_with_a_readable_line():
  """Not a dict of float32s: how the run ended, the last logged loss and prototype usage, where things are."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax.train import loop  # pylint: disable=g-import-not-at-top
  from launch import train  # pylint: disable=g-import-not-at-top
  config = synthetic_tiny.get_config()
  metrics = {"loss": np.float32(0.81234), "effective_prototypes": np.float32(41.6), "lr": np.float32(1e-4)}
  done = loop.TrainResult(state=None, metrics=metrics, step=300, preempted=False, seconds=192.4)
  assert train.result_line(done, config, "/tmp/w") == (
      "done: 300 steps in 3 min 12 s; loss 0.812; effective prototypes 42 of 256; checkpoints in /tmp/w/checkpoints; "
      "curves: tensorboard --logdir /tmp/w")
  stopped = loop.TrainResult(state=None, metrics={}, step=40, preempted=True, seconds=9.0)
  assert train.result_line(stopped, config, "/tmp/w").startswith(
      "stopped at step 40 of 300 with a checkpoint (rerun the same command to resume) in 9 s; checkpoints in")
