r"""Train step on CPU, this checkout vs another one (e.g. before a change), alternated in one run; peak XLA memory.

  git archive <commit> | tar -x -C /tmp/before      # the other tree: any commit with the same pipeline/step API
  python benchmarks/step_before_after.py --before /tmp/before --config configs/scannet.py \
      --common "model.variant='tiny'" --before_overrides "..." --after_overrides "..." [--split heldout]

Each side runs in its own subprocess with its tree first on sys.path (the two versions of dos_jax cannot share a
process): it builds the config's batch of step `--first_step` from the training pipeline
(`pipeline.process_batches(spec.pipeline_spec(config), scans)[step]`, the API both sides have), jits
`step.train_step` (state donated), records XLA's compiled memory analysis (argument + output + temp bytes), runs a
warm-up step and times `--steps` steps. The sides alternate for `--rounds` rounds, so machine load hits both
alike; the JSON line reports each side's median step time, its time per real view and per real teacher point (the
sides' batches may hold different numbers of scenes), peak memory, and the after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside each side's tree. argv: tree, config module, overrides (JSON dict of dotted key -> value), split,
# first step, steps.
_CHILD = r'''
import importlib, json, os, sys, time, functools
tree, module, overrides, split, first, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
sys.path.insert(0, tree)
os.chdir(tree)
import jax, numpy as np
from benchmarks import scans
from dos_jax import schema, specs
from dos_jax.batching import pipeline, spec as spec_lib
from dos_jax.train import state as state_lib, step as step_lib
cfg = importlib.import_module(module).get_config()
cfg.update_from_flattened_dict({k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})
cfg = schema.validate(cfg)
scenes = scans.shared_source(cfg.data.dataset)
if split != "all":  # the split of benchmarks/scans.py (older trees do not have it)
  marks = {"scannet": ("scene0000", "scene0002", "scene0004"), "semantickitti": ("kitti_01_",)}[
      "scannet" if cfg.data.dataset.startswith("scannet") else cfg.data.dataset]
  scenes = [s for s in scenes if any(os.path.basename(s.name).startswith(m) for m in marks) == (split == "calib")]
batch = jax.device_put(pipeline.process_batches(spec_lib.pipeline_spec(cfg), scenes)[first])
spec = specs.step_spec(cfg)
state = state_lib.create_train_state(spec, jax.random.key(int(cfg.seed)), batch)
fn = jax.jit(functools.partial(step_lib.train_step, spec=spec), donate_argnums=0)
rng = jax.random.key(1)
t0 = time.perf_counter()
compiled = fn.lower(state, batch, rng).compile()
compile_s = time.perf_counter() - t0
mem = compiled.memory_analysis()
state, metrics = compiled(state, batch, rng)
jax.block_until_ready(state)
times = []
for _ in range(steps):
  t0 = time.perf_counter()
  state, _ = compiled(state, batch, rng)
  jax.block_until_ready(state)
  times.append(time.perf_counter() - t0)
if hasattr(batch, "view_valid"):
  views = int(np.asarray(batch.view_valid).sum())
elif hasattr(batch, "view_count"):
  views = int(np.prod(batch.view_count.shape))
else:
  views = int(np.prod(batch.mask_token.shape[:2]))
print(json.dumps(dict(times=times, compile_s=compile_s, views=views, first_loss=float(metrics["loss"]),
                      teacher_points=int(np.asarray(batch.teacher.valid).sum()),
                      teacher_slots=int(np.prod(batch.teacher.valid.shape)),
                      student_slots=int(np.prod(batch.student.valid.shape)),
                      peak_bytes=int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes))))
'''


def _overrides(text: str) -> dict:
  """'a.b=1,c=(2, 3)' style -> dict; values are Python literals (JSON-able)."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in filter(None, (t.strip() for t in text.split(";"))):
    key, _, value = item.partition("=")
    out[key.strip()] = ast.literal_eval(value.strip())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--before", required=True, help="the other checkout's root (e.g. git archive of a commit)")
  parser.add_argument("--config", default="configs/scannet.py")
  parser.add_argument("--common", default="", help="overrides for both sides: 'key=literal; key=literal'")
  parser.add_argument("--before_overrides", default="")
  parser.add_argument("--after_overrides", default="")
  parser.add_argument("--split", default="heldout", choices=("all", "calib", "heldout"))
  parser.add_argument("--first_step", type=int, default=20000)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  module = os.path.splitext(args.config)[0].replace("/", ".")
  common = _overrides(args.common)
  sides = {"before": (os.path.abspath(args.before), {**common, **_overrides(args.before_overrides)}),
           "after": (ROOT, {**common, **_overrides(args.after_overrides)})}
  runs = {k: [] for k in sides}
  for _ in range(args.rounds):
    for name, (tree, over) in sides.items():
      out = subprocess.run([sys.executable, "-c", _CHILD, tree, module, json.dumps(over), args.split,
                            str(args.first_step), str(args.steps)], capture_output=True, text=True, check=False)
      if out.returncode:
        raise SystemExit(f"{name} side failed:\n{out.stderr[-3000:]}")
      runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
  rows = {}
  for name, rs in runs.items():
    step_s = statistics.median(t for r in rs for t in r["times"])
    r0 = rs[0]
    rows[name] = dict(step_s=round(step_s, 4), ms_per_view=round(1000 * step_s / r0["views"], 2),
                      us_per_teacher_point=round(1e6 * step_s / r0["teacher_points"], 3), views=r0["views"],
                      teacher_points=r0["teacher_points"], teacher_slots=r0["teacher_slots"],
                      student_slots=r0["student_slots"], peak_mib=round(r0["peak_bytes"] / 2**20, 1),
                      compile_s=round(statistics.median(r["compile_s"] for r in rs), 1),
                      first_loss=r0["first_loss"], overrides=sides[name][1])
  b, a = rows["before"], rows["after"]
  result = dict(benchmark="step_before_after", config=args.config, split=args.split, first_step=args.first_step,
                before_tree=sides["before"][0], cpu_count=os.cpu_count(), before=b, after=a,
                step_ratio_after_over_before=round(a["step_s"] / b["step_s"], 3),
                per_view_ratio_after_over_before=round(a["ms_per_view"] / b["ms_per_view"], 3),
                memory_ratio_after_over_before=round(a["peak_mib"] / b["peak_mib"], 3))
  text = json.dumps(result)
  print(text, flush=True)
  if args.out:
    from dos_jax import io as io_lib  # pylint: disable=g-import-not-at-top
    with io_lib.atomic_open(args.out) as f:
      f.write(text + "\n")


if __name__ == "__main__":
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  main()
