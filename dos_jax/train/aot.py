"""The training step compiled ahead of time for a TPU topology, on a machine without a TPU (libtpu's compiler).

  devices = aot.topology_devices("v5e:2x2")                 # compile-only TPU devices (needs libtpu)
  result = aot.compile_train_step(config, devices)          # config: a validated experiment config
  report = compile_report.build(result.compiled, ...)       # memory, cost, roofline, op counts

What compiles is exactly what `dos_jax.train.loop` runs: `sharding.jit_train_step` (the same jitted
`step.train_step`, shardings and state donation) over `sharding.make_mesh` on the topology's devices, with the
StepSpec of the config, the abstract state `sharding.abstract_state` builds for a checkpoint restore, and a batch
whose shapes come from the training pipeline itself (`pipeline.process_batches`: views, packing) run on a few
synthetic scenes of the config's data kind. The shapes of a batch are fixed by the config (capacities, packed
sizes, scenes per device), never by the scenes, so no dataset is needed.

Processes must start JAX on the CPU (`dos_jax.compile_only.use_compile_only_tpu()` before JAX is imported):
the topology's devices are compile-only, and nothing here runs on them. libtpu and
`jax.experimental.topologies` are imported inside `topology_devices` only, so importing this module costs nothing
on a machine without libtpu.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from typing import Any, Callable, List, Sequence, Tuple

import jax
import ml_collections

from dos_jax import compile_report
from dos_jax import schema
from dos_jax import specs
from dos_jax.batching import pipeline
from dos_jax.batching import spec as batch_spec_lib
from dos_jax.data import sources
from dos_jax.errors import ConfigError
from dos_jax.train import sharding


class CompilerUnavailableError(RuntimeError):
  """libtpu (the TPU compiler) is not installed in this Python environment."""


class OutOfMemoryError(RuntimeError):
  """The TPU compiler refused the program: it does not fit the chip's HBM (its message says by how much)."""


@dataclasses.dataclass
class CompiledStep:
  """A compiled train step and what it was compiled for.

  Attributes:
    compiled: the `jax.stages.Compiled` step.
    seconds: wall-clock seconds of lower + compile.
    devices: devices of the mesh.
    devices_per_chip: devices the topology gives each chip (v4 TensorCores: 2).
    hosts: processes (TPU VM hosts) the devices belong to.
    scenes_per_step: the global batch (config.batch_size).
    scenes_per_device: config.batch_size / devices.
  """
  compiled: Any
  seconds: float
  devices: int
  devices_per_chip: int
  hosts: int
  scenes_per_step: int
  scenes_per_device: int

  def report(self, chip: compile_report.Chip, hlo_text: Any = None, **extra) -> dict:
    """`compile_report.build` of this compiled step for `chip`, with `extra` top-level keys (config, topology)
    first, then hosts, scenes per device and the compile seconds."""
    keys = dict(extra, hosts=self.hosts, scenes_per_device=self.scenes_per_device,
                compile_seconds=round(self.seconds, 1))
    return compile_report.build(self.compiled, chip, devices=self.devices, devices_per_chip=self.devices_per_chip,
                                scenes_per_step=self.scenes_per_step, hlo_text=hlo_text, **keys)


def libtpu_installed() -> bool:
  """Whether this Python can import libtpu (looked up, not imported)."""
  try:
    return importlib.util.find_spec("libtpu") is not None
  except (ImportError, ValueError):
    return False


def topology_devices(name: str) -> List[Any]:
  """Compile-only devices of the TPU topology `name` as libtpu spells it ('v5e:2x2', 'v5p:4x4x4', 'v4:2x2x1').

  Raises:
    CompilerUnavailableError: libtpu is not installed (README "Before you rent a pod" installs it).
    ConfigError: libtpu does not accept the name (its reason included).
  """
  if not libtpu_installed():
    raise CompilerUnavailableError(
        "libtpu (the TPU compiler) is not installed in this Python; make a separate environment with "
        "`python -m venv VENV && VENV/bin/pip install -r requirements-tpu.txt` (README 'Before you rent a pod')")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top  (loads libtpu)
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=str(name)).devices)
  except Exception as e:  # libtpu raises JaxRuntimeError(INVALID_ARGUMENT ...) with the reason
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"--topology={name!r}: libtpu does not accept it ({reason}); names look like v5e:2x2, "
                      "v5e:4x4, v5p:2x2x1, v5p:4x4x4, v4:2x2x1, v6e:2x2") from e


def devices_per_chip(devices: Sequence[Any]) -> int:
  """Devices per chip: devices over distinct chip coordinates (1 when the devices carry no coordinates)."""
  coords = {tuple(getattr(d, "coords", None) or (d.id,)) for d in devices}
  return max(1, len(devices) // max(1, len(coords)))


def example_batch(config: ml_collections.ConfigDict, scenes: int) -> Any:
  """One device's share of a training batch (numpy; only its shapes are used): `scenes` synthetic scenes of
  `config.data.kind` through the training pipeline of the config (views, then packs of data.pack_scenes windows).

  Returns a TrainBatch with leading [scenes / data.pack_scenes] packs (its shapes are the budgets': the fill
  does not change them).
  """
  spec = dataclasses.replace(batch_spec_lib.pipeline_spec(config), batch_size=int(scenes), num_workers=0)
  source = sources.synthetic_source(str(config.data.kind), num_scenes=int(scenes), split="train", seed=0)
  return pipeline.process_batches(spec, source)[0]


def _is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "out of memory" in text.lower()


def lower_train_step(config: ml_collections.ConfigDict, devices: Sequence[Any]) -> Tuple[Any, CompiledStep]:
  """The training step of a validated `config` lowered for `devices` (e.g. `topology_devices(name)`), with
  abstract inputs: (jax.stages.Lowered, a CompiledStep without `compiled` and `seconds`).

  Raises:
    ConfigError: batch_size (or num_devices / pack_scenes) does not split over the devices.
  """
  n = schema.data_parallel_devices(config, len(devices))  # the gate's check: batch_size splits over the mesh
  mesh = sharding.make_mesh(n, devices)
  per_device = int(config.batch_size) // n
  example = example_batch(config, per_device)
  spec = specs.step_spec(config)
  rng = jax.random.PRNGKey(int(config.seed))
  state = sharding.abstract_state(spec, rng, example, mesh)
  batch = sharding.abstract_batch(example, mesh, copies=n)
  key = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=sharding.replicated(mesh))
  step_fn = sharding.jit_train_step(spec, mesh, sharding.state_sharding(mesh, state))
  used = list(mesh.devices.flat)
  info = CompiledStep(compiled=None, seconds=0.0, devices=n, devices_per_chip=devices_per_chip(used),
                      hosts=len({d.process_index for d in used}), scenes_per_step=int(config.batch_size),
                      scenes_per_device=per_device)
  return step_fn.lower(state, batch, key), info


def compile_train_step(config: ml_collections.ConfigDict, devices: Sequence[Any]) -> CompiledStep:
  """`lower_train_step`, compiled (the seconds include lowering).

  Raises:
    ConfigError: as `lower_train_step`.
    OutOfMemoryError: the compiler refused the program for lack of HBM.
  """
  t0 = time.perf_counter()
  lowered, info = lower_train_step(config, devices)
  try:
    info.compiled = lowered.compile()
  except Exception as e:  # XLA reports a program over HBM as a compile error (RESOURCE_EXHAUSTED)
    if _is_out_of_memory(e):
      raise OutOfMemoryError(str(e).strip().splitlines()[0][:500]) from e
    raise
  info.seconds = time.perf_counter() - t0
  return info


def batch_unit(config: ml_collections.ConfigDict) -> int:
  """The step of the per-device batch: one more pack (a window of data.pack_scenes scenes)."""
  return int(config.data.pack_scenes)


def with_scenes_per_device(config: ml_collections.ConfigDict, scenes: int, devices: int
                           ) -> ml_collections.ConfigDict:
  """A copy of `config` whose batch_size gives `scenes` scenes to each of `devices` devices."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.batch_size = int(scenes) * int(devices)
  return out


def max_batch(fits: Callable[[int], bool], start: int, limit: int = 1024) -> int:
  """The largest k in [1, limit] with fits(k), for a monotone `fits` (True up to some k, False above), found by
  doubling (or halving) from `start` and then bisecting; 0 when fits(1) is False. Each call is a compile, so the
  search asks O(log k) of them.
  """
  start = max(1, min(int(start), limit))
  if fits(start):
    lo, hi = start, None
    while hi is None:
      nxt = min(lo * 2, limit)
      if nxt == lo:
        return lo
      if fits(nxt):
        lo = nxt
      else:
        hi = nxt
  else:
    hi, lo = start, 0
    while hi > 1:
      nxt = hi // 2
      if fits(nxt):
        lo = nxt
        break
      hi = nxt
    if lo == 0:
      return 0
  while hi - lo > 1:  # fits(lo), not fits(hi)
    mid = (lo + hi) // 2
    if fits(mid):
      lo = mid
    else:
      hi = mid
  return lo


def unit_count(config: ml_collections.ConfigDict, devices: int) -> int:
  """Per-device batch of `config` in `batch_unit`s (at least 1)."""
  return max(1, int(config.batch_size) // int(devices) // batch_unit(config))

