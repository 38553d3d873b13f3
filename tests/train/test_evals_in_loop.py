"""Evaluation inside training (config.evals): due steps, metrics lines, and the same numbers as launch.probe."""

import json
import os

import pytest

from configs import synthetic_tiny
from dos_jax import checkpoint
from dos_jax import schema
from dos_jax.eval import evaluators
from dos_jax.eval import probe as probe_lib
from dos_jax.train import loop
from dos_jax.train import writers


def test_evaluators_are_due_every_n_steps_and_at_the_end_and_off_in_ci_configs():
  e = evaluators.Evaluator("linear_probe", 50)
  assert [s for s in range(0, 131) if e.due(s, 130)] == [50, 100, 130]
  assert not evaluators.Evaluator("collapse", 0).due(10, 10)
  assert evaluators.from_config(schema.validate(synthetic_tiny.get_config("smoke"))) == []
  quick = evaluators.from_config(schema.validate(synthetic_tiny.get_config()))
  assert quick == [evaluators.Evaluator("linear_probe", 50)]


@pytest.mark.system
def test_in_training_probe_is_launch_probes_result_on_that_checkpoint(tmp_path):
  c = synthetic_tiny.get_config("smoke")
  c.total_steps, c.log_every, c.checkpoint_every, c.num_devices = 4, 3, 2, 1
  c.data.num_workers = 0
  c.evals.linear_probe.update(every=2, steps=5, train_scenes=2, eval_scenes=1)
  c.evals.collapse.update(every=4, eval_scenes=1)
  workdir = str(tmp_path)
  loop.train_and_evaluate(c, workdir)
  rows = writers.read_metrics(workdir)
  # One line per logged step: the log steps (3, and the last) and the steps an evaluator was due at (2, 4).
  assert [r["step"] for r in rows] == [2, 3, 4]
  assert all("loss" in r for r in rows)
  assert "eval/linear_probe/miou" in rows[0] and "eval/collapse/effective_prototypes" not in rows[0]
  assert "eval/linear_probe/miou" not in rows[1]
  last = rows[2]
  assert 0.0 <= last["eval/linear_probe/miou"] <= 1.0 and last["eval/collapse/effective_prototypes"] > 0
  # The in-training probe at step 4 is launch.probe's code on the student of step 4: probing the final
  # checkpoint with the same settings gives the same numbers.
  with open(os.path.join(workdir, "evals", "linear_probe_0000004.json")) as f:
    saved = json.load(f)
  assert saved["miou"] == pytest.approx(last["eval/linear_probe/miou"], abs=0)
  again = probe_lib.run_probe(schema.validate(c), workdir, steps=5, max_train_scenes=2, max_eval_scenes=1,
                              plots=False, out_name="probe_check.json")
  assert again["checkpoint_step"] == 4
  assert again["miou"] == pytest.approx(saved["miou"], abs=1e-6)
  assert again["collapse"]["effective_prototypes"] == pytest.approx(
      last["eval/linear_probe/effective_prototypes"], rel=1e-5)
  assert os.path.getsize(os.path.join(workdir, evaluators.CURVE_FILE)) > 0


def test_evaluator_settings_may_change_on_resume():
  # They read the state and never shape it: a run resumes with evaluation switched on, off or made more frequent.
  a = schema.validate(synthetic_tiny.get_config("smoke"))
  b = schema.validate(synthetic_tiny.get_config("smoke"))
  b.evals.linear_probe.every, b.evals.collapse.every, b.evals.linear_probe.steps = 10, 5, 7
  assert checkpoint.config_fingerprint(a) == checkpoint.config_fingerprint(b)
  b.mask_ratio_start = 0.5     # a recipe key does shape the run
  assert checkpoint.config_fingerprint(a) != checkpoint.config_fingerprint(b)
