"""The training input pipeline on grain: one global example sequence per run, each process's slice of it.

Every function here takes the decoded `PipelineSpec` (`dos_jax.batching.spec.pipeline_spec(config)` of a config the
gate, `dos_jax.schema.validate`, accepted); nothing here reads or re-checks the config.

Global example g of a run is a pure function of (spec, seed, g):
  scene of g  = the source's scenes in a fresh permutation per epoch (seeded from (seed, epoch)),
  views of g  = `train_views(scene, spec.batch, rng_g, step=g // batch_size)` with rng_g a Philox Generator keyed
                by (seed, g) (grain `random_map`): every host-side random draw of an example (crop, augmentation,
                mask) comes from it; the step sets the masking warm-up (`BatchSpec.mask_at`).
Pack k builds the window of examples k*W .. k*W + W - 1 (W = data.pack_scenes) and holds the scenes of it that
fill the pack budgets best (`packing.fill_pack`: the fullest of a fixed set of first-fit passes). The global
batch of step t is packs t*G .. t*G + G - 1 (G = batch_size / W packs per step, one or more per device). Process
p of P builds the contiguous block of packs t*G + p*G/P .. t*G + (p+1)*G/P - 1, which is the order
`jax.make_array_from_process_local_data` concatenates process batches in, so the global batch - scenes, packs and
randomness - is the same for every process count, and the step is the whole position of the pipeline (resume =
start at the step; nothing to checkpoint).

Parallelism (`spec.num_workers`, `spec.worker_backend`): 0 workers build each batch in `next()`; 'thread' prefetches
whole step batches in grain read threads; 'process' in grain worker processes (`mp_prefetch`, spawned, each owning
the batches i, i + W, ...; no GIL contention; the source must be picklable).
"""

from __future__ import annotations

import functools
import pickle
from typing import Optional, Sequence

from absl import flags
import grain
import numpy as np

from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs
from dos_jax.batching import train_views
from dos_jax.errors import ConfigError

MAX_EXAMPLES = 2**40


def _stream_seed(seed: int, stream: int) -> int:
  """A 32-bit seed for one random stream of a run (grain wants seeds in [0, 2**32)), hashed from (seed, stream)."""
  return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


class _EpochOrder:
  """g -> the source index of global example g: epoch g // N visits the N scenes in its own permutation.

  Not grain's `shuffle`: its index_shuffle walks a large cycle for small datasets (measured here: 14 ms per element
  at 6 scenes, 3.6 ms at 32 - a tenth of a synthetic_tiny scene's views - and 0.04 ms at 1000), so the order is
  a numpy permutation per epoch, seeded from (seed, epoch), cached (a run reads epochs in order).
  """

  def __init__(self, num_scenes: int, seed: int):
    self._n, self._seed = int(num_scenes), int(seed)
    self._cached = (-1, None)

  def __call__(self, g) -> int:
    epoch, position = divmod(int(g), self._n)
    if self._cached[0] != epoch:
      perm = np.random.default_rng([self._seed, 0, epoch]).permutation(self._n)
      self._cached = (epoch, perm)
    return int(self._cached[1][position])


def scene_order(num_scenes: int, seed: int) -> grain.MapDataset:
  """MapDataset of int: entry g is the source index of global example g (one permutation per epoch).

  MAX_EXAMPLES entries: unbounded for any run, yet finite, because grain's slicing and batching need a length
  that fits an index.
  """
  if num_scenes < 1:
    raise ConfigError("the scene source is empty: the training split has no scenes (check config.data)")
  return grain.MapDataset.range(MAX_EXAMPLES).map(_EpochOrder(num_scenes, seed))


def scene_indices(num_scenes: int, seed: int, examples: Sequence[int]) -> np.ndarray:
  """int64[len(examples)]: the source index of each global example index (what `global_examples` reads)."""
  order = scene_order(num_scenes, seed)
  return np.asarray([order[int(g)] for g in examples], dtype=np.int64)


def _example(indexed, rng: np.random.Generator, spec: spec_lib.BatchSpec, batch_size: int) -> packing.SceneExample:
  index, scene = indexed
  step = index // batch_size  # the step whose batch holds example `index` (the masking warm-up is a function of it)
  stats = {}
  return packing.SceneExample(views=train_views.train_views(scene, spec, rng, stats, step), stats=stats, index=index)


def global_examples(spec: spec_lib.PipelineSpec, source: Sequence) -> grain.MapDataset:
  """MapDataset (unbounded in practice): entry g is global example g, a `packing.SceneExample` (V TrainView pieces
  of scene order[g], its drop counts, and g, which keys its views' drop-path masks: `PointSet.view_id`)."""
  order = scene_order(len(source), spec.seed)
  scenes = grain.MapDataset.range(MAX_EXAMPLES).map(functools.partial(_read_indexed, source, order))
  # Each example keeps its global index: its step (g // batch_size) sets the masking warm-up, and it keys its
  # views' drop-path masks (PointSet.view_id). random_map seeds each example from its position only.
  return scenes.random_map(functools.partial(_example, spec=spec.batch, batch_size=spec.batch_size),
                           seed=_stream_seed(spec.seed, 1))


def pack_members(spec: spec_lib.PipelineSpec, examples, k: int, stats: Optional[dict] = None):
  """The scenes (`packing.SceneExample`s) of global pack k: the budget fill of its window (`packing.fill_pack`)."""
  w = spec.pack.pack_scenes
  return packing.fill_pack(lambda g: examples[g], int(k) * w, spec.pack, stats)


def _pack(k, spec: spec_lib.PipelineSpec, examples):
  return packing.build_pack(pack_members(spec, examples, k), spec.pack)


def _read_indexed(source, order, g):
  return int(g), source[int(order[int(g)])]


def process_batches(spec: spec_lib.PipelineSpec, source: Sequence, process_index: int = 0,
                    process_count: int = 1) -> grain.MapDataset:
  """MapDataset (unbounded in practice): entry t is this process's batch of step t, a TrainBatch with leading axis
  [G/P] (its block of the step's packs).

  Raises ConfigError when the packs of a step do not split over the processes (a runtime count, so not the
  gate's check).
  """
  packs_per_step = spec.packs_per_step
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(f"process {process_index} of {process_count}: expected 0 <= index < count")
  if packs_per_step < 1 or packs_per_step % process_count:
    raise ConfigError(f"config.batch_size={spec.batch_size} / data.pack_scenes={spec.pack.pack_scenes} = "
                      f"{packs_per_step} packs per step must be a positive multiple of the process count "
                      f"{process_count} (each process builds an equal share of every step's packs)")
  local = packs_per_step // process_count
  examples = global_examples(spec, source)
  packs = grain.MapDataset.range(MAX_EXAMPLES // spec.pack.pack_scenes).map(
      functools.partial(_pack, spec=spec, examples=examples))
  # Blocks of `local` consecutive packs: block t*P + p is process p's share of step t.
  blocks = packs.batch(local, drop_remainder=True, batch_fn=patches.stack_tree)
  return blocks[process_index::process_count]


class TrainIterator:
  """Iterator of this process's TrainBatch (its packs) of steps start_step, start_step + 1, ... (grain underneath).

  The batch at step t is a pure function of (spec, source, t) and the process's place (index, count) - see the
  module docstring - so resuming at `start_step=t` reproduces the data exactly and there is no iterator state.
  """

  def __init__(self, spec: spec_lib.PipelineSpec, source: Sequence, start_step: int = 0,
               num_workers: Optional[int] = None, prefetch: Optional[int] = None, process_index: int = 0,
               process_count: int = 1, backend: Optional[str] = None):
    """Args:
      spec: the pipeline (`dos_jax.batching.spec.pipeline_spec(config)`).
      source: a Sequence of Scenes (e.g. `dos_jax.data.catalog.scene_source(config.data, 'train')`).
      start_step: step of the first batch (resume).
      num_workers: background workers (default spec.num_workers); 0 builds batches synchronously in next().
      prefetch: batches built ahead per worker (default spec.prefetch).
      process_index, process_count: this process and the number of processes of the JAX job.
      backend: 'thread' | 'process' (default spec.worker_backend; see the module docstring).
    """
    self._step = int(start_step)
    self._batches = process_batches(spec, source, process_index, process_count)
    workers = int(spec.num_workers if num_workers is None else num_workers)
    prefetch = max(1, int(spec.prefetch if prefetch is None else prefetch))
    backend = backend or spec.worker_backend
    if backend not in spec_lib.WORKER_BACKENDS:
      raise ValueError(f"backend={backend!r}: expected one of {spec_lib.WORKER_BACKENDS}")
    self._iter = None
    if workers > 0:
      remaining = self._batches[self._step:]
      if backend == "thread":
        self._iter = iter(remaining.to_iter_dataset(
            grain.ReadOptions(num_threads=workers, prefetch_buffer_size=prefetch * workers)))
      else:
        try:
          pickle.dumps(source)
        except Exception as e:  # pickle raises several types (PicklingError, AttributeError, TypeError)
          raise ConfigError(f"config.data.worker_backend='process' needs a picklable scene source ({e}); use "
                            "'thread'") from e
        if not flags.FLAGS.is_parsed():
          # grain's workers read its absl flags (defaults are fine); outside an absl app (tests, notebooks,
          # benchmarks) nothing parsed them and mp_prefetch would fail with UnparsedFlagAccessError.
          flags.FLAGS.mark_as_parsed()
        # One read thread per worker process: the processes are the parallelism.
        local = remaining.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        self._iter = iter(local.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)))

  @property
  def step(self) -> int:
    """The step of the next batch `next()` returns."""
    return self._step

  def batch_at(self, step: int) -> structs.TrainBatch:
    """This process's batch of `step` (pure; what the iterator yields at that step)."""
    return self._batches[int(step)]

  def __iter__(self):
    return self

  def __next__(self) -> structs.TrainBatch:
    batch = self.batch_at(self._step) if self._iter is None else next(self._iter)
    self._step += 1
    return batch

  def close(self):
    """Stops the worker threads/processes (grain's iterators clean up on close, not reliably on GC)."""
    if self._iter is not None and hasattr(self._iter, "close"):
      self._iter.close()
    self._iter = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
