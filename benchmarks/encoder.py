r"""Encoder forward+backward time and memory vs number of points; writes JSON.

  python benchmarks/encoder.py                                    # tiny, f32, 8k..128k points, CPU
  python benchmarks/encoder.py --variant base --dtype bfloat16 --points 32768,65536,131072 \
      --out benchmarks/encoder_base_gpu.json                      # on a GPU: also achieved TFLOP/s

Each point count N is one padded point set of capacity N holding `fill * N` real points on a synthetic surface
(a heightfield, one point per voxel, which pools like an indoor scan), `--batch` such sets per step. The timed
function is one jitted `value_and_grad` of a scalar loss of the dense features w.r.t. the encoder params (a
training step's encoder part). Reported per N: compile seconds, step seconds (min and median of `--repeats`), XLA's compiled memory
analysis (argument/output/temp bytes; `peak_bytes` = their sum, the live-buffer bound of the step), the process
peak RSS (cumulative over the run), and the compiled cost analysis' FLOPs with the achieved FLOP/s. The growth exponent k is the slope of
log(time) vs log(N) (least squares); attention inside fixed patches makes the encoder linear in N (k ~ 1).

  python benchmarks/encoder.py --scans scannet --variant tiny --out /tmp/encoder_scans.json

`--scans scannet|semantickitti` times one device's teacher views of REAL scans instead (the config's recipe on the
scans beside the checkout): the same views padded per view (today's layout) and packed into one set
(`dos_jax.batching.packing`, the config's packed capacities), with their step-time ratio.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from dos_jax import io as fileio  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.batching import patches  # noqa: E402
from dos_jax.models import encoder  # noqa: E402
from dos_jax.models.spec import ModelSpec  # noqa: E402

GRID = 0.05  # metres


def surface(n: int, seed: int):
  """coord f32[n, 3], feat f32[n, 9] (coord, colour, normal-like): a heightfield, one point per voxel."""
  r = np.random.default_rng(seed)
  side = int(np.ceil(np.sqrt(n * 1.3)))
  cells = r.choice(side * side, size=n, replace=False)
  gx, gy = np.divmod(cells, side)
  gz = np.round(3 * np.sin(gx / 7.0) + 2 * np.cos(gy / 5.0)).astype(np.int64)
  coord = ((np.stack([gx, gy, gz], -1) + 0.5) * GRID).astype(np.float32)
  feat = np.concatenate([coord, r.random((n, 3)), r.normal(size=(n, 3))], 1).astype(np.float32)
  return coord, feat


def make_batch(num_points: int, batch: int, fill: float, spec, seed: int = 0):
  sets = []
  for b in range(batch):
    coord, feat = surface(int(fill * num_points), seed + b)
    sets.append(patches.build_point_set(coord, feat, np.arange(len(coord)), GRID, num_points,
                                        len(spec["channels"]), spec["patch_size"], ratio=0.5))
  return patches.stack_point_sets(sets)


def bench_one(num_points: int, args, model: ModelSpec, spec):
  """Times `model` (a ModelSpec) on a synthetic batch laid out for `spec` (variants.decode_variant's dict)."""
  return bench_points(jax.device_put(make_batch(num_points, args.batch, args.fill, spec)), num_points, args,
                      model)


def scan_batches(name: str, variant: str, step: int = 0):
  """One device's teacher sets from REAL scans (configs/<name>.py recipe, the shared scans, `variant`):
  {'padded': PointSet [B*V, ...] at the per-view capacities, 'packed': PointSet [1, ...] of the same views at
  the config's packed slots and sequence lengths}."""
  import importlib  # pylint: disable=g-import-not-at-top
  from benchmarks import scans  # pylint: disable=g-import-not-at-top
  from dos_jax import schema  # pylint: disable=g-import-not-at-top
  from dos_jax.batching import packing, pipeline, spec as spec_lib  # pylint: disable=g-import-not-at-top
  cfg = importlib.import_module(f"configs.{name}").get_config()
  cfg.model.variant = variant
  cfg.batch_size = int(cfg.data.pack_scenes)
  cfg = schema.validate(cfg)  # the gate, as in training: the layers below do not check the config again
  scenes, _ = scans.scene_list(cfg)
  bspec = spec_lib.batch_spec(cfg)
  examples = pipeline.global_examples(spec_lib.pipeline_spec(cfg), scenes)
  chosen = [examples[g] for g in range(step * cfg.batch_size, (step + 1) * cfg.batch_size)]
  padded = patches.stack_point_sets([p.teacher for e in chosen for p in e.views])
  sets = [p.teacher for e in chosen for p in e.views]
  caps, seq = list(cfg.data.packed_capacity), list(cfg.data.packed_sequence)
  if len(caps) != bspec.num_stages:  # another variant than the config's: this batch's own sizes x 1.1
    counts = np.array([packing.stage_counts(ps) for ps in sets])
    caps = [packing.round_capacity(1.1 * n) for n in counts.sum(0)]
    seq = [packing.round_sequence(1.1 * f, bspec.patch_size) for f in packing.footprints(counts, bspec.patch_size)]
  packed = packing.pack_point_sets(sets, caps, bspec.patch_sizes or bspec.patch_size, sequence=seq)[0]
  return dict(padded=padded, packed=patches.stack_point_sets([packed]))


def bench_points(points, num_points: int, args, model: ModelSpec):
  params = encoder.init(jax.random.key(0), points, model)

  def loss(p, pts, key):
    out = encoder.apply(p, pts, train=True, rng=key, spec=model)
    return jnp.mean(jnp.square(out))

  step = jax.jit(jax.value_and_grad(loss))
  key = jax.random.key(1)
  t0 = time.perf_counter()
  compiled = step.lower(params, points, key).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  jax.block_until_ready(compiled(params, points, key))  # warm-up
  times = []
  for i in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, points, jax.random.key(i + 2)))
    times.append(time.perf_counter() - t0)
  # The minimum is the least load-sensitive statistic on a shared machine; the median is reported too.
  step_s = float(np.min(times))
  row = dict(points=num_points, real_points=int(np.asarray(points.valid).sum()), batch=int(points.valid.shape[0]),
             stage_capacities=[int(s.valid.shape[1]) for s in points.stages],
             stage_sequence=[int(s.order.shape[-1]) for s in points.stages],
             compile_s=round(compile_s, 3), step_s=round(step_s, 5), step_s_median=round(float(np.median(times)), 5), step_s_all=[round(t, 5) for t in times],
             flops=flops, achieved_tflops=round(flops / step_s / 1e12, 4) if np.isfinite(flops) else None,
             peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
  if mem is not None:
    arg_b, out_b, tmp_b = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    row.update(argument_bytes=int(arg_b), output_bytes=int(out_b), temp_bytes=int(tmp_b),
               peak_bytes=int(arg_b + out_b + tmp_b), peak_mib=round((arg_b + out_b + tmp_b) / 2**20, 1))
  return row


def fit_exponent(rows):
  """Least-squares slope of log(step_s) vs log(points) (None with fewer than 2 rows)."""
  if len(rows) < 2:
    return None
  x = np.log([r["points"] for r in rows])
  y = np.log([r["step_s"] for r in rows])
  return round(float(np.polyfit(x, y, 1)[0]), 3)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variant", default="tiny")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
  parser.add_argument("--points", default="8192,16384,32768,65536,131072", help="comma-separated capacities")
  parser.add_argument("--batch", type=int, default=1, help="point sets per step")
  parser.add_argument("--fill", type=float, default=0.9, help="fraction of each capacity holding real points")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max-seconds", type=float, default=600.0, help="skip larger N once a step exceeds this")
  parser.add_argument("--scans", default="", choices=["", "scannet", "semantickitti"],
                      help="time real views of configs/<scans>.py (shared scans), padded per view vs packed, "
                           "instead of the synthetic heightfield")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "encoder.json"))
  args = parser.parse_args(argv)

  spec = variants.decode_variant(args.variant)
  model = ModelSpec(variant=args.variant, dtype=args.dtype, drop_path=0.3, mlp_ratio=4.0, attention=args.attention)
  device = jax.devices()[0]
  rows = []
  result = dict(benchmark="encoder forward+backward", variant=args.variant, dtype=args.dtype,
                attention=args.attention, platform=device.platform, device_kind=device.device_kind,
                num_devices=jax.device_count(), cpu_count=os.cpu_count(), jax_version=jax.__version__,
                params=encoder.param_count(args.variant), output_dim=encoder.output_dim(model), rows=rows)
  if args.scans:
    # Real scans: the same views padded per view (today) and packed, one device's teacher batch each.
    result.update(scans=args.scans, fill="real views (configs/%s.py, shared scans)" % args.scans)
    for layout, points in scan_batches(args.scans, args.variant).items():
      row = dict(layout=layout, **bench_points(jax.device_put(points), int(points.valid.shape[1]), args, model))
      rows.append(row)
      print(json.dumps(row), flush=True)
    result["step_ratio_padded_over_packed"] = round(rows[0]["step_s"] / rows[1]["step_s"], 3)
    fileio.write_json(args.out, result, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return result
  for n in [int(v) for v in args.points.split(",") if v]:
    row = bench_one(n, args, model, spec)
    rows.append(row)
    result["growth_exponent_k"] = fit_exponent(rows)
    fileio.write_json(args.out, result, indent=1)  # partial results survive an interrupted run
    print(json.dumps(row), flush=True)
    if row["step_s"] > args.max_seconds:
      break
  print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
  return result


if __name__ == "__main__":
  main()
