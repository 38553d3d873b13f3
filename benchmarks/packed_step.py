r"""Train step on CPU: the same scenes one per pack at their per-view capacities vs budget-filled packs; memory.

  python benchmarks/packed_step.py --config configs/scannet.py --config.model.variant=tiny \
      --config.data.packed_capacity='(...)' ... [--steps 3] [--split heldout]

The packs of step `--first_step` come from the training pipeline (`pipeline.process_batches`: budget-filled
windows of data.pack_scenes examples); the per-view layout puts each of the same scenes in its own pack at its
per-view capacities (`spec.default_budgets` of one scene: what a per-view padded batch computes). Both go through
`dos_jax.train.step.train_step`, jitted (state donated) from the same initial state; reported: compile seconds,
step seconds (median of `--steps`, the two alternated so machine load hits both alike), their ratio, the first
losses (equal up to float32 rounding: the same views), and XLA's compiled memory analysis (argument + output +
temp bytes = the step's live-buffer bound). Prints one JSON line.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import scans  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import specs  # noqa: E402
from dos_jax.batching import packing  # noqa: E402
from dos_jax.batching import patches  # noqa: E402
from dos_jax.batching import pipeline  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.train import state as state_lib  # noqa: E402
from dos_jax.train import step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per variant.")
_FIRST = flags.DEFINE_integer("first_step", 0, "Pipeline step whose packs are used.")
_SPLIT = flags.DEFINE_enum("split", "all", scans.SPLITS, "Part of the shared scans to read.")
flags.mark_flags_as_required(["config"])


def _compile(state, batch, rng, spec):
  fn = jax.jit(functools.partial(step_lib.train_step, spec=spec), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = fn.lower(state, batch, rng).compile()
  secs = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  peak = int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) if mem else None
  return compiled, secs, peak


def main(argv):
  del argv
  cfg = schema.validate(_CONFIG.value)  # the gate, as in training: the layers below do not check it again
  scenes, data_name = scans.scene_list(cfg, _SPLIT.value)
  spec = spec_lib.pipeline_spec(cfg)
  examples = pipeline.global_examples(spec, scenes)
  first = _FIRST.value * spec.packs_per_step
  members = [m for k in range(first, first + spec.packs_per_step) for m in pipeline.pack_members(spec, examples, k)]
  packed = jax.device_put(patches.stack_tree(
      [packing.build_pack(pipeline.pack_members(spec, examples, k), spec.pack)
       for k in range(first, first + spec.packs_per_step)]))
  one = spec_lib.PackSpec(pack_scenes=1, patch_size=spec.pack.patch_size, num_views=spec.pack.num_views,
                          **spec_lib.default_budgets(spec.batch, 1))
  padded = jax.device_put(patches.stack_tree([packing.build_pack([m], one) for m in members]))
  rng = jax.random.key(1)
  step_spec = specs.step_spec(cfg)
  init = state_lib.create_train_state(step_spec, jax.random.key(int(cfg.seed)), padded)
  rows, states, fns = {}, {}, {}
  for name, batch in (("padded", padded), ("packed", packed)):
    state = jax.tree.map(lambda x: x.copy() if hasattr(x, "copy") else x, init)
    fn, secs, peak = _compile(state, batch, rng, step_spec)
    state, metrics = fn(state, batch, rng)  # warm-up; also the first loss
    jax.block_until_ready(state)
    states[name], fns[name] = state, fn
    rows[name] = dict(compile_s=round(secs, 2), peak_bytes=peak, peak_mib=round(peak / 2**20, 1) if peak else None,
                      first_loss=float(metrics["loss"]), views=int(metrics["views"]), times=[],
                      packs=int(batch.view_valid.shape[0]),
                      real_teacher_points=int(np.asarray(batch.teacher.valid).sum()),
                      teacher_slots=int(np.prod(batch.teacher.valid.shape)),
                      student_slots=int(np.prod(batch.student.valid.shape)))
  batches = dict(padded=padded, packed=packed)
  for _ in range(_STEPS.value):
    for name in ("padded", "packed"):
      t0 = time.perf_counter()
      states[name], _ = fns[name](states[name], batches[name], rng)
      jax.block_until_ready(states[name])
      rows[name]["times"].append(time.perf_counter() - t0)
  for r in rows.values():
    r["step_s"] = round(statistics.median(r.pop("times")), 4)
  out = dict(benchmark="packed_step", config=config_flags.get_config_filename(flags.FLAGS["config"]),
             data=data_name, variant=cfg.model.variant, scenes=len(members), pack_scenes=spec.pack.pack_scenes,
             platform=jax.devices()[0].platform, cpu_count=os.cpu_count(), **rows,
             step_ratio_padded_over_packed=round(rows["padded"]["step_s"] / rows["packed"]["step_s"], 3),
             memory_ratio_padded_over_packed=round(rows["padded"]["peak_bytes"] / rows["packed"]["peak_bytes"], 3))
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  app.run(main)
