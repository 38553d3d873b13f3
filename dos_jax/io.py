"""Small file helpers used everywhere results are written: atomic writes and JSON lines.

Atomic: the bytes go to a temporary file in the destination's folder, are flushed and fsynced, and the file is
renamed over the destination (`os.replace`, atomic on POSIX within one file system). A reader sees the old file or
the new one, never half of one; an exception (or a kill) leaves no partial destination, and the temporary file is
removed on exceptions. Files are made 0644 (mkstemp creates 0600; results and configs are meant to be read by
others). Missing parent folders are created. `atomic_directory` does the same for a folder of files (a scene).

JSON lines: one JSON object per line. `append_jsonl` writes a whole line and fsyncs, so a killed writer loses at
most the line it was writing; `read_jsonl` therefore skips a torn LAST line (one with no newline that does not
parse) and raises DataError naming `file:line` for any other line that is not a JSON object.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, IO, Iterator, List, Mapping, Optional

from dos_jax.errors import DataError


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
  """Context manager yielding a file (mode 'w' text or 'wb' bytes) that replaces `path` when the block ends.

  An exception inside the block leaves `path` untouched and removes the temporary file.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Context manager yielding an empty temporary folder that replaces the folder `path` when the block ends.

  A rename cannot replace a non-empty folder, so an existing `path` is first moved aside (into a hidden sibling)
  and deleted after the new one is in place. An exception inside the block leaves `path` untouched.
  """
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  try:
    yield tmp
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    if os.path.exists(path):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
      os.replace(path, os.path.join(old, "previous"))
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str, data: bytes) -> str:
  """Atomically writes `data` to `path`; returns `path`."""
  with atomic_open(path, "wb") as f:
    f.write(data)
  return path


def write_text(path: str, text: str) -> str:
  """Atomically writes `text` (UTF-8) to `path`; returns `path`."""
  with atomic_open(path, "w") as f:
    f.write(text)
  return path


def write_json(path: str, obj: Any, indent: Optional[int] = 2, sort_keys: bool = False,
               default: Optional[Any] = None) -> str:
  """Atomically writes `obj` as JSON (with a final newline) to `path`; returns `path`.

  `default` is passed to `json.dumps` (e.g. `str` for values JSON cannot hold).
  """
  return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def jsonl_line(row: Mapping[str, Any]) -> str:
  """One JSON-lines record: `row` as compact JSON plus a newline."""
  return json.dumps(dict(row)) + "\n"


def append_jsonl(f: IO, row: Mapping[str, Any]) -> None:
  """Appends `row` as one line to the open text file `f` and fsyncs it (a killed run keeps every line it wrote)."""
  f.write(jsonl_line(row))
  f.flush()
  os.fsync(f.fileno())


def write_jsonl(path: str, rows: List[Mapping[str, Any]]) -> str:
  """Atomically replaces `path` with `rows`, one JSON object per line; returns `path`."""
  return write_text(path, "".join(jsonl_line(r) for r in rows))


def read_jsonl(path: str, missing_ok: bool = True) -> List[Dict[str, Any]]:
  """The JSON objects of a JSON-lines file, in order.

  Args:
    path: the file.
    missing_ok: a missing file reads as [] (a run that has not logged yet); False raises DataError.

  Raises:
    DataError naming `path:line` for a line that is not a JSON object, except a torn last line (no trailing
    newline: a writer killed mid-line), which is skipped.
  """
  if not os.path.exists(path):
    if missing_ok:
      return []
    raise DataError(f"{path}: no such file")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  # After split, a complete file ends with '' (text after the last newline); anything else there is unterminated.
  last = len(lines)
  rows = []
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if i == last:
        continue  # torn last line of a killed writer
      raise DataError(f"{path}:{i}: not a JSON line ({e.msg})") from e
    if not isinstance(row, dict):
      raise DataError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
    rows.append(row)
  return rows


def last_jsonl_row(path: str) -> Dict[str, Any]:
  """The last object of a JSON-lines file, {} when the file is missing or empty."""
  rows = read_jsonl(path)
  return rows[-1] if rows else {}


def read_json(path: str) -> Any:
  """Parses a JSON file; DataError naming the file when it is missing or not JSON."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: not JSON ({e.msg})") from e
