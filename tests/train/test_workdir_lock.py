"""dos_jax.train.workdir_lock: one live writer per workdir; dead holders (pid gone, stale heartbeat) taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dos_jax.train import loop
from dos_jax.train import workdir_lock

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _plant(workdir, age_s=0.0, **info):
  """Writes a lock file as another run would have, with its heartbeat `age_s` seconds old."""
  record = {"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-01-01T00:00:00Z", "token": "theirs"}
  record.update(info)
  path = os.path.join(workdir, workdir_lock.LOCK_FILE)
  with open(path, "w") as f:
    json.dump(record, f)
  t = time.time() - age_s
  os.utime(path, (t, t))
  return path


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)) as first:
    info = first.read()
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    with pytest.raises(workdir_lock.WorkdirBusyError) as e:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    msg = str(e.value)
    assert f"host {socket.gethostname()} pid {os.getpid()} since {info['since']}" in msg
    assert "lock.json" in msg and "\n" not in msg
  assert not os.path.exists(os.path.join(tmp_path, workdir_lock.LOCK_FILE))  # released
  with workdir_lock.WorkdirLock(str(tmp_path)):  # and free again
    pass


@pytest.mark.system
def test_same_host_dead_pid_is_taken_over_with_a_warning(tmp_path, caplog):
  _plant(str(tmp_path), pid=_dead_pid())
  with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
    assert lock.read()["pid"] == os.getpid()
  assert any("taking over" in r.getMessage() and "no longer exists" in r.getMessage() for r in caplog.records)


def test_same_host_reused_pid_is_taken_over(tmp_path):
  _plant(str(tmp_path), pid=os.getpid(), pid_start="1")  # our pid, but not our start time: a reused number
  if workdir_lock._pid_start(os.getpid()) is None:  # pylint: disable=protected-access
    pytest.skip("no /proc on this OS: a reused pid cannot be told from its holder")
  with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
    assert lock.read()["token"] != "theirs"


def test_other_host_fresh_heartbeat_holds_stale_one_is_taken_over(tmp_path):
  _plant(str(tmp_path), host="node-b", pid=12345, age_s=5)
  with pytest.raises(workdir_lock.WorkdirBusyError, match="host node-b pid 12345"):
    workdir_lock.WorkdirLock(str(tmp_path), stale_s=60).acquire()
  _plant(str(tmp_path), host="node-b", pid=12345, age_s=61)
  with workdir_lock.WorkdirLock(str(tmp_path), stale_s=60) as lock:
    assert lock.read()["host"] == socket.gethostname()


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path), heartbeat_s=0.05) as lock:
    path = lock.path
    t = time.time() - 100
    os.utime(path, (t, t))
    deadline = time.time() + 30
    while lock.read()["age_s"] > 50 and time.time() < deadline:
      time.sleep(0.05)
    assert lock.read()["age_s"] < 50


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  _plant(str(tmp_path), host="node-b", token="new-holder")  # taken over while we looked away
  lock.release()
  assert json.load(open(os.path.join(tmp_path, workdir_lock.LOCK_FILE)))["token"] == "new-holder"


def test_only_process_0_takes_it(tmp_path):
  assert loop.hold_workdir(str(tmp_path), is_chief=False) is None
  assert not os.path.exists(os.path.join(tmp_path, workdir_lock.LOCK_FILE))
  lock = loop.hold_workdir(str(tmp_path), is_chief=True)
  assert lock.read()["pid"] == os.getpid()
  lock.release()


@pytest.mark.system
def test_launch_train_on_a_held_workdir_stops_with_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with workdir_lock.WorkdirLock(str(workdir)) as held:
    proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/synthetic_tiny.py:smoke",
                           f"--workdir={workdir}", "--config.num_devices=1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert held.read()["pid"] == os.getpid()  # untouched by the refused run
  assert proc.returncode == 3, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith("WorkdirBusyError: workdir ") and f"pid {os.getpid()} since" in lines[-1]
  assert "Traceback" not in proc.stderr
  assert "Unable to initialize backend" not in proc.stderr  # JAX's start-up INFO lines stay off the console
  # Stopped before writing anything: no checkpoints, metrics or config of its own.
  assert sorted(os.listdir(workdir)) == []
