"""The pure DOS training step: teacher forward, student forward + loss, AdamW update, EMA teacher.

  state, metrics = train_step(state, batch, rng, spec=spec)       # spec: a dos_jax.specs.StepSpec (static)

`train_step` is a top-level pure function; `dos_jax.train.sharding` jits it once over a device mesh (default) or
wraps the same pieces in `shard_map`, with the StepSpec closed over (it fixes the compiled program). The two halves, `loss_and_grads` (per-shard work) and
`apply_update` (everything after the gradient is known), are shared by both variants, so they cannot drift.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from dos_jax import objective
from dos_jax import specs
from dos_jax.eval import diagnostics
from dos_jax.models import network
from dos_jax.train import ema
from dos_jax.train import schedules
from dos_jax.train import state as state_lib

Metrics = Dict[str, jax.Array]


def compute_loss(params, teacher_params, batch, rng: jax.Array, step: jax.Array, spec: specs.StepSpec,
                 order_rng: Any = None) -> Tuple[jax.Array, Metrics]:
  """The DOS loss of the student `params` against the teacher `teacher_params` on `batch`.

  The teacher's cosines pass through `stop_gradient`, so the loss has exactly zero gradient w.r.t.
  `teacher_params` (tests differentiate this very function to check it).

  Args:
    params: student params. teacher_params: teacher params (same structure).
    batch: TrainBatch, leading [G] packs.
    rng: PRNG key for the student's drop path (and for order shuffling when `order_rng` is None).
    step: i32[] step index (teacher temperature schedule).
    spec: the StepSpec (static).
    order_rng: PRNG key of the teacher's and student's order shuffling (spec.model.shuffle_orders), or None to
      derive it from `rng`.

  Returns:
    loss f32[] (the mean over the batch's real views, `objective.packed_dos_loss`) and a dict of f32[] metrics:
    loss, loss_same, loss_cross, views (real views in the batch) and the prototype diagnostics of the teacher at
    the student's same-view target points.
  """
  # The teacher's own key (order shuffling only; unused without spec.model.shuffle_orders).
  order_rng = rng if order_rng is None else order_rng
  teacher_rng = jax.random.fold_in(order_rng, 0x7EA)
  # The loss reads the teacher only at the student's target slots (same view, and the other view's for the
  # cross-view term), so its up-cast projection and head run at those rows alone: [G, 2 Ns] instead of [G, Nt]
  # (a 70%-masked student has Ns ~ 0.3 Nt), with the values of the full teacher's rows.
  cross_view = bool(spec.cross_view)
  rows = batch.target_index
  if cross_view:
    rows = jnp.concatenate([batch.target_index, batch.cross_index], axis=1)
  teacher_at = jax.lax.stop_gradient(network.teacher_apply(teacher_params, batch, spec=spec.model,
                                                           rng=teacher_rng, rows=rows))
  ns = batch.target_index.shape[1]
  student_cos = network.student_apply(params, batch, rng=rng, train=True, spec=spec.model, order_rng=order_rng)
  # Named scopes (objective, diagnostics, optimizer, ema) only label the compiled program's ops, e.g. for the
  # per-part cost breakdown of benchmarks/tpu_breakdown.py; they change no computation.
  with jax.named_scope("objective"):
    loss, aux = objective.packed_dos_loss_at_rows(
        student_cos, teacher_at[:, :ns], batch.target_valid, teacher_at[:, ns:] if cross_view else None,
        batch.cross_valid, batch.student.valid, batch.student.stages[0].segment, batch.view_valid,
        teacher_temp=schedules.teacher_temperature(spec)(step), student_temp=float(spec.student_temp),
        alpha=float(spec.zipf_alpha), num_iters=int(spec.sinkhorn_iters), normalization=spec.normalization,
        min_teacher_temp=min(float(spec.teacher_temp_start), float(spec.teacher_temp_end)))
  metrics = {"loss": loss, "loss_same": aux["loss_same"], "loss_cross": aux["loss_cross"], "views": aux["views"]}
  # The prototype diagnostics treat each pack as one set (usage statistics are per point; coverage and softmap
  # entropy are per pack).
  with jax.named_scope("diagnostics"):
    diag = diagnostics.prototype_diagnostics(aux["teacher_logits"], aux["targets"], aux["valid"])
  metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in diag.items()})
  return loss, metrics


def loss_and_grads(state: state_lib.TrainState, batch, rng: jax.Array, spec: specs.StepSpec,
                   order_rng: Any = None) -> Tuple[jax.Array, Any, Metrics]:
  """Loss, student gradients and per-batch metrics on `batch` (the whole batch, or one device's shard).

  Args:
    state: the current TrainState.
    batch: TrainBatch, leading [G] packs (this device's packs inside shard_map).
    rng: per-step PRNG key (drop path).
    spec: the StepSpec.
    order_rng: the order-shuffling key (see `compute_loss`); None derives it from `rng`.

  Returns:
    loss: f32[]; grads: pytree like state.params; metrics: dict of f32[] (see `compute_loss`).
  """
  loss_fn = functools.partial(compute_loss, spec=spec)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.teacher_params, batch, rng, state.step, order_rng=order_rng)
  return loss, grads, metrics


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def apply_update(state: state_lib.TrainState, loss: jax.Array, grads: Any, metrics: Metrics,
                 spec: specs.StepSpec) -> Tuple[state_lib.TrainState, Metrics]:
  """AdamW update of the student, EMA update of the teacher, non-finite guard, schedule metrics.

  `loss` and `grads` must already be the global (all-device) values. When the loss or any gradient is not
  finite, params, teacher and opt state are kept as they were (the step is skipped), `nonfinite_count` grows by
  one and `metrics['nonfinite']` is 1; `step` advances either way (the batch is consumed).
  """
  tx = state_lib.make_optimizer(spec)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & _all_finite(grads)

  with jax.named_scope("optimizer"):
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
  momentum = schedules.ema_momentum(spec)(state.step)
  with jax.named_scope("ema"):
    new_teacher = ema.ema_update(state.teacher_params, new_params, momentum)

  def keep_if_finite(new, old):
    # Select, not cond: both branches are computed anyway, and jnp.where keeps shardings simple.
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  new_state = state.replace(
      step=state.step + 1,
      params=keep_if_finite(new_params, state.params),
      teacher_params=keep_if_finite(new_teacher, state.teacher_params),
      opt_state=keep_if_finite(new_opt_state, state.opt_state),
      nonfinite_count=state.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32))

  step = state.step
  metrics = dict(metrics)
  metrics.update(
      lr=schedules.learning_rate(spec)(step),
      weight_decay=schedules.weight_decay(spec)(step),
      ema_momentum=momentum,
      teacher_temp=schedules.teacher_temperature(spec)(step),
      grad_norm=grad_norm,
      nonfinite=jnp.where(finite, 0.0, 1.0))
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def train_step(state: state_lib.TrainState, batch, rng: jax.Array, *, spec: specs.StepSpec
               ) -> Tuple[state_lib.TrainState, Metrics]:
  """One DOS step on a whole (global) batch. Pure; jit it via `dos_jax.train.sharding.jit_train_step`.

  Args:
    state: TrainState.
    batch: TrainBatch, leading axis [G] packs.
    rng: per-step key, e.g. `jax.random.fold_in(state.rng, step)`.
    spec: the StepSpec (static: loss switches, schedules, optimizer, model).

  Returns:
    (new_state, metrics): metrics is a dict of f32[] scalars: loss, loss_same, loss_cross, lr, weight_decay,
    ema_momentum, teacher_temp, grad_norm, nonfinite, and the prototype diagnostics.
  """
  loss, grads, metrics = loss_and_grads(state, batch, rng, spec)
  return apply_update(state, loss, grads, metrics, spec)


def device_keys(rng: jax.Array, axis_name: str) -> Tuple[jax.Array, jax.Array]:
  """Inside shard_map: (this device's drop-path key, the order-shuffling key shared by every device)."""
  return jax.random.fold_in(rng, jax.lax.axis_index(axis_name)), rng


def cross_device_step(state: state_lib.TrainState, batch, rng: jax.Array, axis_name: str, *,
                      spec: specs.StepSpec) -> Tuple[state_lib.TrainState, Metrics]:
  """The per-device body of the shard_map variants: local loss and grads, weighted by this device's share of the
  step's real views and summed over `axis_name` (`lax.psum`), then the same `apply_update` on every device (so
  replicated state stays identical).

  Packs filled by budget hold different numbers of views, so a plain mean of per-device means would weigh a view
  by its device's fill; weighting device d's mean by views_d / sum(views) gives the mean over all real views, the
  loss the jit variant computes. Metrics get the same weights (for the nonlinear prototype diagnostics this is a
  weighted mean of per-shard values, not the value on the global batch); 'views' is the step's total.

  Drop path draws per device (its key is folded with the device index, so devices do not repeat each other's
  masks); order shuffling keeps the step's key, because its permutation is one per stage for the whole batch:
  every device then serializes as the same step on one device does.
  """
  drop_rng, order_rng = device_keys(rng, axis_name)
  loss, grads, metrics = loss_and_grads(state, batch, drop_rng, spec, order_rng=order_rng)
  views = metrics["views"]
  total = jax.lax.psum(views, axis_name)
  weight = views / jnp.maximum(total, 1.0)
  loss, grads, metrics = jax.lax.psum(jax.tree.map(lambda x: x * weight, (loss, grads, metrics)), axis_name)
  metrics["views"] = total
  return apply_update(state, loss, grads, metrics, spec)
