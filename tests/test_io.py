"""dos_jax.io: atomic writes leave the old file or the new one, never a partial one; JSON lines round-trip."""

import json
import os
import stat

import pytest

from dos_jax import io as fileio
from dos_jax.errors import DataError


def test_write_text_bytes_json_replace_and_permissions(tmp_path):
  path = str(tmp_path / "sub" / "a.json")  # the missing parent is created
  fileio.write_json(path, {"b": 1, "a": [1.5]}, sort_keys=True)
  assert open(path).read() == json.dumps({"a": [1.5], "b": 1}, indent=2, sort_keys=True) + "\n"
  fileio.write_text(path, "new\n")
  assert open(path).read() == "new\n"
  fileio.write_bytes(path, b"\x00\x01")
  assert open(path, "rb").read() == b"\x00\x01"
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  assert os.listdir(tmp_path / "sub") == ["a.json"]  # no temporary file left behind


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / "r.json")
  fileio.write_text(path, "old")
  with pytest.raises(TypeError):
    fileio.write_json(path, {"x": object()})  # not serialisable: fails before anything is renamed
  with pytest.raises(RuntimeError):
    with fileio.atomic_open(path, "w") as f:
      f.write("half")
      raise RuntimeError("killed mid-write")
  assert open(path).read() == "old"
  assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_directory_replaces_whole_folder(tmp_path):
  target = tmp_path / "scene"
  with fileio.atomic_directory(str(target)) as d:
    open(os.path.join(d, "a.npy"), "w").write("1")
    assert not target.exists()  # nothing visible until the block ends
  assert sorted(os.listdir(target)) == ["a.npy"]
  with pytest.raises(RuntimeError):
    with fileio.atomic_directory(str(target)) as d:
      open(os.path.join(d, "b.npy"), "w").write("2")
      raise RuntimeError("failed")
  assert sorted(os.listdir(target)) == ["a.npy"]
  with fileio.atomic_directory(str(target)) as d:
    open(os.path.join(d, "b.npy"), "w").write("2")
  assert sorted(os.listdir(target)) == ["b.npy"]  # replaced, not merged
  assert os.listdir(tmp_path) == ["scene"]


def test_jsonl_append_read_rewrite(tmp_path):
  path = str(tmp_path / "m.jsonl")
  assert fileio.read_jsonl(path) == [] and fileio.last_jsonl_row(path) == {}
  with pytest.raises(DataError, match="no such file"):
    fileio.read_jsonl(path, missing_ok=False)
  with open(path, "a") as f:
    for step in (1, 2):
      fileio.append_jsonl(f, {"step": step, "loss": 1.0 / step})
  assert fileio.read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
  assert fileio.last_jsonl_row(path) == {"step": 2, "loss": 0.5}
  fileio.write_jsonl(path, [{"step": 1}])
  assert fileio.read_jsonl(path) == [{"step": 1}]


def test_jsonl_torn_last_line_skipped_bad_middle_line_raises(tmp_path):
  torn = tmp_path / "torn.jsonl"
  torn.write_text('{"step": 1}\n{"step": 2, "lo')  # a writer killed mid-line
  assert fileio.read_jsonl(str(torn)) == [{"step": 1}]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
  with pytest.raises(DataError, match="bad.jsonl:2"):
    fileio.read_jsonl(str(bad))
  not_obj = tmp_path / "list.jsonl"
  not_obj.write_text("[1, 2]\n")
  with pytest.raises(DataError, match="list.jsonl:1: expected a JSON object"):
    fileio.read_jsonl(str(not_obj))


def test_read_json_errors_name_the_file(tmp_path):
  with pytest.raises(DataError, match="nope.json"):
    fileio.read_json(str(tmp_path / "nope.json"))
  (tmp_path / "x.json").write_text("{")
  with pytest.raises(DataError, match="x.json:1"):
    fileio.read_json(str(tmp_path / "x.json"))
  fileio.write_json(str(tmp_path / "y.json"), [1])
  assert fileio.read_json(str(tmp_path / "y.json")) == [1]
