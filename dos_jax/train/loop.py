"""The training loop: `train_and_evaluate(config, workdir)`, the only function with side effects.

Order of operations (each step fails early and clearly, before anything expensive):
  1. the gate `schema.validate` (ConfigError naming the key; returns the effective config, which the run uses
     and records) and the mesh over the data-parallel devices, before any compile;
  2. `prepare_workdir`: a usable workdir whose checkpoints (if any) belong to this config; config.json recorded;
  3. start step = latest checkpoint's step (0 without one); the data iterator starts there (batches are a pure
     function of (config, seed, step) and each process builds its slice, so the step is the iterator's whole
     position, on any number of processes);
  4. state: restored from the latest checkpoint into the abstract state of this config, or freshly initialised;
  5. one jitted step (`sharding.jit_train_step`), per-step key `fold_in(state.rng, step)`;
  6. per step: non-finite guard (`config.nonfinite`), clu metric averaging, progress bar; every `log_every`
     steps metrics to DIR/metrics.jsonl + TensorBoard, with the scalars of the in-training evaluators that are due
     (`config.evals`, process 0; DIR/eval_curve.png at the end); every `checkpoint_every` steps a checkpoint; SIGTERM ->
     checkpoint at the end of the current step and return (exit 0); at the end a final checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Dict, Optional

from absl import logging
import clu.metrics
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from dos_jax import checkpoint
from dos_jax import schema
from dos_jax import specs
from dos_jax.batching import pipeline
from dos_jax.batching import spec as batch_spec_lib
from dos_jax.data import catalog
from dos_jax.eval import evaluators
from dos_jax.train import sharding
from dos_jax.train import workdir_lock
from dos_jax.train import writers


# How long the processes of a multi-host job wait for each other's step compile (seconds).
COMPILE_BARRIER_TIMEOUT_S = 3600


class NonFiniteError(FloatingPointError):
  """Raised under config.nonfinite='stop' when a step's loss or gradient is not finite."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns.

  Attributes:
    state: the final TrainState (on the mesh).
    metrics: the last logged metrics (averages over the last log interval), Python floats.
    step: steps completed (== state.step).
    preempted: True when the run stopped before total_steps (SIGTERM, Ctrl-C, a multi-host preemption notice,
      stop_at).
    seconds: wall time of this process's step loop (the first step's compile included).
  """

  state: Any
  metrics: Dict[str, float]
  step: int
  preempted: bool
  seconds: float = 0.0


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when the environment describes a multi-process job.

  The launch scripts set DOS_MULTIHOST=1 (`launch/slurm_gpu.sh`, `launch/tpu_pod.sh`); JAX then finds the
  coordinator, process count and id itself on SLURM and Cloud TPU, or from JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID when those are set. Must run before any other JAX call.
  """
  if os.environ.get("DOS_MULTIHOST", "").lower() not in ("1", "true", "yes"):
    return False
  kwargs = {}
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
  if os.environ.get("JAX_NUM_PROCESSES"):
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if os.environ.get("JAX_PROCESS_ID"):
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


@flax.struct.dataclass
class _FiniteAverage(clu.metrics.Average):
  """clu Average over the steps where the value is finite: a skipped (non-finite) step does not turn the
  interval's loss into NaN, while always-finite values (lr, temperatures) keep being reported."""

  @classmethod
  def from_model_output(cls, values: jax.Array, mask=None, **_) -> "_FiniteAverage":
    del mask
    finite = jnp.isfinite(values)
    return cls(total=jnp.where(finite, values, 0.0).sum(), count=finite.sum().astype(jnp.int32))


class _Interval:
  """Metrics between two log steps: clu averages of the step's scalars (finite values only) and the throughput.
  Metric names are known after the first step, then one jitted merge serves every step."""

  def __init__(self):
    self._collection = None
    self._merge = None
    self._acc = None
    self._reset()

  def _reset(self):
    self._start, self._steps, self._points = time.perf_counter(), 0, 0
    if self._collection is not None:
      self._acc = self._collection.empty()

  def add(self, metrics: Dict[str, jax.Array], num_points: int) -> None:
    if self._collection is None:
      collection = clu.metrics.Collection.create(**{n: _FiniteAverage.from_output(n) for n in sorted(metrics)})
      self._collection = collection
      self._merge = jax.jit(lambda acc, m: acc.merge(collection.single_from_model_output(**m)))
      self._acc = collection.empty()
    self._acc = self._merge(self._acc, metrics)
    self._steps += 1
    self._points += num_points

  def restart_clock(self) -> None:
    """Time spent outside the steps since the last flush (an in-training evaluation) leaves the rates alone."""
    self._start = time.perf_counter()

  def flush(self, nonfinite_count: int) -> Dict[str, float]:
    """Averages since the last flush, plus steps/s, points/s (all hosts) and the run's skipped-step count."""
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    out = {k: float(v) for k, v in jax.device_get(self._acc.compute()).items()}
    out.pop("nonfinite", None)  # the run's count below is the useful number
    out.update(steps_per_sec=self._steps / elapsed, interval_seconds=elapsed,  # wall time since the last row
               points_per_sec=self._points * jax.process_count() / elapsed,  # hosts hold equal shares
               nonfinite_count=float(nonfinite_count))
    self._reset()
    return out


def _init_or_restore(spec: specs.StepSpec, seed: int, mesh, ckpt: checkpoint.Checkpointer, example_batch,
                     start_step: int):
  """(state, step): a fresh state at step 0, or the newest checkpoint that restores, with this spec's shardings.

  The step is below `start_step` (the newest checkpoint's) when that one is damaged (`restore_newest_intact`).
  """
  rng = jax.random.PRNGKey(seed)
  if not start_step:
    return sharding.create_sharded_state(spec, rng, example_batch, mesh), 0
  step, state = ckpt.restore_newest_intact(sharding.abstract_state(spec, rng, example_batch, mesh))
  return state, step


def _compile_then_sync(step_fn, state, batch, mesh):
  """Multi-host: the step compiled ahead of time, returned once EVERY process has compiled it.

  CPU collectives (gloo) give the peers of the first all-reduce 30 s to join; processes whose compiles end minutes
  apart (a loaded host, a compile cache warm on one host only) then fail with "Gloo context initialization
  failed". The coordination-service barrier waits as long as compiles take; on TPU/GPU it costs nothing.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (loaded by the Checkpointer already)
  example = sharding.shard_batch(batch, mesh)
  compiled = step_fn.lower(state, example, jax.random.fold_in(state.rng, 0)).compile()
  ocp.multihost.sync_global_processes("dos_jax_train_step_compiled", timeout=COMPILE_BARRIER_TIMEOUT_S)
  return compiled


def _num_points(batch) -> int:
  """Real teacher points in a host batch (the points/s of the progress bar)."""
  return int(np.asarray(batch.teacher.valid).sum())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stop_at: Optional[int] = None
                       ) -> TrainResult:
  """Pretrains with DOS per `config`, writing checkpoints and metrics under `workdir`; resumes automatically.

  Args:
    config: experiment config (`configs/*.py`), validated here.
    workdir: run directory (its parent must exist).
    stop_at: stop once this many steps are done, with a checkpoint, exactly as a preemption would (for
      time-sliced schedulers and resume tests); the schedules still span `config.total_steps`.

  Raises:
    ConfigError: bad config or unusable workdir (before anything compiles).
    WorkdirBusyError: another live run holds the workdir (`workdir_lock`; taken by process 0).
    DataError: bad input data.
    NonFiniteError: a non-finite loss/gradient under config.nonfinite='stop' (names the step).
  """
  config = schema.validate(config)  # the effective config: what the run uses and DIR/config.json records
  mesh = sharding.make_mesh(schema.data_parallel_devices(config, jax.device_count()))
  is_chief = jax.process_index() == 0
  checkpoint.prepare_workdir(workdir, config, write=False)
  lock = hold_workdir(workdir, is_chief)  # before anything is written: one writer per workdir
  try:
    return _train(config, workdir, mesh, is_chief, stop_at)
  finally:
    if lock is not None:
      lock.release()


def hold_workdir(workdir: str, is_chief: bool) -> Optional[workdir_lock.WorkdirLock]:
  """Process 0 takes the workdir lock (one per job); every process learns whether it got it.

  Returns the held lock on process 0 (None elsewhere). Raises WorkdirBusyError on every process when the workdir
  belongs to another live run, so no host of the job is left waiting in a collective.
  """
  lock, error = None, None
  if is_chief:
    try:
      lock = workdir_lock.WorkdirLock(workdir).acquire()
    except workdir_lock.WorkdirBusyError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None and is_chief)))
    if not held and error is None:
      error = workdir_lock.WorkdirBusyError(
          f"process 0 could not take the workdir lock of {workdir} (its log names the holder)")
  if error is not None:
    raise error
  return lock


def _train(config, workdir, mesh, is_chief, stop_at) -> TrainResult:
  """`train_and_evaluate` once the workdir is held: records the config, restores or initialises, runs."""
  checkpoint.prepare_workdir(workdir, config, write=is_chief)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
  start_step = ckpt.latest_step() or 0
  total = int(config.total_steps)
  spec = specs.step_spec(config)  # what the step computes with (the seed and the data location are not in it)
  source = catalog.scene_source(config.data, "train")
  data_spec = batch_spec_lib.pipeline_spec(config)

  def batches_from(step):
    return pipeline.TrainIterator(data_spec, source, start_step=step, process_index=jax.process_index(),
                                  process_count=jax.process_count())

  batches, writer = batches_from(start_step), None
  # Multi-host: JAX's preemption service owns SIGTERM and makes all hosts agree on the step (`reached_preemption`);
  # a Python handler here would replace its handler and let hosts stop at different steps. Single host: installed
  # before the (long) compile, so a notice that arrives during start-up still ends in a clean exit. A first Ctrl-C
  # (SIGINT) is a notice too; a second one quits at once (checkpoint.PreemptionFlag).
  signals = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else ()
  with checkpoint.PreemptionFlag(signals, on_signal=_say_stopping) as preemption:
    try:
      batch = next(batches)
      state, restored_step = _init_or_restore(spec, int(config.seed), mesh, ckpt, batch, start_step)
      if restored_step != start_step:  # the newest checkpoint was damaged: the data restarts at the older step
        batches.close()
        start_step = restored_step
        batches = batches_from(start_step)
        batch = next(batches)
      writer = writers.MetricWriter(workdir, enabled=is_chief, start_step=start_step)
      logging.info("workdir %s: %s at step %d of %d", workdir, "resuming" if start_step else "starting",
                   start_step, total)
      step_fn = sharding.jit_train_step(spec, mesh, sharding.state_sharding(mesh, state))
      if jax.process_count() > 1:
        step_fn = _compile_then_sync(step_fn, state, batch, mesh)
      if is_chief and not start_step:
        writer.write_hparams(dict(schema.flatten(config)))
      end = total if stop_at is None else min(total, int(stop_at))
      evaluate = _Evals(config, workdir) if is_chief else None  # in-training evaluators: process 0 runs them
      result = _run(config, state, step_fn, batch, batches, mesh, ckpt, writer, preemption, start_step, total, end,
                    is_chief, evaluate)
      if evaluate is not None:
        evaluate.finish(writer)
      ckpt.wait_until_finished()
      return result
    finally:
      batches.close()
      if writer is not None:
        writer.close()
      ckpt.close()


class _Evals:
  """The in-training evaluators of config.evals (`dos_jax.eval.evaluators`), run on process 0 after the steps
  they are due at; their scalars join that step's metrics (JSONL, TensorBoard) and one console line."""

  def __init__(self, config, workdir: str):
    self._config, self._workdir = config, workdir
    self._evaluators = evaluators.from_config(config)
    self.ran = False

  def due(self, step: int, total: int) -> bool:
    return any(e.due(step, total) for e in self._evaluators)

  def __call__(self, params, step: int, total: int) -> Dict[str, float]:
    out = {}
    for e in self._evaluators:
      if e.due(step, total):
        start = time.perf_counter()
        out.update(evaluators.run(e, self._config, params, self._workdir, step))
        out[f"eval/{e.name}/seconds"] = time.perf_counter() - start
        self.ran = True
    return out

  def finish(self, writer) -> None:
    """The probe curve over training (DIR/eval_curve.png), when the linear probe ran."""
    if self.ran and any(e.name == "linear_probe" for e in self._evaluators):
      writer.flush()
      evaluators.plot_curve(os.path.join(self._workdir, writers.METRICS_FILE),
                            os.path.join(self._workdir, evaluators.CURVE_FILE))


def eval_summary(scores: Dict[str, float]) -> str:
  """One short console line of in-training evaluation scalars `eval/<name>/<metric>`: per evaluator its mIoU
  (head/common/tail) as percentages, else its effective prototypes; the rest is in metrics.jsonl / TensorBoard."""
  names = sorted({k.split("/")[1] for k in scores if k.startswith("eval/") and k.count("/") >= 2})
  parts = []
  for name in names:
    get = lambda m, name=name: scores.get(f"eval/{name}/{m}")  # noqa: E731
    if get("miou") is not None:
      groups = ", ".join(f"{g} {100 * get(g):.1f}" for g in ("head", "common", "tail")
                         if get(g) is not None and get(g) == get(g))
      parts.append(f"{name} mIoU {100 * get('miou'):.1f}" + (f" ({groups})" if groups else ""))
    elif get("effective_prototypes") is not None:
      parts.append(f"{name} effective prototypes {get('effective_prototypes'):.1f}")
  return "; ".join(parts) or "evaluated"


def _say_stopping(signum: int) -> None:
  """One line at once when Ctrl-C asks for a stop (the step in progress, maybe the first step's compile, ends
  first; a SIGTERM is reported when the loop sees it, as a multi-host notice is)."""
  if signum == signal.SIGINT:
    logging.warning("Ctrl-C: stopping after the current step, with a checkpoint of it (Ctrl-C again quits at once, "
                    "without it)")


def _run(config, state, step_fn, batch, batches, mesh, ckpt, writer, preemption, start_step, total, end, is_chief,
         evaluate=None) -> TrainResult:
  """The step loop proper (see the module docstring for what happens each step).

  Console (process 0): one line before the first step of the process, which compiles the step (tens of seconds
  on a CPU), then a progress bar that starts after it, so its rate and ETA are those of the compiled step; the
  logged metrics go to the bar's postfix, DIR/metrics.jsonl and TensorBoard.
  """
  interval = _Interval()
  view_spec = batch_spec_lib.batch_spec(config)  # the masking warm-up, logged beside the step's metrics
  logged: Dict[str, float] = {}
  preempted = False
  step = start_step
  started = time.perf_counter()
  bar = None
  try:
    while step < end:
      if preemption.is_set() or (step > start_step and ckpt.reached_preemption(step)):
        if preemption.signum != signal.SIGINT:  # (Ctrl-C was answered at once by _say_stopping)
          logging.warning("preemption notice: stopping at step %d (with a checkpoint of it)", step)
        preempted = True
        break
      if batch is None:
        batch = next(batches)
      num_points = _num_points(batch)
      rng = jax.random.fold_in(state.rng, step)
      if bar is None and is_chief:
        logging.info("step %d compiles the training step first (the progress bar starts after it)", step + 1)
      state, metrics = step_fn(state, sharding.shard_batch(batch, mesh), rng)
      batch = None
      interval.add(metrics, num_points)
      if config.nonfinite == "stop" and float(jax.device_get(metrics["nonfinite"])):
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} (loss={float(jax.device_get(metrics['loss']))}); "
            f"config.nonfinite='stop'. The last checkpoint is step {ckpt.latest_step()}. Set "
            "--config.nonfinite=skip to skip such steps, or lower --config.optim.lr.")
      step += 1
      if bar is None:
        jax.block_until_ready(metrics)
        if is_chief:
          logging.info("step %d done in %.0f s", step, time.perf_counter() - started)
        bar = tqdm.tqdm(total=total, initial=step, unit="step", disable=not is_chief, dynamic_ncols=True,
                        mininterval=1.0)
      else:
        bar.update(1)
      eval_due = evaluate is not None and evaluate.due(step, total)
      if step % config.log_every == 0 or step == total or eval_due:
        logged = interval.flush(int(jax.device_get(state.nonfinite_count)))
        logged["mask_ratio_target"], logged["mask_cell"] = view_spec.mask_at(step - 1)
        if eval_due:
          scores = evaluate(state.params, step, total)
          logged.update(scores)
          interval.restart_clock()
          logging.info("step %d: %s", step, eval_summary(scores))
        writer.write_scalars(step, logged)
        bar.set_postfix(loss=f"{logged.get('loss', float('nan')):.3f}",
                        prototypes=f"{logged.get('effective_prototypes', float('nan')):.0f}",
                        pts_s=f"{logged['points_per_sec']:.0f}", refresh=False)
      ckpt.maybe_save(step, state)
  finally:
    if bar is not None:
      bar.close()
  if step > start_step:  # else nothing new: the latest checkpoint (or the deterministic init) is this state
    ckpt.save(step, state)
  writer.flush()
  return TrainResult(state=state, metrics=logged, step=step, preempted=preempted or step < total,
                     seconds=time.perf_counter() - started)
