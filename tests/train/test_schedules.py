"""Schedules: endpoints, shapes of the curves, and bad-config errors; EMA arithmetic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from dos_jax.train import ema
from dos_jax.train import schedules


def _config(total=1000, **optim):
  c = common.base_config()
  c.total_steps = total
  c.optim.update(optim)
  return c


def test_learning_rate_warmup_then_cosine():
  c = _config(lr=2e-3, warmup_frac=0.05, min_lr_ratio=0.01, schedule="warmup_cosine")
  f = schedules.learning_rate(c)
  assert float(f(0)) == 0.0
  np.testing.assert_allclose(float(f(25)), 1e-3, rtol=1e-6)        # half-way up the linear warm-up
  np.testing.assert_allclose(float(f(50)), 2e-3, rtol=1e-6)        # peak at the end of warm-up
  # Half-way through the cosine part: the mid-point between peak and floor.
  np.testing.assert_allclose(float(f(525)), 0.5 * (2e-3 + 2e-5), rtol=1e-5)
  np.testing.assert_allclose(float(f(1000)), 2e-5, rtol=1e-5)
  np.testing.assert_allclose(float(f(5000)), 2e-5, rtol=1e-5)      # stays at the floor
  values = np.array([float(f(s)) for s in range(50, 1001, 50)])
  assert np.all(np.diff(values) < 0)


def test_weight_decay_cosine_rises():
  f = schedules.weight_decay(_config())
  np.testing.assert_allclose(float(f(0)), 0.04, rtol=1e-6)
  np.testing.assert_allclose(float(f(500)), 0.12, rtol=1e-5)
  np.testing.assert_allclose(float(f(1000)), 0.2, rtol=1e-5)
  expected = 0.2 + (0.04 - 0.2) * 0.5 * (1 + math.cos(math.pi * 250 / 1000))
  np.testing.assert_allclose(float(f(250)), expected, rtol=1e-5)


def test_ema_momentum_endpoints():
  f = schedules.ema_momentum(_config())
  np.testing.assert_allclose(float(f(0)), 0.994, rtol=1e-7)
  np.testing.assert_allclose(float(f(1000)), 1.0, atol=1e-6)
  np.testing.assert_allclose(float(f(500)), 0.997, rtol=1e-6)


def test_teacher_temperature_linear_then_constant():
  c = _config()
  c.teacher_temp_warmup_frac = 0.05
  f = schedules.teacher_temperature(c)
  np.testing.assert_allclose(float(f(0)), 0.04, rtol=1e-6)
  np.testing.assert_allclose(float(f(25)), 0.055, rtol=1e-6)
  np.testing.assert_allclose(float(f(50)), 0.07, rtol=1e-6)
  np.testing.assert_allclose(float(f(900)), 0.07, rtol=1e-6)
  c.teacher_temp_warmup_frac = 0.0
  np.testing.assert_allclose(float(schedules.teacher_temperature(c)(0)), 0.07, rtol=1e-6)


def test_schedules_under_jit_with_traced_step():
  c = _config()
  fns = [schedules.learning_rate(c), schedules.weight_decay(c), schedules.ema_momentum(c),
         schedules.teacher_temperature(c)]
  out = jax.jit(lambda s: jnp.stack([f(s) for f in fns]))(jnp.int32(300))
  np.testing.assert_allclose(np.asarray(out), [float(f(300)) for f in fns], rtol=1e-6)


def test_short_run_and_bad_config():
  c = _config(total=3)
  assert np.isfinite(float(schedules.learning_rate(c)(1)))
  with pytest.raises(ValueError, match="total_steps"):
    schedules.learning_rate(_config(total=0))
  with pytest.raises(ValueError, match="warmup_frac"):
    schedules.learning_rate(_config(warmup_frac=1.5))
  bad = _config()
  bad.ema_momentum_end = 1.5
  with pytest.raises(ValueError, match="ema_momentum_end"):
    schedules.ema_momentum(bad)


def test_ema_update():
  teacher = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(3.0)}}
  student = {"a": jnp.array([3.0, 6.0]), "b": {"c": jnp.array(-1.0)}}
  out = ema.ema_update(teacher, student, 0.75)
  np.testing.assert_allclose(out["a"], [1.5, 3.0], rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], 2.0, rtol=1e-6)
  frozen = ema.ema_update(teacher, student, jnp.float32(1.0))
  np.testing.assert_array_equal(frozen["a"], teacher["a"])
  copied = ema.ema_update(teacher, student, 0.0)
  np.testing.assert_array_equal(copied["a"], student["a"])
