"""The run summary the quickstart ends with: one row per probe file, labelled from the file's content, steps and
times read from the workdir (so a reprint equals the first print), paths; a missing workdir is one error."""

import json

import pytest

from dos_jax.errors import ConfigError
from dos_jax.eval import report
from launch import summary


def _workdir(tmp_path):
  (tmp_path / "probe.json").write_text(json.dumps({"mode": "probe", "encoder": "checkpoint step 300 (student)",
                                                   "miou": 0.242, "head": 0.521, "common": 0.184, "tail": 0.078,
                                                   "checkpoint_step": 300, "seconds": 40.2}))
  (tmp_path / "probe_random_init.json").write_text(json.dumps({"mode": "random_init", "encoder": "random init",
                                                               "miou": 0.105, "head": 0.355, "common": 0.032,
                                                               "tail": 0.0, "seconds": 30.0}))
  (tmp_path / "probe_topdown.png").write_bytes(b"png")
  rows = [{"step": 10, "loss": 5.0, "interval_seconds": 60.5},
          {"step": 20, "loss": 4.0, "interval_seconds": 29.5, "eval/linear_probe/seconds": 10.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
  return tmp_path


def test_summary_table_and_paths(tmp_path):
  text = report.run_summary(str(_workdir(tmp_path)))
  lines = text.splitlines()
  # pretraining time = the loop's logged intervals and in-training evaluations (60.5 + 29.5 + 10 s)
  assert lines[2] == "| DOS (pretrained) | 24.2 | 52.1 | 18.4 | 7.8 | 300 | 100 | 40 |"
  assert lines[3] == "| random init | 10.5 | 35.5 | 3.2 | 0.0 | - | - | 30 |"
  assert len(lines[0].split("|")) == len(lines[2].split("|"))
  assert f"{tmp_path}/probe.json" in text and f"{tmp_path}/probe_topdown.png" in text
  assert f"tensorboard --logdir {tmp_path}" in text
  assert report.run_summary(str(tmp_path)) == text  # a reprint is the same table
  empty = tmp_path / "nothing"
  empty.mkdir()
  text = report.run_summary(str(empty))
  assert "(no probe result yet)" in text and "TensorBoard" not in text


def test_the_supervised_row_is_shown_when_its_file_exists(tmp_path):
  _workdir(tmp_path)
  (tmp_path / "probe_supervised.json").write_text(json.dumps({"mode": "supervised", "miou": 0.5, "head": 0.6,
                                                              "common": 0.4, "tail": 0.3, "seconds": 12.0}))
  lines = report.run_summary(str(tmp_path)).splitlines()
  assert lines[4] == "| supervised | 50.0 | 60.0 | 40.0 | 30.0 | - | - | 12 |"
  assert f"{tmp_path}/probe_supervised.json" in lines[6]


def test_a_random_init_probe_is_never_called_pretrained(tmp_path):
  """A probe.json of a random-init encoder (written by an older probe of a workdir without a checkpoint) is
  labelled from its content."""
  (tmp_path / "probe.json").write_text(json.dumps({"mode": "probe", "encoder": "random init (no checkpoint in "
                                                   "workdir)", "miou": 0.2, "seconds": 5.0}))
  text = report.run_summary(str(tmp_path))
  assert "pretrained" not in text
  assert text.splitlines()[2].startswith("| random init | 20.0 |")


def test_a_missing_workdir_is_one_error_and_exit_2(tmp_path, capsys):
  with pytest.raises(ConfigError, match="no such directory"):
    report.run_summary(str(tmp_path / "typo"))
  assert summary.main(["--workdir", str(tmp_path / "typo")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("ConfigError: --workdir") and "typo" in err and "\n" not in err
  assert summary.main(["--workdir", str(_workdir(tmp_path))]) == 0
