"""The sweep as data: the ablation configs' plans, one run's commands, and the paired-difference table.

No training here (the runs themselves are the experiment): `launch.sweep --mode commands` is run as a subprocess,
and the result files are written by hand as `launch.probe` and the training loop write them.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from configs import ablation_tiny
from configs import scannet_tiny
from dos_jax.errors import ConfigError
from dos_jax.eval import sweep

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def test_the_ablation_plan_is_the_papers_chain_alpha_cross_view_and_mask_ratio():
  runs = sweep.parse_plan(ablation_tiny.get_sweep())
  by = {r.name: r for r in runs}
  dos = by["dos"].overrides
  assert dos == {"supervision": "observable", "normalization": "softmap", "zipf_alpha": 1.3, "cross_view": True,
                 "mask_ratio": 0.7}
  assert runs[0].name == "dos" and runs[0].random_init

  def changes(name):
    return {k: v for k, v in by[name].overrides.items() if dos[k] != v}

  chain = [r.name for r in sweep.select(runs, ["chain"])]
  assert chain == ["dos", "masked_clustering", "jitter_clustering", "observable_clustering", "softmap_alpha0"]
  assert changes("masked_clustering") == {"supervision": "masked_tokens", "normalization": "clustering"}
  assert changes("jitter_clustering") == {"supervision": "token_jitter", "normalization": "clustering"}
  assert changes("observable_clustering") == {"normalization": "clustering"}
  assert changes("softmap_alpha0") == {"zipf_alpha": 0.0}
  alphas = sorted(by[r.name].overrides["zipf_alpha"] for r in sweep.select(runs, ["alpha"]))
  assert alphas == [0.0, 0.6, 1.3, 1.6, 2.0]
  assert changes("no_cross_view") == {"cross_view": False} and changes("mask0.6") == {"mask_ratio": 0.6}
  assert scannet_tiny.get_sweep() == ablation_tiny.get_sweep()  # same plan on the real scans
  with pytest.raises(ConfigError, match="not in the plan"):
    sweep.select(runs, ["alphas"])


def test_bad_plans_are_refused_with_the_entry_named():
  with pytest.raises(ConfigError, match=r"get_sweep\(\)\[1\]"):
    sweep.parse_plan([{"name": "a", "overrides": {}}, {"name": "a", "overrides": {}}])
  with pytest.raises(ConfigError, match="'name'"):
    sweep.parse_plan([{"zipf_alpha": 1.3}])
  with pytest.raises(ConfigError, match="unknown fields"):
    sweep.parse_plan([{"name": "a", "overrides": {}, "seeds": 3}])


def test_a_config_argument_typo_stops_the_sweep_in_one_line(tmp_path, capsys):
  """`configs/ablation_tiny.py:bogus` is refused before any run is started or any command printed."""
  from launch import sweep as sweep_launch  # pylint: disable=g-import-not-at-top
  config = os.path.join(ROOT, "configs", "ablation_tiny.py") + ":bogus"
  assert sweep_launch.main([f"--config={config}", f"--workdir={tmp_path}", "--mode=commands"]) == 2
  out = capsys.readouterr()
  assert out.out == "" and out.err.strip() == (f"ConfigError: --config={config}: unknown config argument 'bogus'; "
                                               "accepted: ['kind', 'recipe', 'smoke', 'steps']")


@pytest.mark.system
def test_commands_mode_prints_train_random_init_probe_with_the_same_overrides(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "launch.sweep", "--config=configs/ablation_tiny.py",
                         f"--workdir={tmp_path}", "--mode=commands", "--seeds=0,4", "--runs=alpha2",
                         "--config.total_steps=50"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  # The reference (dos) always runs, first: it is what the differences are paired against.
  assert len(lines) == 4 and f"--workdir={tmp_path}/dos/seed0" in lines[0] and "/alpha2/seed4" in lines[3]
  dos_cmds = lines[0].split(" && ")
  assert [c.split()[2] for c in dos_cmds] == ["launch.train", "launch.probe", "launch.probe"]
  assert "--random-init" in dos_cmds[1]
  alpha = lines[3].split(" && ")
  assert len(alpha) == 2 and "--config.zipf_alpha=2.0" in alpha[0] and "--config.seed=4" in alpha[0]
  shared = [a for a in alpha[0].split() if a.startswith("--config")]
  assert shared[-1] == "--config.total_steps=50"  # the sweep-wide override comes after the run's own
  assert shared == [a for a in alpha[1].split() if a.startswith("--config")]


def test_paired_difference_matches_a_hand_computed_t_interval():
  # d = (0.02, 0.05, 0.02): mean 0.03, sd = sqrt(((-.01)^2 + .02^2 + (-.01)^2) / 2) = sqrt(3e-4),
  # t_{0.975, 2} = 4.302653 (tables), half width = 4.302653 * sqrt(3e-4) / sqrt(3) = 0.0430265.
  d = sweep.paired_difference({0: 0.52, 1: 0.45, 2: 0.62}, {0: 0.50, 1: 0.40, 2: 0.60, 3: 0.9})
  assert d["n"] == 3 and d["mean"] == pytest.approx(0.03)
  assert d["high"] - d["mean"] == pytest.approx(4.302653 * math.sqrt(3e-4) / math.sqrt(3), rel=1e-5)
  assert not d["resolved"]  # the interval [-0.013, 0.073] contains 0
  big = sweep.paired_difference({0: 0.6, 1: 0.61, 2: 0.62}, {0: 0.5, 1: 0.5, 2: 0.5})
  assert big["resolved"] and big["low"] > 0
  assert sweep.paired_difference({0: 0.6}, {0: 0.5})["low"] is None


def _write(root, name, seed, miou, tail, loss, rnd=None):
  d = os.path.join(root, name, f"seed{seed}")
  os.makedirs(d)
  with open(os.path.join(d, "probe.json"), "w") as f:
    json.dump({"miou": miou, "head": 0.5, "common": 0.2, "tail": tail, "checkpoint_step": 10}, f)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 5, "loss": 9.0}) + "\n" + json.dumps({"step": 10, "loss": loss}) + "\n")
  if rnd is not None:
    with open(os.path.join(d, "probe_random_init.json"), "w") as f:
      json.dump({"miou": rnd, "head": 0.3, "common": 0.1, "tail": 0.0}, f)


def test_report_tables_means_and_paired_differences(tmp_path):
  root = str(tmp_path)
  runs = sweep.select(sweep.parse_plan(ablation_tiny.get_sweep()), ["cross_view"])
  for s, (m, r) in enumerate(((0.30, 0.20), (0.40, 0.22), (0.35, 0.21))):
    _write(root, "dos", s, m, 0.1, 1.0 + s, rnd=r)
  _write(root, "no_cross_view", 0, 0.25, 0.05, 4.0)
  _write(root, "no_cross_view", 2, 0.33, 0.05, 4.0)  # seed 1 missing: paired over seeds 0 and 2
  assert sweep.is_done(root, runs[0], 0) and not sweep.is_done(root, runs[1], 1)
  text = sweep.write_report(root, runs, [0, 1, 2], "dos", {"steps": 10}, plots=False)
  summary = json.load(open(os.path.join(root, "sweep.json")))["summary"]
  assert summary["dos"]["miou"]["mean"] == pytest.approx(0.35)
  assert summary["dos"]["miou"]["std"] == pytest.approx(0.05)  # sample std of 0.30, 0.40, 0.35
  diff = summary["no_cross_view"]["diff"]["miou"]
  assert diff["n"] == 2 and diff["mean"] == pytest.approx(-0.035)  # (-0.05 - 0.02) / 2
  rnd = summary["random_init"]["diff"]["miou"]
  assert rnd["n"] == 3 and rnd["mean"] == pytest.approx(-0.14) and rnd["resolved"]
  row = [l for l in text.splitlines() if l.startswith("| random_init |")][0]
  assert row.startswith("| random_init | 3 | 21.0 ± 1.0 | 30.0 ± 0.0 |") and "-14.0 [" in row and "** |" in row
  assert "## cross_view" in text and os.path.exists(os.path.join(root, "sweep.md"))
  only_ref = sweep.write_report(root, runs[:1], [0, 1, 2], "dos", {}, plots=False)
  assert "## cross_view" not in only_ref and "## all runs" in only_ref
