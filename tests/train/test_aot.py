"""dos_jax.train.aot on CPU devices (no libtpu): the ahead-of-time step is exactly the training loop's step, and
the max-batch search finds the boundary of any monotone `fits`."""

import jax
import pytest

from configs import synthetic_tiny
from dos_jax import schema
from dos_jax import specs
from dos_jax.batching import pipeline
from dos_jax.batching import spec as spec_lib
from dos_jax.data import catalog
from dos_jax.errors import ConfigError
from dos_jax.train import aot
from dos_jax.train import sharding


def _config(packed: bool):
  cfg = synthetic_tiny.get_config("smoke")
  cfg.batch_size, cfg.data.capacity, cfg.data.student_capacity = 4, 512, 256
  if packed:  # calibrated-style budgets; otherwise () = the per-view capacities (both are packs)
    cfg.data.pack_scenes = 1
    cfg.data.packed_capacity, cfg.data.packed_student_capacity = (1024, 512, 256), (512, 256, 128)
  return schema.validate(cfg)


def _loop_lowering(cfg, mesh):
  """What `dos_jax.train.loop` builds for step 0: the pipeline's real batch, the initialised state, the step."""
  batch = pipeline.process_batches(spec_lib.pipeline_spec(cfg), catalog.scene_source(cfg.data, "train"))[0]
  spec = specs.step_spec(cfg)
  state = sharding.create_sharded_state(spec, jax.random.PRNGKey(int(cfg.seed)), batch, mesh)
  step_fn = sharding.jit_train_step(spec, mesh, sharding.state_sharding(mesh, state))
  return step_fn.lower(state, sharding.shard_batch(batch, mesh), jax.random.fold_in(state.rng, 0))


@pytest.mark.system
@pytest.mark.parametrize("packed", [False, True])
def test_lowered_step_is_the_training_loops(packed):
  """The abstract-input lowering (synthetic example of one device, scaled to the mesh) is the same program text,
  argument shapes, shardings and donation as the loop's lowering with real data and an initialised state."""
  cfg = _config(packed)
  devices = jax.devices()[:4]
  lowered, info = aot.lower_train_step(cfg, devices)
  assert (info.devices, info.devices_per_chip, info.hosts, info.scenes_per_device) == (4, 1, 1, 1)
  want = _loop_lowering(cfg, sharding.make_mesh(4, devices))
  assert lowered.as_text() == want.as_text()
  assert "tf.aliasing_output" in lowered.as_text()  # the state is donated
  info_of = lambda lw: jax.tree.map(lambda a: (a.shape, a.dtype, a.donated), lw.args_info)  # noqa: E731
  assert info_of(lowered) == info_of(want)
  assert all(a.donated for a in jax.tree.leaves(lowered.args_info[0][0]))  # the state argument


def test_batch_must_split_over_the_devices():
  cfg = _config(packed=False)
  cfg.batch_size = 6
  with pytest.raises(ConfigError, match="batch_size=6"):
    aot.lower_train_step(cfg, jax.devices()[:4])
  packed = _config(packed=True)
  packed.batch_size, packed.data.pack_scenes = 8, 4  # 2 scenes per device cannot make packs of 4
  with pytest.raises(ConfigError, match="pack_scenes=4"):
    aot.lower_train_step(packed, jax.devices()[:4])


def test_batch_unit_and_scaling():
  cfg = _config(packed=True)
  assert aot.batch_unit(cfg) == 1 and aot.batch_unit(_config(packed=False)) == 1
  cfg.data.pack_scenes = 2
  assert aot.batch_unit(cfg) == 2
  assert aot.with_scenes_per_device(cfg, 6, 4).batch_size == 24 and cfg.batch_size == 4


@pytest.mark.parametrize("start", [1, 2, 3, 7, 16, 50])
def test_max_batch_search_finds_the_boundary(start):
  for boundary in list(range(0, 40)) + [1023, 1024]:
    calls = []

    def fits(k, boundary=boundary):
      calls.append(k)
      return k <= boundary

    assert aot.max_batch(fits, start, limit=1024) == boundary
    assert len(calls) == len(set(calls)) and len(calls) <= 2 * 11 + 2  # O(log) compiles, none repeated


def test_devices_per_chip_from_coordinates():
  class D:
    def __init__(self, i, coords):
      self.id, self.coords = i, coords

  assert aot.devices_per_chip([D(i, [i // 2, 0, 0]) for i in range(8)]) == 2
  assert aot.devices_per_chip([D(i, [i, 0, 0]) for i in range(4)]) == 1
  assert aot.devices_per_chip(jax.devices()[:2]) == 1
