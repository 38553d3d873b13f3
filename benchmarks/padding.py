r"""How much of the encoder's work touches a real point: per-stage fill, useful FLOP fraction, compiled GFLOPs.

  python benchmarks/padding.py --config configs/scannet.py [--config.key=value ...] [--scenes N] [--split heldout]
  python benchmarks/padding.py --config configs/scannet.py --calibrate [--fill_scenes 6 --quantile 0.5 \
      --margin 1.0 --tighten] [--split calib] [--out budgets.json]      # pack budgets from the view pipeline

Runs the real training pipeline on one host over `--scenes` steps: the global example sequence (crops,
augmentation, masking, grid sampling, per-view capacities) and the budget fill of every pack of those steps
(`batch_size / data.pack_scenes` packs per step, each filled from its window of `data.pack_scenes` examples,
`packing.fill_pack`), and prints ONE JSON line:

  * teacher/student `fill` and `capacity` per stage: mean real points per pack and the pack's slot budget, so
    fill/capacity is the occupied fraction; `sequence`: the attention sequence budget;
  * `useful_fraction`: what a real point needs over what the compiled program computes:
    sum_s real_s (d_s + a_s) / sum_s (N_s d_s + L_s a_s), with d_s the encoder's FLOPs per slot at stage s
    (dense: qkv/proj, 27-tap CPE, MLP per block, pooling, embedding and upcast), a_s the patch attention's FLOPs
    per sequence position (QK^T and AV over P keys per block), N_s the slot budget and L_s the sequence budget
    (whole patches), teacher forward (x1) plus student forward+backward (x3); per branch too;
  * `scenes_per_pack` (mean, min, max) and `views_per_step` (the fill builds every example of each window);
  * `gflops_per_step`: XLA cost analysis of one pack's encoder work (teacher forward + student value_and_grad),
    lowered, not compiled (`--flops_variant small` for a cheaper lowering), next to the analytic count;
  * dropped points: views that lost points to their per-view capacity (the only points ever dropped), and scenes
    too large for an empty pack (`oversize_scenes`, skipped).

Calibration (`--calibrate`): the budgets of a pack that holds `--fill_scenes` scenes: over groups of that many
consecutive examples (steps 100000+, so measuring steps 0.. sees other draws), the `--quantile` of each stage's
real points (slots) and layout footprint (sequence), times `--margin` (sequence budgets also times
`--sequence_margin`: a position costs only attention, a fraction of a slot's FLOPs, and scenes smaller than the
calibration's waste more positions on partial patches, so the slots rather than the sequence should fill up);
every budget at least the largest single scene seen, the teacher's stage 0 at least one scene at its per-view
capacity. Packs then hold about `--fill_scenes` scenes, more when scenes are small; the window
`data.pack_scenes` must be larger, so small scenes can fill the budget (the fill stops at the window's end).
`--tighten` then fills packs from the sampled examples with those budgets, as training would, and shrinks each
slot budget to the most any pack used: a pack ends when ONE budget is full, so the other stages kept slack that
no pack needed (the packs of the sample are unchanged by it).

Data: `data.root` when it exists; otherwise the real scans beside the checkout for scannet (VoteNet 50k-point
scans) and semantickitti (4 frames), read in place; `--split calib|heldout` takes the calibration or the held-out
part of them (`benchmarks/scans.py`: ScanNet rooms 0000/0002/0004 vs 0001/0003/0005; KITTI sequence 01 vs the
spvnas frame).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import scans  # noqa: E402
from dos_jax import io as io_lib  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.batching import packing  # noqa: E402
from dos_jax.batching import pipeline  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.models import encoder  # noqa: E402

CALIBRATION_STEP0 = 100_000

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_SCENES = flags.DEFINE_integer("scenes", 4, "Steps to sample (each: batch_size examples on one host).")
_STEP0 = flags.DEFINE_integer("first_step", 0, "First sampled step (calibration: 100000 unless set).")
_SPLIT = flags.DEFINE_enum("split", "all", scans.SPLITS, "Part of the shared scans to read (calib | heldout).")
_CALIBRATE = flags.DEFINE_bool("calibrate", False, "Write pack budgets instead of measuring.")
_FILL = flags.DEFINE_integer("fill_scenes", 0, "Calibration: scenes a budget holds (0 = data.pack_scenes // 2).")
_QUANTILE = flags.DEFINE_float("quantile", 0.5, "Calibration: quantile of the groups' needs to cover.")
_MARGIN = flags.DEFINE_float("margin", 1.0, "Calibration: multiplier on that quantile.")
_SEQ_MARGIN = flags.DEFINE_float("sequence_margin", 1.25, "Calibration: extra multiplier on sequence budgets.")
_OUT = flags.DEFINE_string("out", "", "Calibration: JSON file to write (atomically).")
_TIGHTEN = flags.DEFINE_bool("tighten", False, "Calibration: shrink each slot budget to what the fill of the "
                             "sampled examples uses (packs unchanged; packing.fill_usage).")
_FLOPS = flags.DEFINE_bool("flops", True, "Lower the encoder and report XLA's FLOP count.")
_FLOPS_VARIANT = flags.DEFINE_string("flops_variant", "", "Variant for the XLA count (default: the config's).")
flags.mark_flags_as_required(["config"])


def slot_flops(variant: str, mlp_ratio: float, in_channels: int, stage_seq, patch_sizes):
  """Forward FLOPs (2 per multiply-add) per stage: (dense per slot, attention per sequence position).

  Dense: blocks' CPE 27C^2 + C^2, qkv 3C^2, proj C^2, MLP 2rC^2, the pooling into the next stage, and at stage 0
  the embedding and the upcast projection. Attention: QK^T and AV over P = min(P_s, L_s) keys, 2PC per block.
  """
  spec = variants.decode_variant(variant)
  ch, depths = spec["channels"], spec["depths"]
  patches_ = packing.stage_patches(patch_sizes, len(ch))
  d_out = sum(ch)
  dense, attn = [], []
  for s, (c, d) in enumerate(zip(ch, depths)):
    p = min(patches_[s], int(stage_seq[s]))
    macs = d * (32 + 2 * mlp_ratio) * c * c
    if s + 1 < len(ch):
      macs += c * ch[s + 1]
    if s == 0:
      macs += in_channels * c + d_out * d_out
    dense.append(2.0 * macs)
    attn.append(2.0 * d * 2 * p * c)
  return np.array(dense), np.array(attn)


def positions(seq, patch_sizes):
  """Attention positions the program computes per stage: L_s rounded up to whole patches of min(P_s, L_s)."""
  patches_ = packing.stage_patches(patch_sizes, len(seq))
  return np.array([-(-int(n) // min(p, int(n))) * min(p, int(n)) for n, p in zip(seq, patches_)], np.float64)


def sample(pipe, scenes, steps):
  """The budget-filled packs of `steps` of a one-host run: (teacher i64[packs, S], student i64[packs, S] real points
  per pack and stage, scenes per pack i64[packs], stats: the members' drop counts plus 'oversize_scenes')."""
  examples = pipeline.global_examples(pipe, scenes)
  stats = {}
  teacher, student, members = [], [], []
  for step in steps:
    for k in range(step * pipe.packs_per_step, (step + 1) * pipe.packs_per_step):
      chosen = pipeline.pack_members(pipe, examples, k, stats)
      for e in chosen:
        for key, value in e.stats.items():
          stats[key] = stats.get(key, 0) + value
      teacher.append(sum(e.counts("teacher").sum(0) for e in chosen))
      student.append(sum(e.counts("student").sum(0) for e in chosen))
      members.append(len(chosen))
  return np.array(teacher), np.array(student), np.array(members), stats


def xla_gflops(cfg, variant, teacher_caps, student_caps, sets: int, in_channels: int, teacher_seq, student_seq):
  """XLA's FLOP count of one device's encoder work (teacher fwd + student fwd/bwd), lowered on shapes only."""
  spec = variants.decode_variant(variant)
  from dos_jax.models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
  model = ModelSpec(variant=variant, dtype="float32", drop_path=0.0, mlp_ratio=float(cfg.model.mlp_ratio))

  def fake(caps, seq):
    n0 = caps[0]
    coord = np.zeros((n0, 3), np.float32)
    st = []
    for c, n in zip(caps, seq):
      st.append(dict(grid=np.zeros((c, 3), np.int32), valid=np.zeros(c, bool),
                     order=np.zeros((4, n), np.int32), inverse=np.zeros((4, c), np.int32),
                     neighbors=np.full((c, 27), c, np.int32), segment=np.zeros(c, np.int32)))
    from dos_jax.batching import structs  # pylint: disable=g-import-not-at-top
    ps = structs.PointSet(coord=coord, feat=np.zeros((n0, in_channels), np.float32),
                          stages=tuple(structs.Stage(**d) for d in st),
                          parent=tuple(np.zeros(c, np.int32) for c in caps[:-1]), point_index=np.zeros(n0, np.int32))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((sets,) + x.shape, x.dtype), ps)

  t_pts, s_pts = fake(teacher_caps, teacher_seq), fake(student_caps, student_seq)
  small = jax.tree.map(lambda x: np.zeros((1,) + x.shape[1:], x.dtype), s_pts)
  params = jax.eval_shape(lambda: encoder.init(jax.random.key(0), small, model))

  def work(p, t, s):
    feat_t = jax.lax.stop_gradient(encoder.apply(p, t, train=False, spec=model))
    loss, grads = jax.value_and_grad(lambda q: jnp.mean(jnp.square(encoder.apply(q, s, train=False, spec=model))))(p)
    return jnp.sum(feat_t) + loss, grads

  del spec
  t0 = time.perf_counter()
  cost = jax.jit(work).lower(params, t_pts, s_pts).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 1e9, time.perf_counter() - t0


def measure(cfg, scenes, data_name):
  pipe = spec_lib.pipeline_spec(cfg)
  params, spec = pipe.batch, pipe.pack
  patch_sizes = spec.patch_size
  steps = range(_STEP0.value, _STEP0.value + _SCENES.value)
  t_counts, s_counts, members, stats = sample(pipe, scenes, steps)
  in_ch = params.feat_dim
  variant = cfg.model.variant
  t_caps, s_caps = list(spec.teacher), list(spec.student)
  t_seq, s_seq = list(spec.teacher_sequence), list(spec.student_sequence)
  t_real, s_real = t_counts.mean(0), s_counts.mean(0)
  mlp = float(cfg.model.mlp_ratio)

  def cost(fv):
    """(useful, compiled) FLOPs per pack of each branch for variant fv."""
    out = {}
    for name, real, caps, seq in (("teacher", t_real, t_caps, t_seq), ("student", s_real, s_caps, s_seq)):
      dense, attn = slot_flops(fv, mlp, in_ch, seq, patch_sizes)
      out[name] = (float(real @ (dense + attn)), float(np.array(caps) @ dense + positions(seq, patch_sizes) @ attn))
    return out

  c = cost(variant)
  useful = {k: u / d for k, (u, d) in c.items()}
  num = c["teacher"][0] + 3 * c["student"][0]
  den = c["teacher"][1] + 3 * c["student"][1]

  def branch(real, caps, seq):
    return dict(fill=[round(float(v), 1) for v in real], capacity=[int(x) for x in caps],
                fill_fraction=[round(float(a / b), 4) for a, b in zip(real, caps)], sequence=[int(x) for x in seq])

  packs = len(members)
  out = dict(benchmark="padding", config=_CONFIG_PATH[0], data=data_name, variant=variant,
             pack_scenes=spec.pack_scenes, packs_per_step=pipe.packs_per_step, sampled_steps=len(steps),
             sampled_packs=packs,
             scenes_per_pack=dict(mean=round(float(members.mean()), 3), min=int(members.min()), max=int(members.max())),
             views_per_step=round(float(members.mean()) * pipe.packs_per_step * params.num_views, 2),
             teacher=branch(t_real, t_caps, t_seq), student=branch(s_real, s_caps, s_seq),
             useful_fraction=round(float(num / den), 4),
             useful_fraction_by_branch={k: round(v, 4) for k, v in useful.items()},
             gflops_analytic=round(float(den) / 1e9, 2))
  views = max(1, stats.get("teacher_views", 0))
  out["dropped"] = dict(
      teacher_views_frac=round(stats.get("teacher_views_dropped", 0) / views, 4),
      student_views_frac=round(stats.get("student_views_dropped", 0) / max(1, stats.get("student_views", 0)), 4),
      teacher_points_frac=round(stats.get("teacher_points_dropped", 0) / max(1, stats.get("teacher_points", 0)), 5),
      student_points_frac=round(stats.get("student_points_dropped", 0) / max(1, stats.get("student_points", 0)), 5),
      oversize_scenes=int(stats.get("oversize_scenes", 0)))
  if _FLOPS.value:
    fv = _FLOPS_VARIANT.value or variant
    gf, secs = xla_gflops(cfg, fv, t_caps, s_caps, 1, in_ch, t_seq, s_seq)
    out.update(gflops_per_step=round(gf * pipe.packs_per_step, 2), gflops_per_pack=round(gf, 2), gflops_variant=fv,
               lower_seconds=round(secs, 1))
    if fv != variant:
      c2 = cost(fv)
      out["gflops_analytic_flops_variant"] = round((c2["teacher"][1] + 3 * c2["student"][1]) / 1e9, 2)
  return out


def calibrate(cfg, scenes, data_name):
  pipe = spec_lib.pipeline_spec(cfg)
  params = pipe.batch
  patch_sizes = pipe.pack.patch_size
  fill = _FILL.value or max(1, pipe.pack.pack_scenes // 2)
  first = _STEP0.value or CALIBRATION_STEP0
  examples = pipeline.global_examples(pipe, scenes)
  # Only the per-view stage counts are kept (a KITTI example's views are tens of MB).
  chosen = [{name: e.counts(name) for name in ("teacher", "student")}
            for e in (examples[g] for g in range(first * pipe.batch_size, (first + _SCENES.value) * pipe.batch_size))]
  q, m = _QUANTILE.value, _MARGIN.value
  one = spec_lib.default_budgets(params, 1)
  sizes, smp, floors = {}, {}, {}
  for name in ("teacher", "student"):
    groups = [np.concatenate([e[name] for e in chosen[i:i + fill]]) for i in range(0, len(chosen) - fill + 1, fill)]
    smp[f"{name}_total"] = np.array([c.sum(0) for c in groups])
    smp[f"{name}_footprint"] = np.array([packing.footprints(c, patch_sizes) for c in groups])
    # The largest single scene seen, so every scene like the calibration's fits an empty pack.
    single = np.array([e[name].sum(0) for e in chosen]).max(0)
    single_fp = np.array([packing.footprints(e[name], patch_sizes) for e in chosen]).max(0)
    slots = packing.calibrate(smp[f"{name}_total"], patch_sizes, q, m, kind="slots")
    seq = packing.calibrate(smp[f"{name}_footprint"], patch_sizes, q, m * _SEQ_MARGIN.value, kind="sequence")
    floor = [packing.round_capacity(b) for b in single]
    floor_seq = packing.calibrate(single_fp[None], patch_sizes, 1.0, 1.0, "sequence")
    if name == "teacher":  # the gate's floor: one scene at its per-view capacity (spec.pipeline_spec)
      floor[0], floor_seq[0] = max(floor[0], one["teacher"][0]), max(floor_seq[0], one["teacher_sequence"][0])
    floors[name] = floor
    sizes[name] = [max(a, b) for a, b in zip(slots, floor)]
    sizes[f"{name}_sequence"] = [max(a, b) for a, b in zip(seq, floor_seq)]
  tightened = None
  if _TIGHTEN.value:
    budgets = dataclasses.replace(pipe.pack, teacher=tuple(sizes["teacher"]), student=tuple(sizes["student"]),
                                  teacher_sequence=tuple(sizes["teacher_sequence"]),
                                  student_sequence=tuple(sizes["student_sequence"]))
    tightened = packing.fill_usage(chosen, budgets)
    # Slot budgets only: sequence budgets keep their margin, since scans smaller than the calibration's need more
    # positions per point (partial patches). Shrinking them too lost 5 points of useful work on ScanNet's held-out
    # rooms (84.6 -> 79.2%); shrinking the slots alone gained (benchmarks/RESULTS.md).
    for name in ("teacher", "student"):  # never below the floors above
      sizes[name] = [min(a, max(packing.round_capacity(u), f))
                     for a, u, f in zip(sizes[name], tightened[name], floors[name])]
  out = dict(benchmark="padding-calibration", config=_CONFIG_PATH[0], data=data_name,
             pack_scenes=pipe.pack.pack_scenes, fill_scenes=fill, sampled_scenes=len(chosen),
             sampled_groups=len(smp["teacher_total"]), quantile=q, margin=m,
             tightened_over_packs=tightened["packs"] if tightened else 0,
             packed_capacity=sizes["teacher"], packed_student_capacity=sizes["student"],
             packed_sequence=sizes["teacher_sequence"], packed_student_sequence=sizes["student_sequence"],
             real_mean={k: smp[f"{k}_total"].mean(0).round(1).tolist() for k in ("teacher", "student")},
             real_max={k: smp[f"{k}_total"].max(0).tolist() for k in ("teacher", "student")},
             footprint_mean={k: smp[f"{k}_footprint"].mean(0).round(1).tolist() for k in ("teacher", "student")},
             overrides=(f"--config.data.pack_scenes={pipe.pack.pack_scenes} "
                        f"--config.data.packed_capacity='{tuple(sizes['teacher'])}' "
                        f"--config.data.packed_student_capacity='{tuple(sizes['student'])}' "
                        f"--config.data.packed_sequence='{tuple(sizes['teacher_sequence'])}' "
                        f"--config.data.packed_student_sequence='{tuple(sizes['student_sequence'])}'"))
  if _OUT.value:
    with io_lib.atomic_open(_OUT.value) as f:
      json.dump(out, f, indent=1)
  return out


_CONFIG_PATH = [""]


def main(argv):
  del argv
  cfg = _CONFIG.value
  if _CALIBRATE.value:  # calibration computes the budgets: the config need not hold them yet
    cfg = cfg.copy_and_resolve_references()
    for key in ("packed_capacity", "packed_student_capacity", "packed_sequence", "packed_student_sequence"):
      cfg.data[key] = ()
  cfg = schema.validate(cfg)  # the gate, as in training: the layers below do not check the config again
  _CONFIG_PATH[0] = config_flags.get_config_filename(flags.FLAGS["config"])
  scenes, data_name = scans.scene_list(cfg, _SPLIT.value)
  out = calibrate(cfg, scenes, data_name) if _CALIBRATE.value else measure(cfg, scenes, data_name)
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  app.run(main)
