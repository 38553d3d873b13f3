r"""How much of the encoder's work touches a real point: per-stage fill, useful FLOP fraction, compiled GFLOPs.

  python benchmarks/padding.py --config configs/scannet.py [--config.key=value ...] [--scenes N]
  python benchmarks/padding.py --config configs/scannet.py --calibrate [--quantile 1.0 --margin 1.05] \
      [--out caps.json]          # per-stage packed capacities from the view pipeline (prints the overrides)
  python benchmarks/padding.py --config configs/scannet.py --config.data.packing=True   # packed batches

Runs the real view pipeline (crops, augmentation, masking, grid sampling, per-view capacities) over `--scenes`
steps of `batch_size` scenes on one host, grouped into balanced packs of `data.pack_scenes` scenes (the batch per
device; 0 = `batch_size`), and prints ONE JSON line:

  * teacher/student `fill` and `capacity` per stage: mean real points per set and the set's capacity (per view
    unpacked; per pack with data.packing=True), so fill/capacity is the occupied fraction;
  * `useful_fraction`: what a real point needs over what the compiled program computes:
    sum_s real_s (d_s + a_s) / sum_s (N_s d_s + L_s a_s), with d_s the encoder's FLOPs per slot at stage s
    (dense: qkv/proj, 27-tap CPE, MLP per block, pooling, embedding and upcast), a_s the patch attention's FLOPs
    per sequence position (QK^T and AV over P keys per block), N_s the slots and L_s the attention positions
    (whole patches; = N_s per view and for packs without a separate sequence), teacher forward (x1) plus
    student forward+backward (x3); per branch too;
  * `gflops_per_step`: XLA cost analysis of one device's encoder work (teacher forward + student
    value_and_grad), lowered, not compiled (`--flops-variant small` for a cheaper lowering), next to the
    analytic count from c_s (`gflops_analytic`);
  * dropped points: views that lost points to a capacity (per-view today, plus pack shrinks when packed).

Data: `data.root` when it exists; otherwise the real scans beside the checkout for scannet (VoteNet 50k-point
scans) and semantickitti (4 frames), read in place. Calibration samples steps 100000+ so evaluation (steps
0..N-1) sees packs it was not fitted on.
"""

from __future__ import annotations

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

from benchmarks.scans import scene_list  # noqa: E402
from dos_jax import io as io_lib  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.batching import packing  # noqa: E402
from dos_jax.batching import patches  # noqa: E402
from dos_jax.batching import pipeline  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.models import encoder  # noqa: E402

CALIBRATION_STEP0 = 100_000

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_SCENES = flags.DEFINE_integer("scenes", 4, "Steps to sample (each: batch_size scenes on one host).")
_STEP0 = flags.DEFINE_integer("first_step", 0, "First sampled step (calibration: 100000 unless set).")
_CALIBRATE = flags.DEFINE_bool("calibrate", False, "Write packed capacities instead of measuring.")
_QUANTILE = flags.DEFINE_float("quantile", 1.0, "Calibration: quantile of packed footprints to cover.")
_MARGIN = flags.DEFINE_float("margin", 1.05, "Calibration: headroom multiplier on that quantile.")
_OUT = flags.DEFINE_string("out", "", "Calibration: JSON file to write (atomically).")
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


def sample(cfg, params, scenes, steps, packed: bool):
  """Stage counts over `steps` of a one-host run (batch_size scenes per step, the training pipeline's examples).

  Returns (teacher, student, stats, per_pack, samples): counts i64[sets, S] per view (today's batching) or
  per pack (data.packing=True); samples (None when packed): for the balanced packs the packed pipeline builds
  from the same views, dict of i64[packs, S]: real points ('teacher_total', 'student_total') and sequence
  footprints ('teacher_footprint', 'student_footprint'), for calibration.
  """
  per_pack = int(cfg.data.pack_scenes or 0) or int(cfg.batch_size)
  batch = int(cfg.batch_size)
  as_packed = cfg.copy_and_resolve_references()
  as_packed.data.packing = True  # examples carry their drop counts; the views are the unpacked pipeline's
  pipe = spec_lib.pipeline_spec(as_packed)  # its batch is `params` (packing does not change the views)
  examples = pipeline.global_examples(pipe, scenes)
  stats = {}
  teacher, student = [], []
  samples = {k: [] for k in ("teacher_total", "student_total", "teacher_footprint", "student_footprint")}
  patch_sizes = params.patch_sizes or params.patch_size
  for step in steps:
    chosen = [examples[g] for g in range(step * batch, (step + 1) * batch)]
    if packed:
      for pack in pipeline.pack_examples(chosen, pipe, stats):
        teacher.append(packing.stage_counts(pack.teacher))
        student.append(packing.stage_counts(pack.student))
      continue
    for e in chosen:
      for key, value in e.stats.items():
        stats[key] = stats.get(key, 0) + value
    for members in packing.assign_packs([packing.scene_load(e.views) for e in chosen], per_pack):
      pieces = [p for i in members for p in chosen[i].views]
      t = np.array([packing.stage_counts(p.teacher) for p in pieces])
      s = np.array([packing.stage_counts(p.student) for p in pieces])
      teacher.extend(t)
      student.extend(s)
      for name, c in (("teacher", t), ("student", s)):
        samples[f"{name}_total"].append(c.sum(0))
        samples[f"{name}_footprint"].append(packing.footprints(c, patch_sizes))
  samples = None if packed else {k: np.array(v) for k, v in samples.items()}
  return np.array(teacher), np.array(student), stats, per_pack, samples


def xla_gflops(cfg, variant, teacher_caps, student_caps, sets: int, in_channels: int, teacher_seq, student_seq):
  """XLA's FLOP count of one device's encoder work (teacher fwd + student fwd/bwd), lowered on shapes only."""
  spec = variants.decode_variant(variant)
  from dos_jax.models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
  model = ModelSpec(variant=variant, dtype="float32", drop_path=0.0, mlp_ratio=float(cfg.model.mlp_ratio))

  def fake(caps, seq, packed):
    n0 = caps[0]
    coord = np.zeros((n0, 3), np.float32)
    st = []
    for c, n in zip(caps, seq):
      st.append(dict(grid=np.zeros((c, 3), np.int32), valid=np.zeros(c, bool),
                     order=np.zeros((4, n), np.int32), inverse=np.zeros((4, c), np.int32),
                     neighbors=np.full((c, 27), c, np.int32), segment=np.zeros(c, np.int32) if packed else None))
    from dos_jax.batching import structs  # pylint: disable=g-import-not-at-top
    ps = structs.PointSet(coord=coord, feat=np.zeros((n0, in_channels), np.float32),
                          stages=tuple(structs.Stage(**d) for d in st),
                          parent=tuple(np.zeros(c, np.int32) for c in caps[:-1]), point_index=np.zeros(n0, np.int32))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((sets,) + x.shape, x.dtype), ps)

  packed = bool(cfg.data.packing)
  t_pts, s_pts = fake(teacher_caps, teacher_seq, packed), fake(student_caps, student_seq, packed)
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
  params = spec_lib.batch_spec(cfg)
  patch_sizes = params.patch_sizes or params.patch_size
  packed = bool(cfg.data.packing)
  steps = range(_STEP0.value, _STEP0.value + _SCENES.value)
  t_counts, s_counts, stats, per_pack, _ = sample(cfg, params, scenes, steps, packed)
  in_ch = params.feat_dim
  variant = cfg.model.variant
  if packed:
    spec = spec_lib.pipeline_spec(cfg).pack
    t_caps, s_caps = list(spec.teacher), list(spec.student)
    t_seq, s_seq = list(spec.teacher_sequence), list(spec.student_sequence)
    sets = 1                                                        # per pack
  else:
    t_caps = patches.stage_capacities(params.capacity, params.num_stages, params.patch_size, params.stage_ratio)
    s_caps = patches.stage_capacities(params.student_set_capacity, params.num_stages, params.patch_size,
                                      params.stage_ratio)
    t_seq, s_seq = t_caps, s_caps                                   # per view: positions are slots
    sets = per_pack * params.num_views
  t_real, s_real = t_counts.mean(0), s_counts.mean(0)
  mlp = float(cfg.model.mlp_ratio)

  def cost(fv):
    """(useful, compiled) FLOPs per set of each branch for variant fv."""
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
    out = dict(fill=[round(float(v), 1) for v in real], capacity=[int(x) for x in caps],
               fill_fraction=[round(float(a / b), 4) for a, b in zip(real, caps)])
    if packed:
      out.update(sequence=[int(x) for x in seq])
    return out

  out = dict(benchmark="padding", config=_CONFIG_PATH[0], data=data_name,
             packing=packed, variant=variant, scenes_per_device=per_pack, views_per_device=per_pack * params.num_views,
             sampled_steps=len(steps), teacher=branch(t_real, t_caps, t_seq), student=branch(s_real, s_caps, s_seq),
             useful_fraction=round(float(num / den), 4),
             useful_fraction_by_branch={k: round(v, 4) for k, v in useful.items()},
             gflops_analytic=round(float(sets * den) / 1e9, 2))
  views = max(1, stats.get("teacher_views", 0))
  out["dropped"] = dict(
      teacher_views_frac=round(stats.get("teacher_views_dropped", 0) / views, 4),
      student_views_frac=round(stats.get("student_views_dropped", 0) / max(1, stats.get("student_views", 0)), 4),
      teacher_points_frac=round(stats.get("teacher_points_dropped", 0) / max(1, stats.get("teacher_points", 0)), 5),
      student_points_frac=round(stats.get("student_points_dropped", 0) / max(1, stats.get("student_points", 0)), 5),
      pack_shrinks=int(stats.get("pack_shrinks", 0)))
  if _FLOPS.value:
    fv = _FLOPS_VARIANT.value or variant
    gf, secs = xla_gflops(cfg, fv, t_caps, s_caps, sets, in_ch, t_seq, s_seq)
    out.update(gflops_per_step=round(gf, 2), gflops_variant=fv, lower_seconds=round(secs, 1))
    if fv != variant:
      c2 = cost(fv)
      out["gflops_analytic_flops_variant"] = round(sets * (c2["teacher"][1] + 3 * c2["student"][1]) / 1e9, 2)
  return out


def calibrate(cfg, scenes, data_name):
  params = spec_lib.batch_spec(cfg)
  patch_sizes = params.patch_sizes or params.patch_size
  first = _STEP0.value or CALIBRATION_STEP0
  steps = range(first, first + _SCENES.value)
  _, _, _, per_pack, smp = sample(cfg, params, scenes, steps, packed=False)
  q, m = _QUANTILE.value, _MARGIN.value
  sizes = {}
  views = per_pack * params.num_views
  stage_patch = packing.stage_patches(patch_sizes, params.num_stages)
  for name, cap in (("teacher", params.capacity), ("student", params.student_set_capacity)):
    # A pack never holds more than its views' per-view stage capacities (each view is cut to them first), nor
    # needs a longer sequence where those capacities are whole patches: the margin stops there.
    view_caps = patches.stage_capacities(cap, params.num_stages, params.patch_size, params.stage_ratio)
    slots = packing.calibrate(smp[f"{name}_total"], patch_sizes, q, m, kind="slots")
    seq = packing.calibrate(smp[f"{name}_footprint"], patch_sizes, q, m, kind="sequence")
    sizes[name] = [min(a, views * c) for a, c in zip(slots, view_caps)]
    sizes[f"{name}_sequence"] = [min(a, views * c) if c >= p else a for a, c, p in zip(seq, view_caps, stage_patch)]
  out = dict(benchmark="padding-calibration", config=_CONFIG_PATH[0], data=data_name, pack_scenes=per_pack,
             sampled_steps=len(steps), sampled_packs=len(smp["teacher_total"]), quantile=q, margin=m,
             packed_capacity=sizes["teacher"], packed_student_capacity=sizes["student"],
             packed_sequence=sizes["teacher_sequence"], packed_student_sequence=sizes["student_sequence"],
             real_mean={k: smp[f"{k}_total"].mean(0).round(1).tolist() for k in ("teacher", "student")},
             real_max={k: smp[f"{k}_total"].max(0).tolist() for k in ("teacher", "student")},
             footprint_mean={k: smp[f"{k}_footprint"].mean(0).round(1).tolist() for k in ("teacher", "student")},
             footprint_max={k: smp[f"{k}_footprint"].max(0).tolist() for k in ("teacher", "student")},
             overrides=(f"--config.data.packing=True --config.data.pack_scenes={per_pack} "
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
  if _CALIBRATE.value:  # calibration computes the packed sizes: the config need not hold them yet
    cfg = cfg.copy_and_resolve_references()
    cfg.data.packing = False
  cfg = schema.validate(cfg)  # the gate, as in training: the layers below do not check the config again
  _CONFIG_PATH[0] = config_flags.get_config_filename(flags.FLAGS["config"])
  scenes, data_name = scene_list(cfg)
  out = calibrate(cfg, scenes, data_name) if _CALIBRATE.value else measure(cfg, scenes, data_name)
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  app.run(main)
