"""The train step evaluates the teacher only at the slots its loss reads (`teacher_apply(rows=...)`) and runs
Zipf-Sinkhorn's iterations as matrix products (`min_teacher_temp`, dos_jax.sinkhorn_matmul): same loss, same
gradients and same metrics as the full teacher gathered by the objective (`packed_dos_loss`) in the log domain."""

import jax
import jax.numpy as jnp
import numpy as np

from dos_jax import objective
from dos_jax import specs
from dos_jax.eval import diagnostics
from dos_jax.models import network
from dos_jax.train import schedules
from dos_jax.train import step as step_lib
from tests import train as helpers


def _full_teacher_loss(params, teacher_params, batch, rng, step, spec):
  """The loss as the step computed it before rows: the teacher on every slot, gathered by the objective."""
  teacher_rng = jax.random.fold_in(rng, 0x7EA)
  teacher_cos = jax.lax.stop_gradient(network.teacher_apply(teacher_params, batch, spec=spec.model,
                                                            rng=teacher_rng))
  student_cos = network.student_apply(params, batch, rng=rng, train=True, spec=spec.model, order_rng=rng)
  loss, aux = objective.packed_dos_loss(
      student_cos, teacher_cos, batch.target_index, batch.target_valid, batch.cross_index, batch.cross_valid,
      batch.student.valid, batch.student.stages[0].segment, batch.view_valid,
      teacher_temp=schedules.teacher_temperature(spec)(step), student_temp=float(spec.student_temp),
      alpha=float(spec.zipf_alpha), num_iters=int(spec.sinkhorn_iters), normalization=spec.normalization,
      cross_view=bool(spec.cross_view))
  diag = diagnostics.prototype_diagnostics(aux["teacher_logits"], aux["targets"], aux["valid"])
  return loss, (aux, diag)


def test_teacher_at_rows_equals_the_full_teacher_gathered():
  config, batch, host_state, _, _ = helpers.reference_setup()
  spec = specs.step_spec(config)
  teacher = host_state.teacher_params
  full = np.asarray(network.teacher_apply(teacher, batch, spec=spec.model))
  rows = np.concatenate([batch.target_index, batch.cross_index], axis=1)
  at = np.asarray(jax.jit(lambda p, b, r: network.teacher_apply(p, b, spec=spec.model, rows=r))(teacher, batch, rows))
  nt = full.shape[1]
  expected = np.concatenate([full, np.zeros_like(full[:, :1])], axis=1)[np.arange(len(rows))[:, None], rows]
  # Cosines in [-1, 1] from row-wise ops; only a matmul's summation order may differ: eps x the longest reduction
  # (the head's hidden width, the encoder's output width) per op, a few ops deep.
  longest = max(int(config.model.head_hidden), full.shape[-1], 64)
  np.testing.assert_allclose(at, expected, rtol=0, atol=8 * longest * np.finfo(np.float32).eps)
  assert np.all(at[rows == nt] == 0)
  assert np.abs(at[rows < nt]).mean() > 0.05
  # More rows than slots (the token variants' student holds the whole view): the head runs on the slots and the
  # rows are gathered after, the same values.
  twice = np.concatenate([rows, rows], axis=1)
  assert twice.shape[1] > nt
  at2 = np.asarray(network.teacher_apply(teacher, batch, spec=spec.model, rows=twice))
  np.testing.assert_array_equal(at2, np.concatenate([expected, expected], axis=1))


def test_step_loss_and_grads_equal_the_full_teacher_path():
  config, batch, host_state, _, _ = helpers.reference_setup()
  spec = specs.step_spec(config)
  assert spec.cross_view  # both terms are read at rows
  rng, step = jax.random.PRNGKey(7), jnp.asarray(3)
  new = jax.jit(jax.value_and_grad(lambda p: step_lib.compute_loss(p, host_state.teacher_params, batch, rng, step,
                                                                   spec), has_aux=True))
  old = jax.jit(jax.value_and_grad(lambda p: _full_teacher_loss(p, host_state.teacher_params, batch, rng, step,
                                                                spec), has_aux=True))
  (loss_new, metrics), grads_new = new(host_state.params)
  (loss_old, (aux, diag)), grads_old = old(host_state.params)
  # The targets differ from the full path's by the teacher's cosine rounding (test above), amplified by
  # 1/τ_T <= 25 in the logits, and by the potentials' rounding in the other Sinkhorn form (tests/
  # test_sinkhorn_matmul.py: (L + 3 X) eps per step, L = 128 rows here); both are carried through the KL, which is
  # smooth and O(1) Lipschitz in the log-targets: float32 eps x a few hundred.
  tol = 512 * np.finfo(np.float32).eps
  np.testing.assert_allclose(loss_new, loss_old, rtol=tol)
  np.testing.assert_allclose(metrics["loss_same"], aux["loss_same"], rtol=tol)
  np.testing.assert_allclose(metrics["loss_cross"], aux["loss_cross"], rtol=tol)
  for key, value in diag.items():
    np.testing.assert_allclose(metrics[key], value, rtol=tol, atol=tol, err_msg=key)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_old))
  for a, b in zip(jax.tree.leaves(grads_new), jax.tree.leaves(grads_old)):
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)
  assert float(loss_new) > 0 and scale > 0
