"""The distributed step on 8 host CPU devices computes what the 1-device step computes.

tests/conftest.py forces 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8). The 1-device
reference run (3 steps, batch 8) is shared with test_step.py through tests/train/__init__.py.

Tolerances come from the arithmetic, not from one machine (a CPU with another vector width or core count sums in
another order, and so does XLA when a batch of 8 scenes becomes 8 batches of 1):

* Before the optimizer (the loss, the gradient pytree, the step's global `grad_norm`), 1 and 8 devices evaluate
  the same float32 function with the reductions in a different order. Every gradient element is a sum over the
  student points of the batch, N = B * V * student capacity = 8 * 2 * 64 = 1,024 terms (the loss likewise sums
  over them); recursive summation in any order is off by at most N * eps (eps = 2^-23, float32) relative to the
  magnitude of the terms (Higham, Accuracy and Stability of Numerical Algorithms, 4.2). So: relative error
  <= N * eps = 1.2e-4, with the scale of a gradient element taken as its leaf's largest |g| (an element that is a
  near-zero sum of large terms is off relative to those terms, not to itself), and the global norm for the
  normwise check. Measured on the CI machine: loss 8.7e-8, gradient normwise 8.2e-7, worst leaf 3.1e-6 (relative);
  the bound leaves a factor of ~40 for other machines, and a wrong collective (a sum instead of a mean: x8; a
  missing all-reduce: one scene in eight) breaks it by orders of magnitude.
* After the optimizer, parameters are NOT float32-close: Adam divides each gradient by its own running RMS, so a
  near-zero gradient whose rounding differs can move its parameter by up to a full step in either direction (the
  1.06e-5 of one element of `enc1.block0.cpe.conv.kernel` seen on another machine). The hard bound is the update
  size: each run moves each parameter by at most lr_t * (U_t + wd_t * |p|) per step t, where
  U_t = (1-b1)/(1-b1^t) * sqrt((1-b2^t)/(1-b2)) * sqrt(sum_{j<t} (b1^2/b2)^j) bounds Adam's normalised step
  |m_hat / sqrt(v_hat)| (Cauchy-Schwarz on the EMA sums; 1.00 for t <= 3 at b1=0.9, b2=0.999). So two runs from
  the same start differ by at most twice the sum of those bounds (the teacher, an EMA of the student, by less).
* The losses of later steps stay float32-close all the same: Adam amplifies rounding only where |g_i| is itself
  rounding-sized, so to first order the loss moves by sum_i |g_i| |dp_i| <= lr * sum_i |rounding of g_i|, far below
  N * eps * |loss|; the loss check therefore keeps the N * eps bound on every step.
"""

import functools
import math

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dos_jax import specs
from dos_jax.errors import ConfigError
from dos_jax.train import schedules
from dos_jax.train import sharding
from dos_jax.train import step as step_lib
from tests import train as helpers

EPS = float(np.finfo(np.float32).eps)
# Terms in each gradient element's sum: scenes x views x student capacity (see the module docstring).
REDUCTION_LENGTH = helpers.REF_BATCH * 2 * helpers.STUDENT_CAP
ROUNDING_TOL = REDUCTION_LENGTH * EPS


def adam_step_bound(b1: float, b2: float, t: int) -> float:
  """Upper bound of |m_hat_t / sqrt(v_hat_t)| for Adam's t-th update (t >= 1), for any gradient sequence."""
  geometric = sum((b1 * b1 / b2) ** j for j in range(t))
  return (1 - b1) / (1 - b1 ** t) * math.sqrt((1 - b2 ** t) / (1 - b2)) * math.sqrt(geometric)


def param_diff_bound(config, num_steps: int, max_abs_param: float) -> float:
  """Largest possible |p_a - p_b| of one parameter after `num_steps` AdamW steps of two runs from one start."""
  b1, b2 = float(config.optim.b1), float(config.optim.b2)
  per_run = sum(float(schedules.learning_rate(config)(t))
                * (adam_step_bound(b1, b2, t + 1) + float(schedules.weight_decay(config)(t)) * max_abs_param)
                for t in range(num_steps))
  return 2 * per_run


def _flat(tree):
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  return {jax.tree_util.keystr(p): np.asarray(x, np.float64) for p, x in flat}


def assert_rounding_close(got, want, name):
  """Pytrees equal up to summation-order rounding: element-wise relative to the leaf's scale, and normwise."""
  got, want = _flat(got), _flat(want)
  assert got.keys() == want.keys()
  for path, w in want.items():
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    np.testing.assert_allclose(got[path], w, rtol=0, atol=ROUNDING_TOL * scale, err_msg=f"{name}{path}")
  diff = math.sqrt(sum(float(np.sum((got[p] - w) ** 2)) for p, w in want.items()))
  norm = math.sqrt(sum(float(np.sum(w ** 2)) for w in want.values()))
  assert diff <= ROUNDING_TOL * norm, (name, diff, norm)


def _assert_same_run(losses, metrics0, state, eight):
  ref_losses, ref_state, ref_metrics0 = eight["ref_losses"], eight["ref_state"], eight["ref_metrics0"]
  # Before the optimizer: the first step's loss and global gradient norm (the pmean/all-reduce result).
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose(metrics0[key], ref_metrics0[key], rtol=ROUNDING_TOL, err_msg=key)
  np.testing.assert_allclose(losses, ref_losses, rtol=ROUNDING_TOL)
  got = jax.device_get(state)
  assert int(got.step) == int(ref_state.step) == helpers.REF_STEPS
  assert int(got.nonfinite_count) == int(ref_state.nonfinite_count) == 0
  # After the optimizer: bounded by the update size (module docstring).
  start = _flat(eight["host_state"].params)
  bound = param_diff_bound(eight["config"], helpers.REF_STEPS, max(float(np.max(np.abs(x))) for x in start.values()))
  for name in ("params", "teacher_params"):
    ref = _flat(getattr(ref_state, name))
    for path, a in _flat(getattr(got, name)).items():
      np.testing.assert_allclose(a, ref[path], rtol=0, atol=bound, err_msg=f"{name}{path}")
  # This bound is loose by design (it must hold on any machine): the loss and gradient checks carry the precision.
  ints = lambda t: [int(x) for x in jax.tree.leaves(t) if np.issubdtype(np.asarray(x).dtype, np.integer)]
  assert ints(got.opt_state) == ints(ref_state.opt_state)  # Adam's update counts


@pytest.fixture(scope="module")
def eight():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  config, batch, host_state, _, _ = helpers.reference_setup()
  ref_losses, ref_state = helpers.reference_run()
  # The reference must actually train (a skipped or frozen step would make the comparison vacuous).
  assert float(ref_state.nonfinite_count) == 0
  assert ref_losses[-1] < ref_losses[0]
  mesh = sharding.make_mesh(8)
  return dict(config=config, batch=batch, host_state=host_state, mesh=mesh, ref_losses=ref_losses,
              ref_state=ref_state, ref_metrics0=helpers.reference_run.metrics[0],
              shardings=sharding.state_sharding(mesh, host_state))


def _loss_and_grads(mesh, host_state, batch):
  """`step.loss_and_grads` jitted on `mesh` (batch sharded over it, state replicated): (loss, grads) on host."""
  shardings = sharding.state_sharding(mesh, host_state)
  fn = jax.jit(functools.partial(step_lib.loss_and_grads, spec=specs.step_spec(helpers.reference_setup()[0])),
               in_shardings=(shardings, sharding.batch_sharding(mesh),
                                                      sharding.replicated(mesh)))
  loss, grads, _ = fn(jax.device_put(host_state, shardings), sharding.shard_batch(batch, mesh),
                      jax.random.PRNGKey(1))
  return float(loss), jax.device_get(grads)


@pytest.mark.system
def test_gradients_on_8_devices_equal_1_device(eight):
  host_state, batch = eight["host_state"], eight["batch"]
  loss1, grads1 = _loss_and_grads(sharding.make_mesh(1), host_state, batch)
  loss8, grads8 = _loss_and_grads(eight["mesh"], host_state, batch)
  np.testing.assert_allclose(loss8, loss1, rtol=ROUNDING_TOL)
  assert_rounding_close(grads8, grads1, "grads")
  # Not vacuous: the gradient is far from zero in every leaf that the loss reaches.
  assert sum(float(np.sum(np.abs(g))) > 0 for g in jax.tree.leaves(grads1)) > len(jax.tree.leaves(grads1)) // 2


@pytest.mark.system
def test_jit_mesh_8_devices_equals_1_device(eight):
  mesh = eight["mesh"]
  global_batch = sharding.shard_batch(eight["batch"], mesh)
  # The batch really is split over the 8 devices: one scene per device.
  leaf = global_batch.student.coord
  assert leaf.sharding.spec == P("data")
  assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}
  step_fn = sharding.jit_train_step(specs.step_spec(eight["config"]), mesh, eight["shardings"])
  losses, state = helpers.run_steps(step_fn, eight["host_state"], eight["batch"], mesh, helpers.REF_STEPS)
  assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == 8
  _assert_same_run(losses, helpers.run_steps.metrics[0], state, eight)


@pytest.mark.system
def test_shard_map_8_devices_equals_1_device(eight):
  mesh = eight["mesh"]
  step_fn = sharding.make_shard_map_step(specs.step_spec(eight["config"]), mesh, eight["shardings"])
  losses, state = helpers.run_steps(step_fn, eight["host_state"], eight["batch"], mesh, helpers.REF_STEPS)
  _assert_same_run(losses, helpers.run_steps.metrics[0], state, eight)


def test_update_bound_is_adams():
  """The bound used above: exact for a constant gradient at t=1, and never below Adam's actual normalised step."""
  assert adam_step_bound(0.9, 0.999, 1) == pytest.approx(1.0)
  rng = np.random.default_rng(0)
  for _ in range(200):
    g = rng.normal(size=5) * rng.choice([1e-8, 1.0, 1e3], size=5)
    m = v = 0.0
    for t, gt in enumerate(g, start=1):
      m, v = 0.9 * m + 0.1 * gt, 0.999 * v + 0.001 * gt * gt
      step = abs(m / (1 - 0.9 ** t)) / math.sqrt(v / (1 - 0.999 ** t))
      assert step <= adam_step_bound(0.9, 0.999, t) * (1 + 1e-12)


@pytest.mark.system  # the `eight` fixture compiles and runs the reference step
def test_batch_size_must_divide_over_devices(eight):
  six = jax.tree.map(lambda x: x[:6], eight["batch"])
  with pytest.raises(ConfigError, match="batch_size"):
    sharding.shard_batch(six, eight["mesh"])
  with pytest.raises(ValueError, match="num_devices"):
    sharding.make_mesh(jax.device_count() + 1)



@pytest.mark.system  # the `eight` fixture compiles and runs the reference step
def test_shard_map_devices_share_the_order_key_and_not_the_drop_key(eight):
  """Order shuffling draws one permutation per stage for the whole batch, so under shard_map every device must
  use the step's key (then it serializes as the 1-device step does); drop path must differ per device."""
  mesh = eight["mesh"]

  def keys(rng):
    drop, order = step_lib.device_keys(rng[0], sharding.DATA_AXIS)
    return jax.random.key_data(drop)[None], jax.random.key_data(order)[None]

  rng = jax.random.PRNGKey(7)
  fn = jax.shard_map(keys, mesh=mesh, in_specs=P(), out_specs=(P(sharding.DATA_AXIS), P(sharding.DATA_AXIS)),
                     check_vma=False)
  drop, order = jax.device_get(jax.jit(fn)(rng[None]))
  assert drop.shape[0] == order.shape[0] == 8
  np.testing.assert_array_equal(order, np.broadcast_to(np.asarray(jax.random.key_data(rng)), order.shape))
  assert len({tuple(k) for k in drop.reshape(8, -1).tolist()}) == 8
