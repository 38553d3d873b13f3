"""One JAX job of 2 `launch.train` processes on localhost (gloo, 4 CPU devices each) equals 1 process x 8 devices.

What a multi-host user relies on, run for real (two OS processes, `jax.distributed`, gloo collectives):
  1. SIGTERM to the 2-process job: every process stops at the same step S, one checkpoint of S, exit 0; process 0
     alone writes metrics.jsonl (each step once) and TensorBoard events (one file); process 1 writes nothing.
  2. The uninterrupted reference (1 process x 8 devices, --stop_at=S+4) has the job's losses for steps 1..S: the
     global batch (scenes and host-side randomness) and the step do not depend on the process count.
  3. The 2-process checkpoint resumes on 1 process (steps S+1, S+2) and the reference's 1-process checkpoint of
     S+2 resumes on 2 processes (steps S+3, S+4), each with the reference's uninterrupted losses.

Tolerance (the reasoning of tests/train/test_sharding.py): the runs evaluate the same float32 step with the
reductions in another order (8 devices of one process vs gloo all-reduces across two), so every loss is a sum of
N = batch * views * student capacity = 8 * 2 * 512 terms evaluated in a different order: relative error
<= N * eps (float32 eps 2^-23) = 9.8e-4. Restoring a checkpoint is exact, so resumed losses obey the same bound.
A wrong data slice (the old per-host scene draws: 2.65 vs 2.89 at step 1) or a missing all-reduce is far outside.

Cost: 4 launches (6 processes) of the smoke config; the compiles of steps 3 and 4 hit the persistent cache of the
runs before them.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from dos_jax.train import writers

pytestmark = pytest.mark.system

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = float(np.finfo(np.float32).eps)
BATCH, VIEWS, STUDENT_CAP = 8, 2, 512  # smoke config: data.student_capacity 512
LOSS_RTOL = BATCH * VIEWS * STUDENT_CAP * EPS
TOTAL = 1000  # never reached: every run ends by SIGTERM or --stop_at; the schedules span it in all runs alike
ARGS = ("--config=configs/synthetic_tiny.py:smoke", f"--config.total_steps={TOTAL}", f"--config.batch_size={BATCH}",
        "--config.log_every=1", "--config.checkpoint_every=1", "--config.keep_checkpoints=10",
        "--config.data.num_workers=0")
TIMEOUT_S = 900  # per launch; generous for a loaded machine (a healthy launch takes well under a minute)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, process_id=None, port=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("DOS_MULTIHOST", None)
  if process_id is not None:
    env.update(DOS_MULTIHOST="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(process_id), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  return env


def _start(workdir, processes: int, *extra):
  """Starts the job: 1 process x 8 devices, or 2 processes x 4 devices (one JAX job on a free localhost port)."""
  cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *ARGS, *extra]
  if processes == 1:
    envs = [_env(8)]
  else:
    port = _free_port()
    envs = [_env(4, i, port) for i in range(2)]
  procs = []
  launch = len(os.listdir(os.path.dirname(workdir)))  # numbers the log files of successive launches
  for i, env in enumerate(envs):
    # stderr to a file, not a pipe: a full pipe (step logs, progress bar) would block a process mid-run.
    log = open(f"{workdir}.launch{launch}.p{i}.log", "w+")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log
    procs.append(proc)
  return procs


def _stderr(proc) -> str:
  proc.log.seek(0)
  return proc.log.read()


def _finish(procs):
  """Waits for every process; asserts exit 0 (stderr tails in the message); returns their stderr."""
  try:
    for p in procs:
      p.wait(timeout=TIMEOUT_S)
  finally:
    _kill(procs)
  errs = [_stderr(p) for p in procs]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, f"exit {p.returncode}:\n{err[-3000:]}"
  return errs


def _kill(procs):
  """SIGKILLs what is still running (a failed assertion must not leave a job behind)."""
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()


def _losses(workdir):
  """{step: loss} of the workdir's metrics.jsonl ({} before its first line)."""
  if not os.path.exists(os.path.join(workdir, writers.METRICS_FILE)):
    return {}
  return {r["step"]: r["loss"] for r in writers.read_metrics(workdir)}


def _checkpoints(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def _assert_losses_match(got, ref, steps):
  assert set(steps) <= set(got) and set(steps) <= set(ref), (sorted(got), sorted(ref), steps)
  np.testing.assert_allclose([got[s] for s in steps], [ref[s] for s in steps], rtol=LOSS_RTOL, atol=0,
                             err_msg=f"steps {list(steps)}")


def test_two_processes_equal_one_and_resume_across_process_counts(tmp_path):
  # 1. The 2-process job, SIGTERMed (as a scheduler does: every process) once it has logged step 2.
  job = str(tmp_path / "job")
  procs = _start(job, 2)
  deadline = time.time() + TIMEOUT_S
  try:
    while max([0, *_losses(job)]) < 2:
      assert all(p.poll() is None for p in procs), [_stderr(p)[-3000:] for p in procs]
      assert time.time() < deadline, "the 2-process job did not reach step 2"
      time.sleep(0.2)
    for p in procs:
      p.send_signal(signal.SIGTERM)
    errs = _finish(procs)
  finally:
    _kill(procs)
  stopped = _checkpoints(job)[-1]
  assert 2 <= stopped < TOTAL
  # Every process reports the same stop step (their save was one collective orbax checkpoint of that step).
  for err in errs:
    assert f"preemption notice: stopping at step {stopped}" in err, err[-3000:]
  job_losses = _losses(job)
  assert sorted(job_losses) == list(range(1, stopped + 1))  # each step logged once, by process 0 only
  events = [n for n in os.listdir(job) if n.startswith("events.out.tfevents")]
  assert len(events) == 1, events
  assert not [n for n in os.listdir(job) if n.endswith(".jsonl") and n != writers.METRICS_FILE]

  # 2. The uninterrupted 1-process x 8-device reference, to S + 4: same losses on the common steps.
  ref = str(tmp_path / "ref")
  _finish(_start(ref, 1, f"--stop_at={stopped + 4}"))
  ref_losses = _losses(ref)
  assert sorted(ref_losses) == list(range(1, stopped + 5))
  _assert_losses_match(job_losses, ref_losses, range(1, stopped + 1))
  assert len(set(np.round(list(ref_losses.values()), 4))) > 1  # it trains: the comparison is not of constants

  # 3a. The 2-process checkpoint resumed on 1 process.
  _finish(_start(job, 1, f"--stop_at={stopped + 2}"))
  _assert_losses_match(_losses(job), ref_losses, range(stopped + 1, stopped + 3))

  # 3b. A 1-process checkpoint (the reference's step S+2, alone in a fresh workdir) resumed on 2 processes.
  half = str(tmp_path / "half")
  os.makedirs(os.path.join(half, "checkpoints"))
  shutil.copy(os.path.join(ref, "config.json"), half)
  shutil.copytree(os.path.join(ref, "checkpoints", str(stopped + 2)),
                  os.path.join(half, "checkpoints", str(stopped + 2)))
  _finish(_start(half, 2, f"--stop_at={stopped + 4}"))
  resumed = _losses(half)
  assert sorted(resumed) == [stopped + 3, stopped + 4]
  _assert_losses_match(resumed, ref_losses, range(stopped + 3, stopped + 5))
  assert _checkpoints(half)[-1] == stopped + 4
