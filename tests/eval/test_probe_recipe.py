"""The linear probe as Sonata runs it: raw concatenation of every stage (checked against the per-stage features
walked up the pooling tree by hand), one linear layer, one-cycle schedule; run_probe's wiring."""

import functools
import json

import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax import schema
from dos_jax import specs
from dos_jax.batching import eval_batch
from dos_jax.batching import spec as spec_lib
from dos_jax.eval import linear_probe
from dos_jax.eval import probe as probe_lib
from dos_jax.models import encoder
from tests.eval.test_linear_probe import _labelled_scenes


@pytest.mark.system
def test_all_stages_features_are_every_stage_carried_down_and_concatenated():
  cfg = schema.validate(synthetic_tiny.get_config("smoke"))
  model_spec, batch_spec = specs.model_spec(cfg), spec_lib.batch_spec(cfg)
  batch, _ = eval_batch.make_labeled_batch(_labelled_scenes(2), batch_spec, capacity="fit")
  params = encoder.init(jax.random.PRNGKey(0), batch.points, model_spec)
  projected, aux = jax.jit(functools.partial(encoder.apply_with_aux, train=False, spec=model_spec))(params,
                                                                                                     batch.points)
  raw = np.asarray(jax.jit(functools.partial(encoder.apply, train=False,
                                             spec=encoder.all_stages_spec(model_spec)))(params, batch.points))
  stages = [np.asarray(aux[f"enc{s}"], np.float32) for s in range(len(batch.points.stages))]
  assert raw.shape[-1] == sum(s.shape[-1] for s in stages) == 112          # tiny: 16 + 32 + 64
  valid = np.asarray(batch.points.valid)
  parents = [np.asarray(p) for p in batch.points.parent]
  for b in range(raw.shape[0]):
    rows = np.flatnonzero(valid[b])
    ancestor, expected = rows, []
    for s, feat in enumerate(stages):
      expected.append(feat[b, ancestor])
      if s < len(parents):
        ancestor = parents[s][b, ancestor]     # the pooled cluster of each point at the next stage
    np.testing.assert_allclose(raw[b, rows], np.concatenate(expected, axis=1), rtol=0, atol=1e-6)
    assert not raw[b, ~valid[b]].any()
  # The projected output (the head's input) is a learned map of it, not the same features.
  assert not np.allclose(np.asarray(projected)[valid], raw[valid], atol=1e-3)


def test_probe_onecycle_schedule_and_plain_linear_layer():
  f = linear_probe.probe_schedule("onecycle", 2e-3, 200)
  np.testing.assert_allclose(float(f(0)), 2e-4, rtol=1e-6)                 # lr / div_factor
  np.testing.assert_allclose(float(f(10)), 2e-3, rtol=1e-6)                # peak after 5% of the steps
  np.testing.assert_allclose(float(f(200)), 2e-7, rtol=1e-4)               # lr / (10 * 1000)
  g = linear_probe.probe_schedule("cosine", 1e-2, 200)
  np.testing.assert_allclose([float(g(0)), float(g(200))], [1e-2, 1e-4], rtol=1e-5)
  with pytest.raises(ValueError, match="schedule"):
    linear_probe.probe_schedule("step", 1e-2, 10)
  x = np.random.default_rng(0).normal(3.0, 5.0, (50, 4)).astype(np.float32)
  plain = linear_probe.init_probe(x, 3, standardize=False)
  np.testing.assert_allclose(np.asarray(linear_probe.logits(plain, x)),
                             x @ np.asarray(plain["w"]) + np.asarray(plain["b"]), rtol=1e-5, atol=1e-5)
  # Both forms separate position-determined classes.
  feats = np.concatenate([s.coord for s in _labelled_scenes(2)])
  labels = np.concatenate([s.segment for s in _labelled_scenes(2)])
  for standardize in (True, False):
    p = linear_probe.fit_linear_probe(feats, labels, 4, steps=200, lr=0.1, schedule="onecycle",
                                      weight_decay=0.02, standardize=standardize, batch_points=None)
    assert (linear_probe.predict(p, feats) == labels).mean() > 0.9


@pytest.mark.system
def test_run_probe_reads_the_stage_concatenation_and_scores_the_head_on_its_own_features(tmp_path):
  cfg = schema.validate(synthetic_tiny.get_config("smoke"))
  out = probe_lib.run_probe(cfg, str(tmp_path), mode="random_init", steps=5, max_train_scenes=2,
                            max_eval_scenes=1, plots=False)
  assert out["probe_features"] == "stages (112 channels)"
  assert out["probe"]["features"] == "stages" and out["probe"]["schedule"] == "onecycle"
  assert out["probe"]["weight_decay"] == 0.02 and 0.0 <= out["miou"] <= 1.0
  assert out["collapse"]["effective_prototypes"] > 0
  with open(tmp_path / "probe_random_init.json") as f:
    assert json.load(f)["probe_features"] == out["probe_features"]
