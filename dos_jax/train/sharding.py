"""Distributing the train step over devices.

Default path (DESIGN.md "Distribution"): one `jax.jit` of the pure `step.train_step` with `NamedSharding`s over a
1-d `Mesh(('data',))`: the batch is sharded on its leading scene axis B, params / teacher / opt state are
replicated, and XLA inserts the gradient all-reduce. The same compiled program runs on one CPU, a multi-GPU host
or a multi-host TPU slice (after `jax.distributed.initialize()`):

  mesh = sharding.make_mesh()
  state = sharding.create_sharded_state(spec, rng, example_batch, mesh)       # spec: dos_jax.specs.StepSpec
  step_fn = sharding.jit_train_step(spec, mesh, sharding.state_sharding(mesh, state))
  state, metrics = step_fn(state, sharding.shard_batch(host_batch, mesh), jax.random.fold_in(state.rng, i))

The variant `make_shard_map_step` shares the loss/update code (`step.cross_device_step`) and writes the collective
out (`lax.pmean` inside `jax.shard_map`). (A legacy `jax.pmap` variant was removed: untested, single-host only,
and superseded by jit + mesh for everything it did.)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dos_jax import specs
from dos_jax.errors import ConfigError
from dos_jax.train import state as state_lib
from dos_jax.train import step as step_lib

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-d mesh ('data',) over the first `num_devices` of `devices` (all of them by default).

  `devices` defaults to `jax.devices()` (this job's global devices); the ahead-of-time compile passes a TPU
  topology's compile-only devices (`dos_jax.train.aot`).
  """
  own = devices is None
  devices = list(jax.devices() if own else devices)
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"num_devices={num_devices}: expected 1..{len(devices)} (devices available)")
    hosts = len({d.process_index for d in devices}) if not own else jax.process_count()
    if hosts > 1 and num_devices != len(devices):
      raise ValueError("num_devices must be all devices in a multi-host run (each host feeds its own devices)")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Shards every batch leaf on its leading (scene) axis over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, P())


def state_sharding(mesh: Mesh, state: Any) -> Any:
  """Sharding pytree for a TrainState (concrete or abstract): everything replicated."""
  rep = replicated(mesh)
  return jax.tree.map(lambda _: rep, state)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Host TrainBatch (numpy, this process's scenes, leading [B_local, ...]) -> global jax.Arrays on the mesh.

  Single host: B_local is the global batch. Multi-host: every process passes its own B_local scenes and the global
  batch is their concatenation in process order (`jax.make_array_from_process_local_data`).
  """
  sharding = batch_sharding(mesh)
  local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  leading = {np.shape(x)[0] for x in jax.tree.leaves(batch)}
  if len(leading) != 1:
    raise ValueError(f"batch leaves disagree on the leading (scene) axis: {sorted(leading)}")
  (b_local,) = leading
  if b_local % local_devices:
    raise ConfigError(f"config.batch_size: this host's {b_local} scenes per step do not split over its "
                      f"{local_devices} devices; use a batch_size that is a multiple of the device count")
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def abstract_state(spec: specs.StepSpec, rng: jax.Array, example_batch: Any, mesh: Mesh) -> Any:
  """The TrainState as `jax.ShapeDtypeStruct`s carrying their shardings, computed without initialising anything.

  What a checkpoint restore fills (`loop`) and what the ahead-of-time compile takes (`dos_jax.train.aot`). The
  example batch only provides shapes (numpy, jax arrays or ShapeDtypeStructs).
  """
  abstract = jax.eval_shape(functools.partial(state_lib.create_train_state, spec), rng, example_batch)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      state_sharding(mesh, abstract))


def abstract_batch(example_batch: Any, mesh: Mesh, copies: int = 1) -> Any:
  """The global batch the step receives, as `jax.ShapeDtypeStruct`s sharded like `shard_batch`'s output.

  `example_batch` is one share (leading axis [b, ...]: a process's scenes, or one device's); the global batch
  stacks `copies` such shares on the leading axis, as `shard_batch` concatenates the processes' batches.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((np.shape(x)[0] * copies,) + tuple(np.shape(x)[1:]),
                                                     x.dtype, sharding=sharding), example_batch)


def create_sharded_state(spec: specs.StepSpec, rng: jax.Array, example_batch: Any, mesh: Mesh
                         ) -> state_lib.TrainState:
  """`state.create_train_state` jitted with replicated `out_shardings` (params born on every device).

  Shardings are inferred once from `jax.eval_shape` of the init (STYLE.md 7); the example batch only provides
  shapes, so a host numpy batch is fine. That the batch splits over the mesh is the gate's check
  (`dos_jax.schema.data_parallel_devices`) and `shard_batch`'s.
  """
  init = functools.partial(state_lib.create_train_state, spec)
  abstract = jax.eval_shape(init, rng, example_batch)
  return jax.jit(init, out_shardings=state_sharding(mesh, abstract))(rng, example_batch)


def jit_train_step(spec: specs.StepSpec, mesh: Mesh, state_shardings: Any) -> Callable:
  """The default distributed step: `jax.jit(step.train_step)` with explicit shardings, donating the state.

  Args:
    spec: the StepSpec (closed over: it fixes the compiled program).
    mesh: from `make_mesh`.
    state_shardings: from `state_sharding(mesh, state)`.

  Returns:
    step_fn(state, global_batch, rng) -> (state, metrics); metrics replicated f32[] scalars.
  """
  rep = replicated(mesh)

  def train_step(state, batch, rng):  # the name of the compiled program (jit_train_step), as before
    # The mesh is in context while tracing: kernels XLA cannot partition (the TPU patch attention,
    # `dos_jax.models.attention`) run per device under it.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return step_lib.train_step(state, batch, rng, spec=spec)

  return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding(mesh), rep),
                 out_shardings=(state_shardings, rep), donate_argnums=0)


def make_shard_map_step(spec: specs.StepSpec, mesh: Mesh, state_shardings: Optional[Any] = None) -> Callable:
  """The same step written per device with `jax.shard_map` and explicit collectives.

  Each device computes the loss and gradients of its B/n scenes; `step.cross_device_step` averages them with
  `lax.pmean`. `check_vma=False` because of a JAX trap: with the default check_vma=True, the gradient of a
  per-device loss w.r.t. replicated params comes out already summed over the axis, and an explicit pmean on top
  would be wrong by a factor n; here the collective is written out once, explicitly.

  Returns:
    step_fn(state, global_batch, rng) -> (state, metrics), jitted, donating the state.
  """
  body = functools.partial(step_lib.cross_device_step, axis_name=DATA_AXIS, spec=spec)
  mapped = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()), out_specs=(P(), P()),
                         check_vma=False)
  rep = replicated(mesh)
  if state_shardings is None:
    return jax.jit(mapped, donate_argnums=0)
  return jax.jit(mapped, in_shardings=(state_shardings, batch_sharding(mesh), rep),
                 out_shardings=(state_shardings, rep), donate_argnums=0)
