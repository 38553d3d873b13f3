"""Console hygiene for the command-line tools.

* absl log lines are written through tqdm, so a line logged while a progress bar is on screen appears above the
  bar instead of being spliced into it (`route_absl_through_tqdm`).
* Only this project's INFO lines reach the console (`quiet_libraries`): JAX logs its backend probe at INFO
  ("Unable to initialize backend 'tpu': ... libtpu.so ..." on every machine without a TPU), orbax several INFO
  lines per save and restore; none of it is actionable. Every record from dos_jax/, launch/, configs/ and
  benchmarks/ passes, and so do the libraries' WARNINGs and errors. DOS_LIBRARY_LOGS=1 shows everything (e.g.
  when reporting a JAX or orbax problem).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

import tqdm
from absl import logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OURS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("dos_jax", "launch", "configs", "benchmarks"))


class _TqdmStream:
  """A file-like stream for absl's handler: each complete line goes out through `tqdm.write` (which clears and
  redraws the active bars); partial writes are buffered until their newline."""

  def __init__(self, stream=None):
    self._stream = stream or sys.stderr
    self._pending = ""

  def write(self, text: str) -> int:
    self._pending += text
    *lines, self._pending = self._pending.split("\n")
    for line in lines:
      tqdm.tqdm.write(line, file=self._stream)
    return len(text)

  def flush(self) -> None:
    self._stream.flush()

  def isatty(self) -> bool:
    return self._stream.isatty()

  def close(self) -> None:  # absl closes its stream at exit; the real one is sys.stderr, which stays open
    self.flush()


def route_absl_through_tqdm() -> None:
  """Points absl's console handler at a tqdm-aware stream (call once, before app.run)."""
  logging.get_absl_handler().python_handler.stream = _TqdmStream(sys.stderr)


class OnlyOurInfo(std_logging.Filter):
  """Passes WARNING and above from anyone, INFO and below only from this project's files."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or os.path.abspath(record.pathname).startswith(_OURS)


def library_logs_requested() -> bool:
  return os.environ.get("DOS_LIBRARY_LOGS", "").strip().lower() in ("1", "true", "yes")


def quiet_libraries() -> None:
  """Installs `OnlyOurInfo` on absl's handler (where JAX's and orbax's Python loggers end up), unless
  DOS_LIBRARY_LOGS=1 asks for everything."""
  if library_logs_requested():
    return
  handler = logging.get_absl_handler()
  if not any(isinstance(f, OnlyOurInfo) for f in handler.filters):
    handler.addFilter(OnlyOurInfo())
