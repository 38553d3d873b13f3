"""The training loop end to end on `configs/synthetic_tiny.py:smoke` (real data pipeline, model and step).

One config (`_config()`) serves every run here, so the step compiles once per process (the persistent cache set up
in conftest.py serves the subprocesses). What is asserted:
  * resume: N steps, stop (checkpoint), resume, N more == 2N straight (params, teacher, optimizer state bitwise);
  * metrics.jsonl: one object per logged step with step and loss, TensorBoard events beside it;
  * preemption and crashes: a `python -m launch.train` subprocess SIGKILLed mid-run, restarted and SIGTERMed
    (exit 0 with a checkpoint of the step it reached), restarted again, finishes with the same final parameters as
    the uninterrupted run; no checkpoint directory is ever unreadable; every step is logged exactly once;
  * non-finite policy: a poisoned batch is skipped and counted under 'skip', and stops the run naming the step
    under 'stop'.
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax import checkpoint
from dos_jax.batching import pipeline
from dos_jax.train import loop
from dos_jax.train import writers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOTAL = 8
# Command-line overrides equal to `_config()` (the subprocess runs must match the in-process reference).
OVERRIDES = (f"--config.total_steps={TOTAL}", "--config.num_devices=1", "--config.log_every=1",
             "--config.checkpoint_every=1", "--config.data.num_workers=0")


def _config(**overrides):
  c = synthetic_tiny.get_config("smoke")
  c.total_steps = TOTAL
  c.num_devices = 1  # the 8 host devices of conftest would need batch_size 8
  c.log_every = 1
  c.checkpoint_every = 1
  c.data.num_workers = 0
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


def _assert_states_equal(a, b):
  for name in ("step", "params", "teacher_params", "opt_state", "rng", "nonfinite_count"):
    xs, ys = jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))
    assert len(xs) == len(ys), name
    for x, y in zip(xs, ys):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The uninterrupted reference run (TOTAL steps)."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  return workdir, loop.train_and_evaluate(_config(), workdir)


def test_straight_run_writes_metrics_checkpoints_and_config(straight):
  workdir, result = straight
  assert result.step == TOTAL and not result.preempted and int(result.state.step) == TOTAL
  rows = writers.read_metrics(workdir)
  assert [r["step"] for r in rows] == list(range(1, TOTAL + 1))
  assert all(np.isfinite(r["loss"]) and r["steps_per_sec"] > 0 and r["points_per_sec"] > 0 for r in rows)
  # A run whose steps were all skipped would make the resume comparisons below vacuous.
  assert int(result.state.nonfinite_count) == 0 and rows[-1]["nonfinite_count"] == 0
  assert rows[-1]["loss"] == pytest.approx(result.metrics["loss"])
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))
  assert os.path.exists(os.path.join(workdir, checkpoint.CONFIG_FILE))
  ckpt = checkpoint.Checkpointer(workdir, keep=_config().keep_checkpoints)
  assert ckpt.latest_step() == TOTAL and len(ckpt.all_steps()) == _config().keep_checkpoints
  ckpt.close()


def test_resume_equals_straight_run(straight, tmp_path):
  _, reference = straight
  workdir = str(tmp_path)
  first = loop.train_and_evaluate(_config(), workdir, stop_at=TOTAL // 2)
  assert first.preempted and first.step == TOTAL // 2
  second = loop.train_and_evaluate(_config(), workdir)
  assert second.step == TOTAL and not second.preempted
  _assert_states_equal(second.state, reference.state)
  assert [r["step"] for r in writers.read_metrics(workdir)] == list(range(1, TOTAL + 1))
  # Resuming a finished run does nothing and returns the final state.
  again = loop.train_and_evaluate(_config(), workdir)
  assert again.step == TOTAL
  _assert_states_equal(again.state, reference.state)


def _poll(proc, ready, what, timeout=240.0):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if ready():
      return
    if proc.poll() is not None:
      raise AssertionError(f"training exited early with {proc.returncode}: {proc.stderr.read()[-3000:]}")
    time.sleep(0.01)
  raise AssertionError(f"no {what} within {timeout} s")


def _checkpoint_names(workdir):
  ckpt_dir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  return os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []


def _wait_for_checkpoint(workdir, proc, min_step):
  """Until a finalized checkpoint of step >= min_step exists."""
  _poll(proc, lambda: any(n.isdigit() and int(n) >= min_step for n in _checkpoint_names(workdir)),
        f"checkpoint >= {min_step}")


def _wait_for_save_in_flight(workdir, proc):
  """Until a finalized checkpoint exists and the next one is being written (an orbax temporary directory)."""
  def ready():
    names = _checkpoint_names(workdir)
    return any(n.isdigit() for n in names) and any("tmp" in n for n in names)
  _poll(proc, ready, "checkpoint save in flight")


def _launch(workdir):
  return subprocess.Popen([sys.executable, "-m", "launch.train", "--config=configs/synthetic_tiny.py:smoke",
                           f"--workdir={workdir}", *OVERRIDES], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _assert_checkpoints_readable(workdir, abstract):
  ckpt = checkpoint.Checkpointer(workdir, keep=_config().keep_checkpoints)
  steps = ckpt.all_steps()
  for step in steps:
    assert int(ckpt.restore(abstract, step).step) == step
  ckpt.close()
  return steps


@pytest.mark.system
def test_sigkill_and_sigterm_then_resume_matches_straight_run(straight, tmp_path):
  _, reference = straight
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), reference.state)
  workdir = str(tmp_path / "run")

  # 1. Crash without notice (SIGKILL) while a checkpoint is being written (a save starts at every step).
  proc = _launch(workdir)
  _wait_for_save_in_flight(workdir, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  killed_at = _assert_checkpoints_readable(workdir, abstract)
  assert killed_at and max(killed_at) < TOTAL

  # 2. Preemption notice (SIGTERM): checkpoint of the step reached, exit code 0.
  proc = _launch(workdir)
  _wait_for_checkpoint(workdir, proc, max(killed_at) + 1)  # this process is in its step loop
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
  steps = _assert_checkpoints_readable(workdir, abstract)
  last_logged = writers.read_metrics(workdir)[-1]["step"]
  assert max(steps) == last_logged and max(killed_at) < last_logged < TOTAL

  # 3. Restart: finishes the run; same final state as the uninterrupted run, every step logged exactly once.
  proc = _launch(workdir)
  assert proc.wait(timeout=240) == 0, proc.stderr.read()[-3000:]
  ckpt = checkpoint.Checkpointer(workdir)
  _assert_states_equal(ckpt.restore(abstract), reference.state)
  ckpt.close()
  assert [r["step"] for r in writers.read_metrics(workdir)] == list(range(1, TOTAL + 1))


def _poison_step(monkeypatch, bad_step):
  """Makes the batch of `bad_step` carry NaN features (the real step must detect the non-finite loss)."""
  original = pipeline.TrainIterator.batch_at

  def batch_at(self, step):
    batch = original(self, step)
    if step == bad_step:
      teacher = batch.teacher.replace(feat=np.full_like(batch.teacher.feat, np.nan))
      batch = batch.replace(teacher=teacher)
    return batch

  monkeypatch.setattr(pipeline.TrainIterator, "batch_at", batch_at)


@pytest.mark.system
def test_nonfinite_skip_counts_and_continues(straight, tmp_path, monkeypatch):
  _poison_step(monkeypatch, bad_step=2)
  result = loop.train_and_evaluate(_config(), str(tmp_path), stop_at=4)
  assert int(result.state.nonfinite_count) == 1
  rows = writers.read_metrics(str(tmp_path))
  assert [r["nonfinite_count"] for r in rows] == [0, 0, 1, 1]
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.state.params))


@pytest.mark.system
def test_nonfinite_stop_names_the_step(tmp_path, monkeypatch):
  _poison_step(monkeypatch, bad_step=2)
  with pytest.raises(loop.NonFiniteError, match=r"non-finite loss or gradient at step 2 .*nonfinite='stop'"):
    loop.train_and_evaluate(_config(nonfinite="stop"), str(tmp_path), stop_at=4)


def test_jsonl_writer_truncates_on_resume_and_keeps_lines_valid(tmp_path):
  w = writers.JsonlWriter(str(tmp_path))
  for step in (1, 2, 3, 4):
    w.write_scalars(step, {"loss": np.float32(1.0 / step), "nan_metric": float("nan")})
  w.close()
  with open(os.path.join(tmp_path, writers.METRICS_FILE), "a") as f:
    f.write('{"step": 5, "lo')  # a line torn by a kill
  rows = writers.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0]["nan_metric"] == "nan"
  assert rows[1]["loss"] == pytest.approx(0.5)
  w = writers.MetricWriter(str(tmp_path), tensorboard=False, start_step=2)
  w.write_scalars(3, {"loss": 7.0})
  w.close()
  assert [(r["step"], r["loss"]) for r in writers.read_metrics(str(tmp_path))] == [(1, 1.0), (2, 0.5), (3, 7.0)]


def test_interval_averages_finite_values_only():
  interval = loop._Interval()  # pylint: disable=protected-access
  for loss in (1.0, float("nan"), 3.0):
    interval.add({"loss": np.float32(loss), "lr": np.float32(0.5), "nonfinite": np.float32(np.isnan(loss))}, 10)
  out = interval.flush(nonfinite_count=1)
  assert out["loss"] == 2.0 and out["lr"] == 0.5 and out["nonfinite_count"] == 1 and "nonfinite" not in out
  assert out["points_per_sec"] == pytest.approx(10 * out["steps_per_sec"])
  assert out["interval_seconds"] * out["steps_per_sec"] == pytest.approx(3)  # the wall time launch.summary sums
  interval.add({"loss": np.float32(np.nan), "lr": np.float32(0.25), "nonfinite": np.float32(1)}, 10)
  out = interval.flush(nonfinite_count=2)  # a fresh interval: only the last step
  assert np.isnan(out["loss"]) and out["lr"] == 0.25


def _truncate_checkpoint(workdir, step):
  """A full disk or a lost node: every array data file of checkpoint `step` cut to half its length."""
  step_dir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step))
  data = [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names if os.path.basename(d) == "d"]
  assert data, step_dir
  for f in data:
    os.truncate(f, os.path.getsize(f) // 2)


@pytest.mark.system
def test_damaged_newest_checkpoint_resume_equals_straight_run(straight, tmp_path, caplog):
  straight_dir, reference = straight
  workdir = str(tmp_path)
  loop.train_and_evaluate(_config(), workdir, stop_at=TOTAL // 2)
  _truncate_checkpoint(workdir, TOTAL // 2)
  result = loop.train_and_evaluate(_config(), workdir)
  assert result.step == TOTAL
  _assert_states_equal(result.state, reference.state)
  # Resumed from the step before the damaged one: the re-run steps log the uninterrupted run's losses.
  assert ([(r["step"], r["loss"]) for r in writers.read_metrics(workdir)]
          == [(r["step"], r["loss"]) for r in writers.read_metrics(straight_dir)])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(m.startswith(f"checkpoint step {TOTAL // 2} ") and "cannot be restored" in m for m in warnings)
  assert os.path.isdir(os.path.join(workdir, checkpoint.DAMAGED_DIR, str(TOTAL // 2)))


@pytest.mark.system
def test_no_intact_checkpoint_exits_2_with_one_line(straight, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  loop.train_and_evaluate(_config(), workdir, stop_at=2)
  steps = sorted(int(n) for n in _checkpoint_names(workdir) if n.isdigit())
  for step in steps:
    _truncate_checkpoint(workdir, step)
  proc = _launch(workdir)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 2, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert lines[-1].startswith(f"NoRestorableCheckpointError: no checkpoint in {workdir}/checkpoints can be restored")
  # One warning per damaged step and the error line: no tracebacks, no asyncio/orbax thread noise.
  assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr[-3000:]
  assert len(lines) <= len(steps) + 3, stderr[-3000:]
  assert sorted(int(n) for n in _checkpoint_names(workdir) if n.isdigit()) == steps  # nothing moved


@pytest.mark.system
def test_ctrl_c_stops_with_a_checkpoint_and_the_bar_starts_after_the_compile(tmp_path, monkeypatch, caplog, capsys):
  """A first SIGINT during step 3 ends the run after it with a checkpoint of step 3 (exit 0 in launch.train) and
  one line at once; the console says that step 1 compiles, the progress bar starts after it (so its rate and
  ETA are the compiled step's), and no metrics line is logged every log_every steps."""
  import logging  # pylint: disable=g-import-not-at-top
  original = checkpoint.Checkpointer.maybe_save
  handler_after = []

  def maybe_save(self, step, state):
    out = original(self, step, state)
    if step == 3:
      os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal
      handler_after.append(signal.getsignal(signal.SIGINT))
    return out

  monkeypatch.setattr(checkpoint.Checkpointer, "maybe_save", maybe_save)
  before = signal.getsignal(signal.SIGINT)
  with caplog.at_level(logging.INFO, logger="absl"):  # (absl's verbosity otherwise depends on earlier tests)
    result = loop.train_and_evaluate(_config(), str(tmp_path))
  assert result.preempted and result.step == 3 and result.seconds > 0
  assert handler_after == [signal.SIG_DFL] and signal.getsignal(signal.SIGINT) is before
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 3
  ckpt.close()
  assert [r["step"] for r in writers.read_metrics(str(tmp_path))] == [1, 2, 3]
  messages = [r.getMessage() for r in caplog.records]
  assert sum("Ctrl-C: stopping after the current step" in m for m in messages) == 1
  assert any(m.startswith("step 1 compiles the training step") for m in messages)
  assert not any(m.startswith("step 1: ") or "loss=" in m for m in messages)  # metrics are not log lines
  bar = capsys.readouterr().err
  assert "1/8" in bar and "0/8" not in bar and "loss=" in bar  # starts after step 1; metrics in its postfix


def test_the_in_training_evaluation_is_one_short_console_line():
  scores = {"eval/linear_probe/miou": 0.2133, "eval/linear_probe/head": 0.5, "eval/linear_probe/common": 0.125,
            "eval/linear_probe/tail": float("nan"), "eval/linear_probe/effective_prototypes": 4.1,
            "eval/linear_probe/seconds": 9.0, "eval/collapse/effective_prototypes": 12.25}
  assert loop.eval_summary(scores) == ("collapse effective prototypes 12.2; "
                                       "linear_probe mIoU 21.3 (head 50.0, common 12.5)")
