"""The run summary the quickstart ends with: DOS vs random-init rows from the probe files, steps, time, paths."""

import json

from dos_jax.eval import report


def test_summary_table_and_paths(tmp_path):
  (tmp_path / "probe.json").write_text(json.dumps({"miou": 0.242, "head": 0.521, "common": 0.184, "tail": 0.078,
                                                   "checkpoint_step": 300, "seconds": 40.2}))
  (tmp_path / "probe_random_init.json").write_text(json.dumps({"miou": 0.105, "head": 0.355, "common": 0.032,
                                                               "tail": 0.0, "seconds": 30.0}))
  (tmp_path / "probe_topdown.png").write_bytes(b"png")
  (tmp_path / "metrics.jsonl").write_text("{}\n")
  (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
  text = report.run_summary(str(tmp_path), train_seconds=100)
  lines = text.splitlines()
  assert lines[2] == "| DOS (pretrained) | 24.2 | 52.1 | 18.4 | 7.8 | 300 | 140 |"  # 100 s train + 40.2 s probe
  assert lines[3] == "| random init | 10.5 | 35.5 | 3.2 | 0.0 | 0 | 30 |"
  assert f"{tmp_path}/probe.json" in text and f"{tmp_path}/probe_topdown.png" in text
  assert f"tensorboard --logdir {tmp_path}" in text
  empty = report.run_summary(str(tmp_path / "nothing"))
  assert "(no probe result yet)" in empty and "TensorBoard" not in empty
