"""Checkpoints and workdir safety: orbax CheckpointManager, the run's config fingerprint, preemption (SIGTERM).

A bottom-layer module (it imports only `dos_jax.io` and `dos_jax.errors`): the trainer (`dos_jax.train.loop`)
writes the run directory, the probe (`dos_jax.eval.probe`) reads its checkpoints, and both import it from here.

Workdir layout (`python -m launch.train ... --workdir DIR`):
  DIR/config.json       the full config of the run + a fingerprint of the keys that define it (written atomically).
  DIR/checkpoints/<step>/  orbax checkpoints of the whole TrainState (params, teacher, optimizer, rng, step).
  DIR/metrics.jsonl, DIR/events.out.tfevents.*   (see `dos_jax/train/writers.py`).

Resume order (automatic, `train_and_evaluate`): (1) `prepare_workdir` refuses a workdir whose checkpoints belong to
a different config; (2) the latest finalized checkpoint is restored into the abstract state of THIS config; (3) the
data iterator restarts at the restored `state.step` (batches are a pure function of (config, seed, step), so the
step is the whole iterator position); (4) the per-step RNG is folded from the restored state. No checkpoint:
fresh start at step 0. A checkpoint that cannot be restored (truncated or missing files after a full disk or a lost
node, bad metadata) is skipped with one warning and moved to DIR/checkpoints_damaged/, and the newest intact one is
used; when none restores the run stops with one `NoRestorableCheckpointError` line (`Checkpointer.restore_newest_intact`).

Crash safety: orbax writes each checkpoint into a temporary directory and renames it when complete, so a process
killed mid-save (SIGKILL, OOM, preemption without notice) leaves only a temporary directory that `all_steps` never
lists and that the next start deletes (`cleanup_tmp_directories`). SIGTERM (the notice preemptible TPU/GPU
schedulers send) only sets a flag; the loop saves at the end of the current step and exits 0.
"""

from __future__ import annotations

import hashlib
import json
import logging as std_logging
import os
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from absl import logging
import ml_collections
import numpy as np

from dos_jax import io as fileio
from dos_jax.errors import ConfigError, DataError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"  # damaged checkpoints are moved here on resume (see `restore_newest_intact`)
# Keys that may change when a run is resumed: they change how long / how verbosely it runs, not what it trains.
# Everything else (method, model, data, optimizer, seed) is part of the fingerprint.
RESUMABLE_KEYS = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                  "num_devices", "data.num_workers", "data.worker_backend", "data.prefetch", "data.root")
# The probe and the in-training evaluators read checkpoints / the state, they do not shape them.
RESUMABLE_PREFIXES = ("probe.", "evals.")


class NoRestorableCheckpointError(DataError):
  """Every checkpoint of the workdir failed to restore; the message lists each step with its error."""


def _silence_closed_loop_callbacks() -> None:
  """Drops the asyncio noise that a failed orbax restore leaves behind, and nothing else.

  When one array of a restore fails (a truncated file: tensorstore's OUT_OF_RANGE), orbax's asyncio loop ends while
  the other arrays' reads are still in flight. Their leftovers surface at unpredictable times (while the failure
  propagates, at garbage collection, at interpreter exit), each with a traceback: (1) a read's completion callback
  calls `loop.call_soon_threadsafe` on the closed loop, and the "RuntimeError: Event loop is closed" goes to
  `sys.unraisablehook` (about 1,300 lines for one damaged checkpoint); (2) sibling `async_deserialize` tasks and
  the tensorstore futures they awaited are collected unretrieved, and asyncio logs "Task/Future exception was never
  retrieved". The failure itself is reported once by `restore_newest_intact`; the leftovers have nothing left to
  deliver. (1) is dropped by a wrapper of `sys.unraisablehook` (other unraisable errors still reach the previous
  hook), (2) by a filter on the "asyncio" logger that matches only orbax/tensorstore reads. Installed before the
  first restore attempt (measured under load: callbacks fire before an `except` clause would run), once per process.
  """
  previous = sys.unraisablehook
  if getattr(previous, "dos_jax_closed_loop_filter", False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)

  hook.dos_jax_closed_loop_filter = True
  sys.unraisablehook = hook
  asyncio_logger = std_logging.getLogger("asyncio")
  if _drop_unretrieved_deserialize not in asyncio_logger.filters:
    asyncio_logger.addFilter(_drop_unretrieved_deserialize)


def _drop_unretrieved_deserialize(record: std_logging.LogRecord) -> bool:
  """False (drop) for asyncio's "Task/Future exception was never retrieved" about an orbax read: the task is
  `async_deserialize`, or the exception is tensorstore's (its message carries the `tensorstore_spec`)."""
  message = record.getMessage()
  if "exception was never retrieved" not in message.split("\n", 1)[0]:
    return True
  error = record.exc_info[1] if record.exc_info else None
  return not ("async_deserialize" in message or "tensorstore_spec" in f"{message} {error}")


def _one_line(error: BaseException, limit: int = 300) -> str:
  """`Type: first line of the message`, cut to `limit` characters (orbax/tensorstore errors run to pages)."""
  text = str(error).strip().splitlines()
  line = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
  return line if len(line) <= limit else line[:limit - 3] + "..."


# ----------------------------------------------------------------------------------------------- workdir safety


def _flat(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for key in sorted(tree):
    value = tree[key]
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_to_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """A JSON round trip of the config (tuples become lists), so stored and live configs compare equal."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _defining_keys(flat: Dict[str, Any]) -> Dict[str, Any]:
  return {k: v for k, v in flat.items()
          if k not in RESUMABLE_KEYS and not k.startswith(RESUMABLE_PREFIXES)}


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
  """sha256 (16 hex digits) of the keys that define what a run trains (all but `RESUMABLE_KEYS`)."""
  blob = json.dumps(_defining_keys(_flat(config_to_dict(config))), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _has_checkpoints(ckpt_dir: str) -> bool:
  if not os.path.isdir(ckpt_dir):
    return False
  return any(name.isdigit() for name in os.listdir(ckpt_dir))


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, write: bool = True) -> None:
  """Creates/validates the workdir and records the config; raises ConfigError for an unusable workdir.

  Refuses: an empty path, a missing parent directory (a typo should not silently create a tree), a path that is
  a file, a directory that cannot be written, and a directory holding checkpoints of a different config (which
  would mix two runs). Only `RESUMABLE_KEYS` may differ from the stored config.

  Args:
    workdir: the run directory.
    config: the validated config of this run.
    write: write DIR/config.json (False on non-zero hosts of a multi-host job: host 0 writes it).
  """
  if not workdir:
    raise ConfigError("--workdir is empty: pass the directory that holds (or will hold) this run's checkpoints.")
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(workdir):
    if os.path.exists(workdir):
      raise ConfigError(f"--workdir={workdir} exists and is not a directory.")
    if not os.path.isdir(parent):
      raise ConfigError(f"--workdir={workdir}: the parent directory {parent} does not exist; create it first "
                        "(the workdir itself is created for you).")
    try:
      os.makedirs(workdir, exist_ok=True)
    except OSError as e:
      raise ConfigError(f"--workdir={workdir}: cannot create it ({e.strerror}); choose a writable location.") from e
  try:  # os.access lies for root and on some network filesystems: really write a file.
    fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=workdir)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable ({e.strerror}); checkpoints and metrics go there. "
                      "Choose a writable directory.") from e

  config_path = os.path.join(workdir, CONFIG_FILE)
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  current = config_to_dict(config)
  if _has_checkpoints(ckpt_dir):
    if not os.path.exists(config_path):
      raise ConfigError(f"--workdir={workdir} holds checkpoints but no {CONFIG_FILE}, so they cannot be matched to "
                        "this config; use a new --workdir.")
    try:
      with open(config_path) as f:
        stored = json.load(f)
    except (OSError, ValueError) as e:
      raise ConfigError(f"{config_path}: unreadable ({e}); cannot check that the checkpoints in {ckpt_dir} belong "
                        "to this config. Use a new --workdir.") from e
    if stored.get("fingerprint") != config_fingerprint(config):
      old = _defining_keys(_flat(stored.get("config", {})))
      new = _defining_keys(_flat(current))
      diffs = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
               for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")]
      raise ConfigError(
          f"--workdir={workdir} holds checkpoints of a different config (stored in {config_path}); resuming would "
          f"mix two runs. Differences (stored -> now): {'; '.join(diffs) or 'fingerprint only'}. Use a new "
          f"--workdir, or restore those values (only {', '.join(RESUMABLE_KEYS)} may change on resume).")
  if write:
    payload = {"fingerprint": config_fingerprint(config), "config": current}
    fileio.write_json(config_path, payload, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------------------------- preemption


class PreemptionFlag:
  """Catches SIGTERM (and optionally SIGINT, Ctrl-C) as a flag the loop polls once per step.

  The handler only records the signal (and calls `on_signal(signum)`, e.g. to say what happens next): saving
  inside a signal handler could interrupt a half-written batch or a running save. A first SIGINT also puts back
  the operating system's default action for SIGINT, so a second Ctrl-C ends the process at once, even inside a
  compile (without a checkpoint of the current step; a save in flight is only a temporary directory). Use as a
  context manager; the previous handlers come back on exit. Outside the main thread (where Python cannot install
  handlers) it stays a flag that never sets.
  """

  def __init__(self, signals=(signal.SIGTERM,), on_signal: Optional[Callable[[int], None]] = None):
    self._signals = tuple(signals)
    self._on_signal = on_signal
    self._previous = {}
    self._event = threading.Event()
    self.signum: Optional[int] = None

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    self._event.set()
    if self._on_signal is not None:
      self._on_signal(signum)
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.SIG_DFL)  # the next Ctrl-C quits at once

  def __enter__(self) -> "PreemptionFlag":
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def set(self) -> None:
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()


# ----------------------------------------------------------------------------------------------- checkpoints


class Checkpointer:
  """A thin wrapper of `orbax.checkpoint.CheckpointManager` for one TrainState pytree.

  Keeps the last `keep` checkpoints, saves every `every` steps (`maybe_save`) or on demand (`save`), asynchronously
  where orbax supports it (the state's arrays are copied off the device before `save` returns, so the next step
  may donate them), and restores the latest checkpoint into a given abstract state (`jax.eval_shape` of the
  state, with shardings, so every host restores its own shards).
  """

  def __init__(self, workdir: str, *, keep: int = 3, every: int = 0, async_save: bool = True):
    # orbax (and JAX) load here, not at import: the workdir checks above run before JAX starts (launch/train.py).
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self.every = int(every)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def restore_newest_intact(self, abstract_state: Any) -> Tuple[Optional[int], Any]:
    """(step, state) of the newest checkpoint that restores into `abstract_state`; (None, None) without any.

    A checkpoint that cannot be restored (truncated or missing files, bad metadata, a state whose `step` is not
    its directory's) is skipped; once an older one restores, each damaged newer one gets one warning line (its
    step, the error, where it went) and is moved to DIR/checkpoints_damaged/ (kept for inspection, never deleted),
    so that training past that step saves it again. If none restores, nothing is moved and
    `NoRestorableCheckpointError` lists every step with its error (that one line is the whole report).
    """
    failures = []
    _silence_closed_loop_callbacks()
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state = self.restore(abstract_state, step)
        restored_step = int(np.asarray(getattr(state, "step", step)))
        if restored_step != step:
          raise ValueError(f"it holds state.step={restored_step}")
      except Exception as e:  # pylint: disable=broad-except  (any failure means: not restorable)
        failures.append((step, _one_line(e)))
        continue
      if failures:
        self._set_aside(failures, step)
      return step, state
    if failures:
      listed = "; ".join(f"step {s}: {e}" for s, e in failures)
      raise NoRestorableCheckpointError(
          f"no checkpoint in {self.directory} can be restored ({listed}). Nothing was moved or deleted: move the "
          "damaged step directories elsewhere to start from scratch, or use a new --workdir.")
    return None, None

  def _set_aside(self, failures, resumed_from: int) -> None:
    """Process 0 moves the damaged steps aside (one warning each); every process then sees the same steps."""
    import jax  # pylint: disable=g-import-not-at-top  (already loaded by orbax)
    if jax.process_index() == 0:
      for bad, error in failures:
        aside = self._move_aside(bad)
        logging.warning("checkpoint step %d in %s cannot be restored (%s); moved it to %s, resuming from step %d",
                        bad, self.directory, error, aside, resumed_from)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("dos_jax: damaged checkpoints moved aside")
    self._manager.reload()

  def _move_aside(self, step: int) -> str:
    """Renames checkpoint `step` to DIR/checkpoints_damaged/<step>[.N] (a new name if that one is taken)."""
    target_dir = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target, n = os.path.join(target_dir, str(step)), 1
    while os.path.exists(target):
      target, n = os.path.join(target_dir, f"{step}.{n}"), n + 1
    os.rename(os.path.join(self.directory, str(step)), target)
    return target

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    """Restores checkpoint `step` (default: latest) into the structure, dtypes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state: Any) -> bool:
    """Saves `state` as checkpoint `step` now (unless that step is already saved); returns whether it saved."""
    if step in self._manager.all_steps():
      return False
    return bool(self._manager.save(step, args=self._ocp.args.StandardSave(state), force=True))

  def maybe_save(self, step: int, state: Any) -> bool:
    """Saves at every `every`-th step (never when `every` is 0)."""
    if self.every > 0 and step % self.every == 0:
      return self.save(step, state)
    return False

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: whether the coordination service saw a preemption notice (all hosts agree on the step)."""
    import jax  # pylint: disable=g-import-not-at-top  (already loaded by orbax)
    if jax.process_count() == 1:
      return False
    return bool(self._manager.reached_preemption(step))

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
