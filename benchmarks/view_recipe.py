r"""Host cost of the view recipe: CPU ms per scene of `train_views` under Sonata's recipe vs the earlier one.

  python -m benchmarks.view_recipe [--rounds 3] [--out benchmarks/view_recipe.json]

Two workloads, each with the same scenes and seeds under both recipes (`configs/common.py:apply_recipe`):
  * synthetic: `configs/synthetic_tiny.py` and 8 of its rooms;
  * scannet: `configs/scannet.py` (base variant, capacity 16384 / 8192, grid 0.08 m) on the shared ScanNet scans
    (../shared/data/scannet_votenet50k, 50k points each), when present.
For each, `ms_per_scene` is the single-thread CPU time (time.process_time, so other load on the machine does not
count) of building one scene's views, the fastest of `--rounds` interleaved rounds; `sonata_over_v1` is the ratio
within the run. `ops_ms` splits the Sonata-only ops on one crop of the first scene (elastic distortion, colour
jitter). Prints one JSON object and writes it atomically to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from configs import common  # noqa: E402
from configs import scannet  # noqa: E402
from configs import synthetic_tiny  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.batching import train_views  # noqa: E402
from dos_jax.data import transforms  # noqa: E402
from dos_jax.data import views  # noqa: E402

SCANNET = os.path.join(ROOT, "..", "shared", "data", "scannet_votenet50k")


def _specs(cfg):
  """{recipe: BatchSpec} of one config under both recipes (step None: the views after the masking warm-up)."""
  out = {}
  for recipe in common.RECIPES:
    c = common.apply_recipe(cfg.copy_and_resolve_references(), recipe)
    out[recipe] = spec_lib.batch_spec(schema.validate(c))
  return out


def _ms_per_scene(spec, scenes, rounds):
  best = float("inf")
  for r in range(rounds):
    rng = np.random.default_rng(r)
    start = time.process_time()
    for scene in scenes:
      train_views.train_views(scene, spec, rng)
    best = min(best, time.process_time() - start)
  return 1000.0 * best / len(scenes)


def _ops_ms(scene, spec, repeats=5):
  """ms of each Sonata-only op on one crop of `scene` (the crop a view is augmented from)."""
  data = views.random_crop(transforms.from_scene(scene), 0.7, np.random.default_rng(0))
  out = {"crop_points": int(len(data["coord"]))}
  for name, kwargs in spec.augmentations:
    if name in ("elastic_distortion", "random_color_jitter"):
      op = transforms.build([(name, dict(kwargs, p=1.0))])
      rng = np.random.default_rng(1)
      start = time.process_time()
      for _ in range(repeats):
        op(data, rng)
      out[name] = round(1000.0 * (time.process_time() - start) / repeats, 2)
  return out


def _workload(cfg, scenes, rounds):
  specs = _specs(cfg)
  train_views.train_views(scenes[0], specs["sonata"], np.random.default_rng(0))  # warm-up: imports, caches
  ms = {recipe: [] for recipe in specs}
  for _ in range(rounds):  # interleaved, so neither recipe gets the warmer caches
    for recipe, spec in specs.items():
      ms[recipe].append(_ms_per_scene(spec, scenes, 1))
  best = {recipe: round(min(v), 1) for recipe, v in ms.items()}
  return {"scenes": len(scenes), "ms_per_scene": best,
          "sonata_over_v1": round(best["sonata"] / best["v1"], 3), "ops_ms": _ops_ms(scenes[0], specs["sonata"])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "view_recipe.json"))
  args = parser.parse_args(argv)
  from dos_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  report = {"load_average_start": round(os.getloadavg()[0], 2), "workloads": {}}
  cfg = synthetic_tiny.get_config()
  rooms = [synthetic.make_scene((0, 0, i), cfg.data.kind) for i in range(8)]
  report["workloads"]["synthetic"] = _workload(cfg, rooms, args.rounds)
  if os.path.isdir(SCANNET):
    from dos_jax.data import pointcept  # pylint: disable=g-import-not-at-top
    scans = [pointcept.read_scannet_votenet(f) for f in pointcept.find_scannet_votenet(SCANNET)[:6]]
    report["workloads"]["scannet_votenet50k"] = _workload(scannet.get_config(), scans, args.rounds)
  else:
    report["workloads"]["scannet_votenet50k"] = {"skipped": f"{SCANNET} not found"}
  report["load_average_end"] = round(os.getloadavg()[0], 2)
  report["time_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
  text = json.dumps(report, indent=1)
  fileio.write_text(args.out, text + "\n")
  print(text)


if __name__ == "__main__":
  main()
