"""The distributed step on 8 host CPU devices gives the same loss and params as on 1 device.

tests/conftest.py forces 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8). The 1-device
reference run (3 steps, batch 8) is shared with test_step.py through tests/train/__init__.py.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dos_jax.errors import ConfigError
from dos_jax.train import sharding
from tests import train as helpers

TOL = 1e-5


def _leaves_with_paths(tree_a, tree_b):
  flat_a, _ = jax.tree_util.tree_flatten_with_path(tree_a)
  flat_b = jax.tree.leaves(tree_b)
  assert len(flat_a) == len(flat_b)
  return [jax.tree_util.keystr(p) for p, _ in flat_a], [x for _, x in flat_a], flat_b


def _assert_same_run(losses, state, ref_losses, ref_state):
  np.testing.assert_allclose(losses, ref_losses, rtol=TOL, atol=TOL)
  got = jax.device_get(state)
  # Element-wise |a - b| <= TOL + TOL * |b| (numpy's allclose): 8 devices sum the gradient in another order, and
  # Adam's normalised update turns float32 rounding of near-zero gradients into ~1e-5 absolute moves of O(1) params.
  for name in ("params", "teacher_params", "opt_state"):
    for path, a, b in zip(*_leaves_with_paths(getattr(got, name), getattr(ref_state, name))):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=TOL, atol=TOL,
                                 err_msg=f"{name}{path}")
  assert int(got.step) == int(ref_state.step) == helpers.REF_STEPS


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
              ref_state=ref_state, shardings=sharding.state_sharding(mesh, host_state))


def test_jit_mesh_8_devices_equals_1_device(eight):
  mesh = eight["mesh"]
  global_batch = sharding.shard_batch(eight["batch"], mesh)
  # The batch really is split over the 8 devices: one scene per device.
  leaf = global_batch.student.coord
  assert leaf.sharding.spec == P("data")
  assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}
  step_fn = sharding.jit_train_step(mesh, eight["shardings"])
  losses, state = helpers.run_steps(step_fn, eight["host_state"], eight["batch"], mesh, helpers.REF_STEPS)
  assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == 8
  _assert_same_run(losses, state, eight["ref_losses"], eight["ref_state"])


def test_shard_map_8_devices_equals_1_device(eight):
  mesh = eight["mesh"]
  step_fn = sharding.make_shard_map_step(mesh, eight["shardings"])
  losses, state = helpers.run_steps(step_fn, eight["host_state"], eight["batch"], mesh, helpers.REF_STEPS)
  _assert_same_run(losses, state, eight["ref_losses"], eight["ref_state"])


def test_batch_size_must_divide_over_devices(eight):
  six = jax.tree.map(lambda x: x[:6], eight["batch"])
  with pytest.raises(ConfigError, match="batch_size"):
    sharding.shard_batch(six, eight["mesh"])
  with pytest.raises(ConfigError, match="batch_size"):
    sharding.check_batch_size(6, eight["mesh"])
  with pytest.raises(ConfigError, match="num_devices"):
    sharding.make_mesh(jax.device_count() + 1)
