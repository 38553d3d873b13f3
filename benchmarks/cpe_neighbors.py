r"""How sparse and how local the CPE's 27-neighbour tables are in real packs: the design data for a CPE without
per-row gathers (issue 24).

  python -m benchmarks.cpe_neighbors --config configs/scannet.py [--config.key=value ...] [--packs 8] \
      [--first_step 20000] [--split heldout] [--out benchmarks/cpe_neighbors_scannet.json]

Builds the packs `launch.train` would feed (`dos_jax.batching.pipeline`: crops, augmentation, masking, grid
sampling, budget fill) from the config's data, or the real scans beside the checkout (`benchmarks/scans.py`), and
reads each stage's neighbour table (`Stage.neighbors`, i32[N_s, 27], N_s = absent) for the teacher and the
student. Per branch and stage it reports:

  * `present`: the fraction of the 27 entries of real slots that name a real point (centre included). The TPU
    compiler charges every gathered row, sentinel or not, about one padded tile (`tpu_gather_cost`), so
    1 - present is the share of the CPE's gather charge spent reading the zero row;
  * `count_quantiles`: present neighbours per real point (50%, 99%, 99.9%, max): what a per-point compacted table
    would need as its width;
  * `pairs_per_slot`: present non-centre entries per real slot: the rows a kernel-map (per-pair) form gathers;
  * `window`: for the slot order (stage 0: ascending voxel key of the grid sample; later stages: of the pooled
    grid) and each serialization order, the distance |pos(neighbour) - pos(point)| that covers 99%, 99.9% and all
    present non-centre entries: the half-width a kernel reading neighbourhoods from a contiguous window of
    points would need.

Prints one JSON line; --out also writes it (atomically). CPU only, a minute or two.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from benchmarks import scans
from dos_jax import io
from dos_jax.batching import packing
from dos_jax.batching import pipeline
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs

CENTER = len(structs.NEIGHBOR_OFFSETS) // 2
QUANTILES = (0.99, 0.999, 1.0)


def stage_stats(stage: structs.Stage) -> dict:
  """Sparsity and locality of one stage's table (one pack): counts and raw distances, merged over packs later.

  count: present entries (centre included) per real slot; dist[order]: |pos(j) - pos(i)| over the present
  non-centre entries j = neighbors[i, k] of real slots i, for the slot order and each serialization order."""
  valid = np.asarray(stage.valid)
  n = len(valid)
  nb = np.asarray(stage.neighbors)[valid]
  others = np.delete(nb, CENTER, axis=1)
  present = others < n
  slot = np.nonzero(valid)[0][np.nonzero(present)[0]]  # the slot i of each present entry
  neighbour = others[present]
  # A packed stage's `inverse` maps each slot to its sequence position in that serialization order.
  positions = {"slots": np.arange(n), **{name: np.asarray(stage.inverse[o]).astype(np.int64)
                                         for o, name in enumerate(structs.ORDERS)}}
  return {"count": (nb < n).sum(1),
          "dist": {name: np.abs(pos[neighbour] - pos[slot]) for name, pos in positions.items()}}


def summarize(per_pack) -> dict:
  count = np.concatenate([p["count"] for p in per_pack])
  out = {"real_slots_per_pack": round(len(count) / len(per_pack), 1),
         "present": round(float(count.mean() / len(structs.NEIGHBOR_OFFSETS)), 4),
         "count_quantiles": {str(q): int(np.quantile(count, q)) for q in (0.5, 0.99, 0.999, 1.0)},
         "pairs_per_slot": round(float(count.mean() - 1), 3), "window": {}}
  for name in per_pack[0]["dist"]:
    d = np.concatenate([p["dist"][name] for p in per_pack])
    out["window"][name] = {str(q): int(np.quantile(d, q)) for q in QUANTILES}
  return out


def measure(cfg, scenes, packs: int, first_step: int) -> dict:
  pipe = spec_lib.pipeline_spec(cfg)
  examples = pipeline.global_examples(pipe, scenes)
  stats = {"teacher": [], "student": []}
  first = first_step * pipe.packs_per_step
  for k in range(first, first + packs):
    batch = packing.build_pack(pipeline.pack_members(pipe, examples, k), pipe.pack)
    for branch in stats:
      stats[branch].append([stage_stats(s) for s in getattr(batch, branch).stages])
  return {branch: [summarize([p[s] for p in per]) for s in range(len(per[0]))] for branch, per in stats.items()}


def main(argv):
  del argv
  f = flags.FLAGS
  cfg = f.config
  scenes, data_name = scans.scene_list(cfg, f.split)
  result = {"config": cfg.data.dataset, "data": data_name, "grid_size": float(cfg.data.grid_size),
            "packs": f.packs, "first_step": f.first_step, "orders": ["slots", *structs.ORDERS],
            "stages": measure(cfg, scenes, f.packs, f.first_step)}
  line = json.dumps(result)
  print(line)
  if f.out:
    io.write_text(f.out, line + "\n")


def _define_flags():
  """Flags only when run as a program: the tests import this module beside others that define --config."""
  config_flags.DEFINE_config_file("config", None, "Experiment config, e.g. configs/scannet.py.", lock_config=True)
  flags.DEFINE_integer("packs", 8, "Packs to build: the first packs of step --first_step onwards.")
  flags.DEFINE_integer("first_step", 20_000, "Step of the first pack: past the masking warm-up, as "
                       "benchmarks/padding.py measures.")
  flags.DEFINE_enum("split", "all", scans.SPLITS, "Part of the shared scans (when data.root is absent).")
  flags.DEFINE_string("out", None, "Also write the JSON here.")
  flags.mark_flag_as_required("config")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
