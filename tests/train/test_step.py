"""The pure train step: learning, non-finite guard, EMA teacher without gradient, masking, metrics, optimizer.

Compiles are shared: the 1-device step (batch 8) comes from tests/train/__init__.py (also used by
test_sharding.py); the masking tests compile `student_apply` forward only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import specs
from dos_jax.models import network
from dos_jax.train import schedules
from dos_jax.train import sharding
from dos_jax.train import state as state_lib
from dos_jax.train import step as step_lib
from tests import train as helpers

METRIC_KEYS = {"loss", "loss_same", "loss_cross", "lr", "weight_decay", "ema_momentum", "teacher_temp",
               "grad_norm", "nonfinite", "usage_entropy", "effective_prototypes", "views"}


def _max_diff(a, b):
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(diffs))


def _tree_equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)))


@pytest.mark.system
def test_loss_decreases_on_a_fixed_batch():
  config, batch, _, mesh, step_fn = helpers.reference_setup()
  ref_losses, ref_state = helpers.reference_run()
  losses, state = helpers.run_steps(step_fn, ref_state, batch, mesh, 12)
  losses = np.concatenate([ref_losses, losses])
  assert np.all(np.isfinite(losses))
  assert int(jax.device_get(state.nonfinite_count)) == 0
  assert int(jax.device_get(state.step)) == 15
  assert losses[-1] < 0.85 * losses[0], losses
  metrics = helpers.run_steps.last_metrics
  assert METRIC_KEYS <= set(metrics), sorted(metrics)
  for name, value in metrics.items():
    assert value.shape == () and value.dtype == np.float32, (name, value.shape, value.dtype)
  # Schedule metrics are the schedules evaluated at the step's index (14 = the last step taken).
  np.testing.assert_allclose(metrics["lr"], schedules.learning_rate(config)(14), rtol=1e-6)
  np.testing.assert_allclose(metrics["weight_decay"], schedules.weight_decay(config)(14), rtol=1e-6)
  np.testing.assert_allclose(metrics["ema_momentum"], schedules.ema_momentum(config)(14), rtol=1e-6)
  np.testing.assert_allclose(metrics["teacher_temp"], schedules.teacher_temperature(config)(14), rtol=1e-6)
  assert metrics["nonfinite"] == 0.0 and metrics["grad_norm"] > 0


@pytest.mark.system
def test_teacher_is_an_ema_of_the_student():
  config, batch, host_state, mesh, step_fn = helpers.reference_setup()
  assert _tree_equal(host_state.params, host_state.teacher_params)
  _, state = helpers.run_steps(step_fn, host_state, batch, mesh, 1)
  state = jax.device_get(state)
  m = float(schedules.ema_momentum(config)(0))
  assert 0.99 < m < 1.0
  expected = jax.tree.map(lambda t, s: m * np.asarray(t, np.float64) + (1 - m) * np.asarray(s, np.float64),
                          host_state.teacher_params, state.params)
  # ema_update computes t + (1-m)(s-t) in float32 (1-m is exact, m in [0.5, 1]): the difference, the product and the
  # sum round once each (an FMA only removes one), so |error| <= eps/2 |result| + eps (1-m)(|s|+|t|)
  # <= 1.5 eps (m|t| + (1-m)|s|) element-wise (using (1-m) <= m), on any CPU.
  eps = float(np.finfo(np.float32).eps)
  for t, s, got, want in zip(jax.tree.leaves(host_state.teacher_params), jax.tree.leaves(state.params),
                             jax.tree.leaves(state.teacher_params), jax.tree.leaves(expected)):
    bound = 1.5 * eps * (m * np.abs(np.asarray(t, np.float64)) + (1 - m) * np.abs(np.asarray(s, np.float64)))
    assert np.all(np.abs(np.asarray(got, np.float64) - want) <= bound + 1e-30)
  # The student moved; the teacher moved by exactly (1 - m) of the way.
  moved = _max_diff(state.params, host_state.params)
  assert moved > 1e-4
  assert _max_diff(state.teacher_params, host_state.teacher_params) < 2 * (1 - m) * moved


@pytest.mark.system
def test_no_gradient_reaches_the_teacher():
  # Checked on the traced gradient program (no compile): every teacher gradient must be a literal zero
  # broadcast, i.e. identically 0 for any input, not just numerically small on one batch.
  config, batch, host_state, _, _ = helpers.reference_setup()
  small = jax.tree.map(lambda x: x[:2], batch)
  loss_fn = functools.partial(step_lib.compute_loss, spec=specs.step_spec(config))
  closed = jax.make_jaxpr(jax.grad(loss_fn, argnums=1, has_aux=True))(
      host_state.params, host_state.teacher_params, small, jax.random.PRNGKey(1), jnp.int32(0))
  producer = {id(v): eqn for eqn in closed.jaxpr.eqns for v in eqn.outvars}
  num_grads = len(jax.tree.leaves(host_state.teacher_params))
  for var in closed.jaxpr.outvars[:num_grads]:
    eqn = producer.get(id(var))
    assert eqn is not None and eqn.primitive.name == "broadcast_in_dim", eqn
    (operand,) = eqn.invars
    assert getattr(operand, "val", None) == 0.0, eqn
  # The same function does give the student a non-zero gradient (the check above is not vacuous).
  closed_student = jax.make_jaxpr(jax.grad(loss_fn, argnums=0, has_aux=True))(
      host_state.params, host_state.teacher_params, small, jax.random.PRNGKey(1), jnp.int32(0))
  assert len(closed_student.jaxpr.eqns) > 2 * len(closed.jaxpr.eqns) // 3


@pytest.mark.system
def test_nonfinite_step_is_skipped():
  _, batch, _, mesh, step_fn = helpers.reference_setup()
  _, ref_state = helpers.reference_run()
  feat = np.array(batch.student.feat)
  assert batch.student.stages[0].valid[3, 5]
  feat[3, 5, 0] = np.nan
  bad = batch.replace(student=batch.student.replace(feat=feat))
  _, state = helpers.run_steps(step_fn, ref_state, bad, mesh, 1)
  metrics = helpers.run_steps.last_metrics
  state = jax.device_get(state)
  assert metrics["nonfinite"] == 1.0 and not np.isfinite(metrics["loss"])
  assert int(state.nonfinite_count) == int(ref_state.nonfinite_count) + 1
  assert int(state.step) == int(ref_state.step) + 1
  for name in ("params", "teacher_params", "opt_state"):
    assert _tree_equal(getattr(state, name), getattr(ref_state, name)), name
  # The next good batch trains again.
  _, state = helpers.run_steps(step_fn, state, batch, mesh, 1)
  assert helpers.run_steps.last_metrics["nonfinite"] == 0.0
  assert int(jax.device_get(state.nonfinite_count)) == 1
  assert _max_diff(jax.device_get(state).params, ref_state.params) > 0


# ---- The student never sees masked points (supervision='observable') ----

def _masked_in_both_views(scene):
  masked = scene.masks[0] & scene.masks[1]
  assert 0 < masked.sum() < len(masked)
  return masked


def _move_masked_points(scene):
  """Moves the points masked in both views two voxels up (unique voxels, same block masks): a new Scene."""
  grid = scene.grid.copy()
  grid[_masked_in_both_views(scene), 2] += 2
  return helpers.Scene(grid=grid, color=scene.color, masks=scene.masks)


@pytest.fixture(scope="module")
def scene():
  return helpers.make_scene(np.random.default_rng(7))


def _student_fn(config):
  return jax.jit(functools.partial(network.student_apply, train=False, spec=specs.model_spec(config)))


@pytest.mark.system
def test_observable_student_ignores_masked_points(scene):
  config = helpers.tiny_config()
  params = helpers.reference_setup()[2].params
  batch = helpers.build_batch([scene], config)
  moved = helpers.build_batch([_move_masked_points(scene)], config)
  # The perturbation is real: the teacher (full) views differ.
  assert not np.array_equal(batch.teacher.coord, moved.teacher.coord)
  apply = _student_fn(config)
  out, out_moved = apply(params, batch), apply(params, moved)
  assert out.shape == (1, 2 * helpers.STUDENT_CAP, config.num_prototypes)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(out_moved))


@pytest.mark.system
def test_masked_tokens_student_sees_masked_positions_not_features(scene):
  config = helpers.tiny_config(supervision="masked_tokens")
  params = helpers.reference_setup()[2].params
  batch = helpers.build_batch([scene], config, supervision="masked_tokens")
  assert batch.mask_token.any() and (~batch.mask_token & batch.student.valid).any()
  apply = _student_fn(config)
  out = np.asarray(apply(params, batch))
  visible = np.asarray(batch.student.valid & ~batch.mask_token)
  # Masked points' positions reach this student (through neighbours, pooling, serialization)...
  moved = helpers.build_batch([_move_masked_points(scene)], config, supervision="masked_tokens")
  out_moved = np.asarray(apply(params, moved))
  assert np.max(np.abs(out[visible] - out_moved[visible])) > 1e-4
  # ...but their features do not: the learnable mask token replaces them.
  masked = _masked_in_both_views(scene)
  recoloured = helpers.Scene(grid=scene.grid, color=np.where(masked[:, None], 1.0 - scene.color, scene.color),
                             masks=scene.masks)
  out_recoloured = np.asarray(apply(params, helpers.build_batch([recoloured], config, "masked_tokens")))
  np.testing.assert_allclose(out_recoloured, out, atol=1e-6)


# ---- Optimizer ----

@pytest.mark.system
def test_optimizer_matches_a_numpy_adamw_with_clipping_and_decay_mask():
  config = helpers.tiny_config()
  config.optim.update(lr=1e-2, warmup_frac=0.0, clip_norm=1.0, b1=0.9, b2=0.999)
  params = {"enc": {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "norm": {"scale": jnp.ones(3)}},
            "head": {"prototypes": jnp.ones((4, 3))}}
  mask = state_lib.decay_mask(params)
  assert mask == {"enc": {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}},
                  "head": {"prototypes": False}}
  tx = state_lib.make_optimizer(specs.step_spec(config))
  rng = np.random.default_rng(0)
  grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32) * 3, params)
               for _ in range(2)]
  opt_state, p = tx.init(params), params
  for g in grads_seq:
    updates, opt_state = tx.update(g, opt_state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  # Independent float64 AdamW: global-norm clip, bias-corrected moments, decoupled decay times lr.
  flat_p = {k: np.asarray(v, np.float64) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  flat_mask = dict(jax.tree_util.tree_flatten_with_path(mask)[0])
  m = {k: 0.0 for k in flat_p}
  v = {k: 0.0 for k in flat_p}
  for t, g in enumerate(grads_seq):
    g = {k: np.asarray(x, np.float64) for k, x in jax.tree_util.tree_flatten_with_path(g)[0]}
    norm = np.sqrt(sum(np.sum(x ** 2) for x in g.values()))
    scale = min(1.0, 1.0 / norm)
    lr = float(schedules.learning_rate(config)(t))
    wd = float(schedules.weight_decay(config)(t))
    for k in flat_p:
      gk = g[k] * scale
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.999 * v[k] + 0.001 * gk ** 2
      mh, vh = m[k] / (1 - 0.9 ** (t + 1)), v[k] / (1 - 0.999 ** (t + 1))
      flat_p[k] = flat_p[k] - lr * (mh / (np.sqrt(vh) + 1e-8) + (wd * flat_p[k] if flat_mask[k] else 0.0))
  for k, value in jax.tree_util.tree_flatten_with_path(p)[0]:
    np.testing.assert_allclose(np.asarray(value), flat_p[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
