"""launch.ablate: the plan expands to the paper's ablation runs (default shared), and the table writer's numbers.

No training here (the runs themselves are the ablation); the records are written by hand as the probe and the
training loop would write them.
"""

import json
import math
import os

import pytest

from launch import ablate


def test_plan_has_every_ablation_once_with_the_default_shared():
  runs = ablate.plan()
  names = [r.name for r in runs]
  assert sorted(names) == sorted(["default", "masked_tokens", "token_jitter", "clustering", "alpha=0", "alpha=0.6",
                                  "alpha=1.6", "alpha=2"])
  assert names[0] == "default"  # the key comparison (and the random-init baseline) first
  default = runs[0]
  assert default.random_init and set(default.groups) == set(ablate.GROUPS)
  assert default.overrides == {"supervision": "observable", "normalization": "softmap", "zipf_alpha": 1.3}
  by_name = {r.name: r for r in runs}
  # Each ablation changes exactly one switch of the default.
  for name, (key, value) in {"masked_tokens": ("supervision", "masked_tokens"),
                             "token_jitter": ("supervision", "token_jitter"),
                             "clustering": ("normalization", "clustering"),
                             "alpha=0": ("zipf_alpha", 0.0), "alpha=2": ("zipf_alpha", 2.0)}.items():
    diff = {k: v for k, v in by_name[name].overrides.items() if default.overrides[k] != v}
    assert diff == {key: value}, name
  alpha_runs = [r for r in runs if "alpha" in r.groups]
  assert sorted(r.overrides["zipf_alpha"] for r in alpha_runs) == [0.0, 0.6, 1.3, 1.6, 2.0]
  assert [r.name for r in ablate.plan(["baseline"])] == ["default"]
  assert [r.name for r in ablate.plan(["normalization"])] == ["default", "clustering"]
  assert [r.name for r in ablate.plan(["alpha"], alphas=[0, 1.3])] == ["default", "alpha=0"]
  with pytest.raises(ValueError, match="unknown group"):
    ablate.plan(["alphas"])


def test_commands_train_then_random_init_then_probe_with_the_same_overrides(tmp_path):
  run = ablate.plan(["baseline"])[0]
  cmds = ablate.commands("configs/ablation_tiny.py", str(tmp_path), run, seed=1, steps=50)
  assert [c[2] for c in cmds] == ["launch.train", "launch.probe", "launch.probe"]
  assert "--random-init" in cmds[1] and "--random-init" not in cmds[2]
  shared = [a for a in cmds[0] if a.startswith("--config")]
  assert "--config.seed=1" in shared and "--config.total_steps=50" in shared
  for c in cmds[1:]:
    assert shared == [a for a in c if a.startswith("--config")]
  assert f"--workdir={tmp_path}/default/seed1" in cmds[0]


def _write_run(root, name, seed, miou, tail, loss, rnd=None):
  d = os.path.join(root, name, f"seed{seed}")
  os.makedirs(d)
  with open(os.path.join(d, "probe.json"), "w") as f:
    json.dump({"miou": miou, "accuracy": 0.9, "checkpoint_step": 10, "head": 0.5, "common": 0.2, "tail": tail,
               "collapse": {"unclaimed_point_fraction": 0.1, "collapsed_pair_fraction": 0.0}}, f)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 5, "loss": 9.0, "effective_prototypes": 3.0}) + "\n")
    f.write(json.dumps({"step": 10, "loss": loss, "effective_prototypes": 12.0}) + "\n")
  if rnd is not None:
    with open(os.path.join(d, "probe_random_init.json"), "w") as f:
      json.dump({"miou": rnd, "accuracy": 0.8, "head": 0.3, "common": 0.1, "tail": 0.0, "collapse": "unavailable"}, f)


def test_records_summary_and_table(tmp_path):
  root = str(tmp_path)
  runs = ablate.plan(["normalization"])
  _write_run(root, "default", 0, 0.30, 0.10, 1.0, rnd=0.20)
  _write_run(root, "default", 1, 0.40, 0.20, 2.0, rnd=0.22)
  _write_run(root, "clustering", 0, 0.25, 0.05, 4.0)  # seed 1 missing: reported over one seed
  records = ablate.seed_records(root, runs, [0, 1])
  assert set(records) == {"default", "random_init", "clustering"}
  assert records["default"][1]["loss"] == 2.0 and records["default"][1]["effective_prototypes"] == 12.0
  summary = ablate.summarize(records)
  d = summary["default"]
  assert d["seeds"] == [0, 1]
  assert d["miou"]["mean"] == pytest.approx(0.35)
  assert d["miou"]["std"] == pytest.approx(math.sqrt(2 * 0.05 ** 2))  # sample std (ddof=1) of 0.30, 0.40
  assert summary["clustering"]["miou"] == {"mean": 0.25, "std": 0.0, "values": [0.25]}
  table = ablate.format_table(summary, ["default", "random_init", "clustering"])
  lines = table.strip().splitlines()
  assert lines[0].startswith("| run | seeds | mIoU | point acc | head | common | tail | final loss |")
  assert lines[2].startswith("| default | 0,1 | 35.0 ± 7.1 | 90.0 ± 0.0 | 50.0 ± 0.0 | 20.0 ± 0.0 | 15.0 ± 7.1 | "
                             "1.5 ± 0.707 |")
  assert lines[3].startswith("| random_init | 0,1 | 21.0 ± 1.4 | 80.0 ± 0.0 |")
  assert lines[2].rstrip().endswith("| 10 |")  # the probed checkpoint's step
  assert lines[3].rstrip().endswith("| - | - | - | - | 0 (random init) |")  # no training for the baseline
  assert lines[4].startswith("| clustering | 0 | 25.0 ± 0.0 |")
