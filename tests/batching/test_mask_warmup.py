"""Masking warm-up (Sonata): ratio and cell size as functions of the step, evaluated where the views are built."""

import numpy as np
import pytest

from dos_jax.batching import pipeline
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import train_views
from dos_jax.data import views
from tests import batching as helpers


def _reference_schedule(start, base, total, warmup_ratio):
  """Sonata's mask schedulers as Pointcept builds them (CosineScheduler with final = base): a linspace warm-up of
  int(total * ratio) steps, then a cosine from base to base (constant); entry t is the value at 0-based step t."""
  warmup = int(total * warmup_ratio)
  head = np.linspace(start, base, warmup) if warmup > 0 else np.array([])
  iters = np.arange(total - warmup)
  tail = base + 0.5 * (base - base) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
  return np.concatenate([head, tail])


@pytest.mark.parametrize("total,frac", [(200, 0.05), (1000, 0.05), (30, 0.05), (7, 0.2), (100, 0.0)])
def test_linear_warmup_matches_sonatas_scheduler_at_every_step(total, frac):
  for start, end in ((0.3, 0.7), (0.1, 0.4), (0.25, 1.0)):
    ref = _reference_schedule(start, end, total, frac)
    got = [views.linear_warmup(start, end, int(total * frac), t) for t in range(total)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert views.linear_warmup(start, end, int(total * frac), total + 5) == end


def test_linear_warmup_rejects_a_negative_step():
  with pytest.raises(ValueError, match="step=-1"):
    views.linear_warmup(0.3, 0.7, 10, -1)


def test_batch_spec_mask_schedule_indoor_and_outdoor_cells_scaled():
  # 200 steps x 0.05 = 10 warm-up steps: step 0 is the start, step 9 and later the paper's final values.
  p = spec_lib.batch_spec(helpers.cfg(total_steps=200))
  assert p.mask_at(0) == pytest.approx((0.3, 0.1))
  assert p.mask_at(5) == pytest.approx((0.3 + 0.4 * 5 / 9, 0.1 + 0.3 * 5 / 9))
  assert p.mask_at(9) == (0.7, 0.4) and p.mask_at(150) == (0.7, 0.4) and p.mask_at(None) == (0.7, 0.4)
  outdoor = spec_lib.batch_spec(helpers.cfg(total_steps=200, **{"data.mask_cell": 1.0}))
  assert outdoor.mask_at(0) == pytest.approx((0.3, 0.25)) and outdoor.mask_at(9) == (0.7, 1.0)
  # The previous recipe: no warm-up, the final values from step 0.
  off = spec_lib.batch_spec(helpers.cfg(total_steps=200, mask_ratio_warmup_frac=0.0,
                                        **{"data.mask_cell_warmup_frac": 0.0}))
  assert off.mask_at(0) == (0.7, 0.4)


def _masked_fraction(batch):
  """Masked share of the teacher's real points, from the student sets (observable: student = visible)."""
  teacher = batch.teacher.valid.sum()
  return 1.0 - batch.student.valid.sum() / teacher


def test_views_of_early_steps_mask_less_and_the_batch_is_a_function_of_the_step():
  cfg = helpers.cfg(total_steps=400, **{"data.student_capacity": 512})  # warm-up: steps 0..19
  p = spec_lib.pipeline_spec(cfg)
  batches = pipeline.process_batches(p, helpers.SCENES)
  early = np.mean([_masked_fraction(batches[t]) for t in (0, 1)])
  late = np.mean([_masked_fraction(batches[t]) for t in (200, 201)])
  assert early < 0.45 < 0.55 < late, (early, late)   # ratio 0.3 (cells 0.1 m) vs 0.7 (cells 0.4 m)
  # Pure in (config, seed, step): the same step gives the same batch, built twice.
  again = pipeline.process_batches(p, helpers.SCENES)[1]
  np.testing.assert_array_equal(again.student.point_index, batches[1].student.point_index)
  # Direct form: train_views at step 0 with the same draws masks as the schedule says.
  rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
  first = train_views.make_train_batch(helpers.SCENES[:1], p.batch, rng_a, step=0)
  final = train_views.make_train_batch(helpers.SCENES[:1], p.batch, rng_b, step=None)
  assert _masked_fraction(first) < _masked_fraction(final)
