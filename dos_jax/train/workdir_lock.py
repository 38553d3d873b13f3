"""One writer per workdir: a lock file naming its holder, kept fresh by a heartbeat.

A resubmitted job whose previous incarnation still runs would otherwise train twice into one workdir, both writing
checkpoints and metrics. `train_and_evaluate` holds `WorkdirLock(workdir)` for the whole run (process 0 only in a
multi-host job: one lock per job). Readers (the probe, `--mode collect`) never take it.

DIR/lock.json holds {"host", "pid", "since", "token", "pid_start"}; its mtime is the heartbeat (touched every
`heartbeat_s` by a daemon thread). A second run finds it and either
  * stops with `WorkdirBusyError` naming the holder (host, pid, since when) if the holder is alive, or
  * takes it over with one warning if the holder is dead: same host -> the pid no longer exists (or is another
    process that reuses the number: its start time differs); another host -> the heartbeat is older than
    `stale_s` (the pid of another machine cannot be checked).
Creation is `O_CREAT | O_EXCL` (atomic on local and NFS filesystems); a take-over first renames the dead holder's
file aside (only one contender's rename can succeed) and then creates a fresh one the same way.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

from absl import logging

LOCK_FILE = "lock.json"


class WorkdirBusyError(RuntimeError):
  """The workdir is held by another live run; the message names the holder and the lock file."""


def _pid_start(pid: int) -> Optional[str]:
  """The kernel's start time of `pid` (field 22 of /proc/PID/stat) where /proc exists, else None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _now_iso() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class WorkdirLock:
  """Context manager holding DIR/lock.json for this process (see the module docstring).

  Args:
    workdir: the run directory (must exist).
    heartbeat_s: how often the holder touches the file.
    stale_s: a lock from another host whose heartbeat is older than this is taken over; keep it well above
      `heartbeat_s` (a busy filesystem or a long pause of the holder must not look like death).
  """

  def __init__(self, workdir: str, *, heartbeat_s: float = 10.0, stale_s: float = 120.0):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self.heartbeat_s = float(heartbeat_s)
    self.stale_s = float(stale_s)
    self._info: Optional[Dict[str, Any]] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # ------------------------------------------------------------------------------------------- inspection

  def read(self) -> Optional[Dict[str, Any]]:
    """The current holder's record plus its heartbeat age in seconds ('age_s'), or None when unlocked."""
    try:
      with open(self.path) as f:
        info = json.load(f)
      info["age_s"] = time.time() - os.stat(self.path).st_mtime
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      # Torn by a crash between create and write, or not ours: its age alone decides.
      try:
        return {"host": "?", "pid": -1, "since": "?", "age_s": time.time() - os.stat(self.path).st_mtime}
      except FileNotFoundError:
        return None
    return info

  def holder_is_dead(self, info: Dict[str, Any]) -> Optional[str]:
    """Why the holder described by `info` is dead (a phrase for the warning), or None when it may be alive."""
    if info.get("host") == socket.gethostname() and int(info.get("pid", -1)) > 0:
      pid = int(info["pid"])
      if not _pid_alive(pid):
        return f"process {pid} no longer exists"
      start = _pid_start(pid)
      if info.get("pid_start") and start and start != info["pid_start"]:
        return f"pid {pid} now belongs to another process"
      return None
    if info["age_s"] > self.stale_s:
      return f"its heartbeat is {info['age_s']:.0f} s old (> {self.stale_s:.0f} s)"
    return None

  def describe(self, info: Dict[str, Any]) -> str:
    return (f"host {info.get('host')} pid {info.get('pid')} since {info.get('since')} "
            f"(heartbeat {info['age_s']:.0f} s ago; {self.path})")

  # ------------------------------------------------------------------------------------------- acquire/release

  @staticmethod
  def _token_of(path: str) -> Optional[str]:
    try:
      with open(path) as f:
        return json.load(f).get("token")
    except (OSError, ValueError, AttributeError):
      return None

  def _create(self) -> bool:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now_iso(), "token": uuid.uuid4().hex,
            "pid_start": _pid_start(os.getpid())}
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(info, f)
      f.flush()
      os.fsync(f.fileno())
    self._info = info
    return True

  def acquire(self) -> "WorkdirLock":
    """Takes the lock, taking over a dead holder's with a warning; raises WorkdirBusyError for a live holder."""
    for _ in range(5):  # a holder may release or another contender win between our steps: look again
      if self._create():
        break
      info = self.read()
      if info is None:
        continue
      why = self.holder_is_dead(info)
      if why is None:
        raise WorkdirBusyError(
            f"workdir {os.path.dirname(self.path)} is in use by {self.describe(info)}; a second run would write "
            "the same checkpoints and metrics. Stop that run first (or wait for it), or use another --workdir.")
      aside = f"{self.path}.dead.{os.getpid()}.{uuid.uuid4().hex[:6]}"
      try:
        os.rename(self.path, aside)  # only one contender's rename of that file succeeds
      except FileNotFoundError:
        continue
      if self._token_of(aside) != info.get("token"):
        # Between our read and our rename another contender took over: we moved ITS fresh lock. Put it back.
        try:
          os.link(aside, self.path)
        except FileExistsError:
          pass
        os.unlink(aside)
        continue
      os.unlink(aside)
      logging.warning("workdir lock %s: taking over from %s: %s", self.path, self.describe(info), why)
    else:
      raise WorkdirBusyError(f"could not take the workdir lock {self.path}: other runs keep taking it")
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        os.utime(self.path)
      except OSError as e:  # the workdir vanished or went read-only: the run will fail on its own writes
        logging.warning("workdir lock %s: heartbeat failed (%s)", self.path, e)

  def release(self) -> None:
    """Stops the heartbeat and removes the file if it is still ours (a take-over may have replaced it)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._info is None:
      return
    current = self.read()
    if current is not None and current.get("token") == self._info["token"]:
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass
    self._info = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
