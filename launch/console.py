"""Console hygiene for the command-line tools: absl log lines are written through tqdm, so a line logged while a
progress bar is on screen appears above the bar instead of being spliced into it."""

from __future__ import annotations

import sys

import tqdm
from absl import logging


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
