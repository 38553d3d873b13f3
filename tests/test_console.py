"""launch.console: absl lines go through tqdm.write whole (a partial write waits for its newline)."""

import io

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
