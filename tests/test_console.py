"""launch.console: absl lines go through tqdm.write whole (a partial write waits for its newline); only our INFO lines."""

import io
import logging
import os

import tqdm

from launch import console


def test_lines_go_through_tqdm_write(monkeypatch):
  written = []
  monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, s, file=None: written.append(s)))
  stream = console._TqdmStream(io.StringIO())  # pylint: disable=protected-access
  stream.write("I1201 step 5: loss=")
  assert written == []
  stream.write("0.5\nI1201 step 10\n")
  assert written == ["I1201 step 5: loss=0.5", "I1201 step 10"]


def _record(pathname, level):
  return logging.LogRecord("x", level, pathname, 1, "msg", None, None)


def test_only_our_info_lines_pass(monkeypatch):
  ours = os.path.join(console._ROOT, "dos_jax", "train", "loop.py")  # pylint: disable=protected-access
  jax_file = "/usr/lib/python3/site-packages/jax/_src/xla_bridge.py"
  f = console.OnlyOurInfo()
  assert f.filter(_record(ours, logging.INFO))
  assert not f.filter(_record(jax_file, logging.INFO))
  assert f.filter(_record(jax_file, logging.WARNING))
  monkeypatch.setenv("DOS_LIBRARY_LOGS", "1")
  assert console.library_logs_requested()
