r"""Input pipeline throughput: scenes/s of the grain `TrainIterator` with 1 and 2 worker threads / processes.

  python -m benchmarks.input_pipeline [--seconds 3] [--step-s-tiny S] [--step-s-base S]
                                      [--out benchmarks/input_pipeline.json]

Two workloads:
  * synthetic: the embedded default (configs/synthetic_tiny.py: tiny variant, capacity 2048), scenes from
    `dos_jax.data.synthetic.make_scene` generated up front (generation is not timed);
  * scannet: the real ScanNet scans in ../shared/data/scannet_votenet50k (50k points each), read from disk on
    every access (I/O is timed), with the base model's batch: configs/scannet.py (base variant: 5 stages, patch
    1024, capacity 16384 / student 8192, grid 0.08 m), 4 scenes per step (one process's share of its global 32
    on 8 accelerator processes).
Each measurement takes one warm-up batch, then counts batches for about `--seconds`, for 1 and 2 worker threads
and 1 and 2 worker processes. points/s counts raw scene points consumed; teacher_points/s counts real (non-padded)
stage-0 teacher points produced. cpu_ms_per_scene is the single-thread CPU cost of one scene's views (independent
of other load on the machine), measured twice in the same run on the same scenes: `direct` calls
`train_views.make_train_batch` (the view work alone, as the hand-written pool ran it) and `grain` reads the steps
from `pipeline.process_batches` (grain's shuffle, per-example Generator, batching); `grain_over_direct` is the
overhead ratio (1.0 = none). Demand: the step time of the train step the pipeline feeds (`--step-s-tiny`,
`--step-s-base`, seconds per step, e.g. from benchmarks/train_step.py or benchmarks/gpu.sh) gives demand =
batch_size / step_s scenes/s and supply_over_demand per run; `break_even_step_s` = batch_size / scenes_per_s is
the shortest step each setting keeps fed (one process; each process of a multi-host job builds batch_size / P).
Prints one JSON object and writes it atomically to --out. Cost: about 25 s of CPU time; the wall time is about
20 s of measurement plus set-up and grows with other load on the machine (the JSON records the load average next
to every measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from configs import scannet  # noqa: E402
from configs import synthetic_tiny  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax.batching import pipeline  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.batching import train_views  # noqa: E402

SCANNET = os.path.join(ROOT, "..", "shared", "data", "scannet_votenet50k")


class _LazyScans:
  """A Sequence of Scenes read from disk on each access (so reading is part of the measured cost)."""

  def __init__(self, folders):
    self._folders = folders

  def __len__(self):
    return len(self._folders)

  def __getitem__(self, i):
    from dos_jax.data import pointcept
    return pointcept.read_scannet_votenet(self._folders[i])


def _synthetic_source(cfg, count):
  try:
    from dos_jax.data import synthetic
    return [synthetic.make_scene((cfg.seed, 0, i), cfg.data.kind) for i in range(count)], "dos_jax.data.synthetic"
  except ImportError:  # the generator is not in this checkout: fall back to random boxes
    from dos_jax.data.scene import Scene
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(count):
      coord = rng.uniform(0, 1, (30000, 3)) * [6.0, 5.0, 3.0]
      coord[np.arange(30000), rng.integers(0, 3, 30000)] = 0
      scenes.append(Scene(coord=coord.astype(np.float32), color=rng.random((30000, 3)).astype(np.float32),
                          name=f"box{i}"))
    return scenes, "random boxes"


def _cpu_cost(cfg, source, batches=2, rounds=3):
  """CPU ms per scene, single thread, of the same scenes' views built directly and through grain (see above).

  The two are interleaved over `rounds` and each takes its fastest round, so cache warmth and other load on the
  machine do not favour whichever runs second.
  """
  steps = pipeline.process_batches(spec_lib.pipeline_spec(cfg), source)
  steps[0]  # pylint: disable=pointless-statement  (warm-up: imports, caches)
  index = pipeline.scene_indices(len(source), cfg.seed, range(cfg.batch_size, (batches + 1) * cfg.batch_size))
  rng, spec = np.random.default_rng(0), spec_lib.batch_spec(cfg)
  best = {"grain": float("inf"), "direct": float("inf")}
  for _ in range(rounds):
    start = time.process_time()
    for step in range(1, batches + 1):
      steps[step]  # pylint: disable=pointless-statement
    best["grain"] = min(best["grain"], time.process_time() - start)
    start = time.process_time()
    for step in range(batches):
      scenes = [source[int(i)] for i in index[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
      train_views.make_train_batch(scenes, spec, rng)
    best["direct"] = min(best["direct"], time.process_time() - start)
  ms = {k: 1000 * v / (batches * cfg.batch_size) for k, v in best.items()}
  return {"direct": round(ms["direct"], 1), "grain": round(ms["grain"], 1),
          "grain_over_direct": round(ms["grain"] / ms["direct"], 3)}


def _with_demand(results, batch_size, step_s):
  for r in results:
    r["break_even_step_s"] = round(batch_size / r["scenes_per_s"], 3)
    if step_s:
      r["demand_scenes_per_s"] = round(batch_size / step_s, 2)
      r["supply_over_demand"] = round(r["scenes_per_s"] * step_s / batch_size, 2)
  return results


def _measure(cfg, source, workers, seconds, backend="thread"):
  it = pipeline.TrainIterator(spec_lib.pipeline_spec(cfg), source, num_workers=workers, prefetch=max(2, 2 * workers),
                              backend=backend)
  try:
    next(it)  # warm-up (thread start, first batch)
    steps = raw = teacher = 0
    start = time.perf_counter()
    while True:
      step = it.step
      batch = next(it)
      idx = pipeline.scene_indices(len(source), cfg.seed, range(step * cfg.batch_size, (step + 1) * cfg.batch_size))
      raw += sum(_num_points(source, int(i)) for i in idx)
      teacher += int(batch.teacher.valid.sum())
      steps += 1
      elapsed = time.perf_counter() - start
      if elapsed >= seconds and steps >= 3:
        break
  finally:
    it.close()
  scenes = steps * cfg.batch_size
  return {"backend": backend, "workers": workers, "load_average": round(os.getloadavg()[0], 2), "steps": steps,
          "seconds": round(elapsed, 3), "scenes_per_s": round(scenes / elapsed, 2),
          "points_per_s": round(raw / elapsed), "teacher_points_per_s": round(teacher / elapsed),
          "batch_ms": round(1000 * elapsed / steps, 1)}


_COUNTS = {}
# (workers, backend) measured for each workload.
_RUNS = ((1, "thread"), (2, "thread"), (1, "process"), (2, "process"))


def _num_points(source, i):
  key = (id(source), i)
  if key not in _COUNTS:
    _COUNTS[key] = source[i].num_points if isinstance(source, list) else 50000
  return _COUNTS[key]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seconds", type=float, default=3.0, help="measured time per (workload, workers)")
  parser.add_argument("--step-s-tiny", type=float, default=None, help="train step seconds of synthetic_tiny")
  parser.add_argument("--step-s-base", type=float, default=None, help="train step seconds of the base batch")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "input_pipeline.json"))
  args = parser.parse_args(argv)

  report = {"host": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
            "workloads": {}}

  cfg = synthetic_tiny.get_config()
  scenes, origin = _synthetic_source(cfg, 6)
  report["workloads"]["synthetic"] = {
      "source": origin, "scenes": len(scenes), "mean_points": int(np.mean([s.num_points for s in scenes])),
      "config": _describe(cfg), "cpu_ms_per_scene": _cpu_cost(cfg, scenes),
      "step_s": args.step_s_tiny,
      "results": _with_demand([_measure(cfg, scenes, w, args.seconds, b) for w, b in _RUNS], cfg.batch_size,
                              args.step_s_tiny)}

  if os.path.isdir(SCANNET):
    from dos_jax.data import pointcept
    folders = pointcept.find_scannet_votenet(SCANNET)
    # The base model's batch: configs/scannet.py (base variant, capacity 16384 / student 8192, grid 0.08 m), one
    # process's share of its global batch of 32 on 8 accelerator processes.
    cfg = scannet.get_config()
    cfg.batch_size = 4
    # One scene per pack at its per-view capacities on both sides: the direct path builds them (make_train_batch).
    cfg.data.pack_scenes = 1
    cfg.data.packed_capacity = cfg.data.packed_student_capacity = ()
    cfg.data.packed_sequence = cfg.data.packed_student_sequence = ()
    cfg.data.feat_keys = ("coord", "color", "normal")
    source = _LazyScans(folders)
    report["workloads"]["scannet_votenet50k"] = {
        "source": SCANNET, "scenes": len(folders), "mean_points": 50000, "config": _describe(cfg),
        "cpu_ms_per_scene": _cpu_cost(cfg, source),
        "step_s": args.step_s_base,
        "results": _with_demand([_measure(cfg, source, w, args.seconds, b) for w, b in _RUNS], cfg.batch_size,
                                args.step_s_base)}
  else:
    report["workloads"]["scannet_votenet50k"] = {"skipped": f"{SCANNET} not found"}

  text = json.dumps(report, indent=2)
  print(text)
  fileio.write_text(args.out, text + "\n")


def _describe(cfg):
  return {"variant": cfg.model.variant, "batch_size": cfg.batch_size, "num_views": cfg.data.num_views,
          "grid_size": cfg.data.grid_size, "capacity": cfg.data.capacity,
          "student_capacity": cfg.data.student_capacity, "crop_ratio": cfg.data.crop_ratio,
          "mask_ratio": cfg.mask_ratio, "supervision": cfg.supervision, "feat_keys": list(cfg.data.feat_keys)}


if __name__ == "__main__":
  main()
