r"""Pretrain with DOS: `python -m launch.train --config configs/<name>.py --workdir DIR [--config.key=value ...]`.

Writes orbax checkpoints to DIR/checkpoints/, metrics to DIR/metrics.jsonl and TensorBoard events to DIR, and
resumes from the latest checkpoint in DIR. SIGTERM (preemption) or a first Ctrl-C saves a checkpoint of the current
step and exits 0; a second Ctrl-C quits at once. Exit codes: 0 done or stopped with a checkpoint, 1 a non-finite
loss under --config.nonfinite=stop (one line naming the step), 2 a bad command line, config, data or workdir, or
no restorable checkpoint (one line on stderr), 3 the workdir is held by another live run (DIR/lock.json; the line
names its host, pid and start). Examples:

  python -m launch.train --config configs/synthetic_tiny.py --workdir /tmp/dos_tiny
  python -m launch.train --config configs/scannet.py --workdir /ckpt/scannet --config.data.root=/data/scannet
  python -m launch.train --config configs/synthetic_tiny.py:smoke --workdir /tmp/smoke --config.zipf_alpha=1.6
  python -m launch.train --config configs/synthetic_tiny.py --workdir /tmp/dos_tiny --stop_at=100  # then resume

Multi-host (SLURM GPUs, TPU pod slices): see launch/slurm_gpu.sh and launch/tpu_pod.sh; they set
DOS_MULTIHOST=1 so that `jax.distributed.initialize()` runs before anything else. Every process runs this same
command on the same --workdir (a shared filesystem); the global batch and the losses do not depend on the number
of processes (docs/design.md "Multi-host"). Two processes on one machine, to try it:

  for i in 0 1; do DOS_MULTIHOST=1 JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
    JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    python -m launch.train --config configs/synthetic_tiny.py --workdir /tmp/dos_2proc --config.batch_size=8 & done; wait
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dos_jax import checkpoint
from dos_jax import schema
from dos_jax.errors import ConfigError, DataError
from dos_jax.train import workdir_lock
from launch import cli
from launch import console

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/synthetic_tiny.py[:smoke].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard events.")
_STOP_AT = flags.DEFINE_integer(
    "stop_at", None, "Stop (with a checkpoint, exit 0) once this many steps are done, as a preemption would; the "
    "schedules still span config.total_steps. For time-sliced schedulers; rerun without it to continue.", lower_bound=1)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    # A bad config or workdir fails in a second, before JAX, the model and the data are even imported.
    config = schema.validate(_CONFIG.value)  # the gate; the effective config is what the run records
    checkpoint.prepare_workdir(_WORKDIR.value, config, write=False)  # the loop records the config
    # Imported here so that `--help` and flag errors are instant, and so jax.distributed starts before JAX is used.
    from dos_jax.train import loop  # pylint: disable=g-import-not-at-top
    loop.maybe_initialize_distributed()
    result = loop.train_and_evaluate(config, _WORKDIR.value, stop_at=_STOP_AT.value)
  except (ConfigError, DataError) as e:
    # Bad input is the user's to fix: one clear line, no traceback through JAX.
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 2
  except workdir_lock.WorkdirBusyError as e:
    # Another live run owns the workdir (a resubmitted job while the old one runs): refuse, name the holder.
    print(f"WorkdirBusyError: {e}", file=sys.stderr)
    return 3
  except FloatingPointError as e:  # loop.NonFiniteError under config.nonfinite='stop': names the step and the fix
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # Ctrl-C before the loop took over SIGINT (start-up), or raised by a worker
    print("interrupted: stopped without a new checkpoint (rerun the same command to resume from the last one)",
          file=sys.stderr)
    return 130
  print(result_line(result, config, _WORKDIR.value), flush=True)
  return 0


def _duration(seconds: float) -> str:
  minutes, secs = divmod(int(round(seconds)), 60)
  return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def result_line(result, config, workdir: str) -> str:
  """The run's last console line: how it ended, the final logged loss and prototype usage, where things are."""
  total = int(config.total_steps)
  if result.preempted:
    head = f"stopped at step {result.step} of {total} with a checkpoint (rerun the same command to resume)"
  else:
    head = f"done: {result.step} steps"
  parts = [f"{head} in {_duration(result.seconds)}"]
  m = result.metrics
  if "loss" in m:
    parts.append(f"loss {float(m['loss']):.3f}")
  if "effective_prototypes" in m:
    parts.append(f"effective prototypes {float(m['effective_prototypes']):.0f} of {int(config.num_prototypes)}")
  parts.append(f"checkpoints in {os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}")
  parts.append(f"curves: tensorboard --logdir {workdir}")
  return "; ".join(parts)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  console.quiet_libraries()  # JAX's backend probe and orbax's per-save INFO lines stay off the console
  console.route_absl_through_tqdm()  # step logs above the progress bar, not spliced into it
  app.run(main, flags_parser=cli.parse_flags)  # a bad command line: one line, exit 2
