"""Config decoding for the host-side batching: `batch_spec(cfg) -> BatchSpec`, `pipeline_spec(cfg) -> PipelineSpec`.

`cfg` is a config the gate (`dos_jax.schema.validate`) has accepted: the values are not checked again here.
Keys read by `batch_spec` (under `cfg.data` unless noted): grid_size, capacity, student_capacity, num_views,
crop_ratio, mask_cell, overflow, feat_keys, stage_ratio, cross_radius, token_jitter_sigma, token_jitter_clip,
views, augmentations (() = `dos_jax.data.transforms.default_augmentations(kind)`), kind, mask_cell_start_ratio,
mask_cell_warmup_frac, crop_ratio_max, color_range; top level: mask_ratio, mask_ratio_start, mask_ratio_warmup_frac, total_steps, supervision,
model.variant (or the architecture of upstream's keys, `dos_jax.variants.upstream_architecture`, when
config.model carries a loaded Pointcept checkpoint's). `pipeline_spec` adds: seed, batch_size; data.num_workers,
data.prefetch, data.worker_backend, data.pack_scenes, data.packed_capacity, data.packed_student_capacity,
data.packed_sequence, data.packed_student_sequence (() = `default_budgets`), and checks what the JAX-free gate
cannot compute: that the teacher's stage-0 budgets hold one scene at its per-view capacity (data.capacity, what
real views reach), so every ordinary scene fits an empty pack. The student's and the deeper stages' per-view
capacities are far above what real views reach (masking keeps ~30%; pooling ~1/4 per stage), so they are not held
to them (`packing.fill_pack` skips a scene too large alone, and counts it).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple, Union

from dos_jax import variants
from dos_jax.data import transforms
from dos_jax.data import views as views_lib
from dos_jax.errors import ConfigError

# Channels contributed by each entry of data.feat_keys, concatenated in the listed order.
FEATURE_DIMS = {"coord": 3, "color": 3, "normal": 3, "strength": 1}
# Student sets: visible points only (DOS) or the full view with mask tokens (the token baselines).
SUPERVISION = ("observable", "masked_tokens", "token_jitter")
OVERFLOW = ("downsample", "error")  # a view larger than its capacity
WORKER_BACKENDS = ("thread", "process")  # dos_jax.batching.pipeline workers


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """What the host-side batching computes with, decoded once from a validated experiment config (`batch_spec`)."""
  grid_size: float
  capacity: int
  student_capacity: int
  num_views: int
  crop_ratio: float
  mask_cell: float
  mask_ratio: float
  supervision: str
  overflow: str
  feat_keys: Tuple[str, ...]
  num_stages: int
  patch_size: int
  stage_ratio: float
  cross_radius: float
  jitter_sigma: float
  jitter_clip: float
  views: str
  augmentations: tuple
  depth_rule: str = "recompute"  # serialization depth per stage (upstream PT-v3m1 checkpoints: 'inherit')
  stem_neighbors: bool = False   # PT-v3m1's 5x5x5 stem neighbour table
  patch_sizes: Tuple[int, ...] = ()  # attention patch size per stage (() = patch_size at every stage)
  # Masking warm-up (Sonata): ratio and cell size start at these values and rise linearly to mask_ratio and
  # mask_cell over the given number of steps (0 = the final values from step 0); see `mask_at`.
  crop_ratio_max: Optional[float] = None     # crops keep U[crop_ratio, crop_ratio_max] of a scene; None = fixed
  color_range: str = "unit"                  # colour features (dos_jax.data.color.COLOR_RANGES)
  mask_ratio_start: Optional[float] = None   # None = mask_ratio
  mask_ratio_warmup: int = 0
  mask_cell_start: Optional[float] = None    # metres; None = mask_cell
  mask_cell_warmup: int = 0

  def mask_at(self, step: Optional[int]) -> Tuple[float, float]:
    """(mask ratio, mask cell in metres) of the views of training step `step`; None = after the warm-up (the
    final values: evaluation, benchmarks, and callers that build views outside a run)."""
    if step is None:
      return self.mask_ratio, self.mask_cell
    ratio_start = self.mask_ratio if self.mask_ratio_start is None else self.mask_ratio_start
    cell_start = self.mask_cell if self.mask_cell_start is None else self.mask_cell_start
    return (views_lib.linear_warmup(ratio_start, self.mask_ratio, self.mask_ratio_warmup, step),
            views_lib.linear_warmup(cell_start, self.mask_cell, self.mask_cell_warmup, step))

  @property
  def feat_dim(self) -> int:
    return sum(FEATURE_DIMS[k] for k in self.feat_keys)

  @property
  def student_set_capacity(self) -> int:
    """Stage-0 capacity of the student set: visible points only, or the full view under the token variants."""
    return self.student_capacity if self.supervision == "observable" else self.capacity


def batch_spec(cfg) -> BatchSpec:
  """Decodes the batching keys of a validated config (lengths in metres)."""
  d = cfg.data
  layout = variants.stage_layout(cfg.model.variant, variants.upstream_architecture(cfg.model))
  return BatchSpec(
      grid_size=float(d.grid_size), capacity=int(d.capacity), student_capacity=int(d.student_capacity),
      num_views=int(d.num_views), crop_ratio=float(d.crop_ratio), mask_cell=float(d.mask_cell),
      mask_ratio=float(cfg.mask_ratio), supervision=str(cfg.supervision), overflow=str(d.overflow),
      feat_keys=tuple(d.feat_keys), num_stages=layout["num_stages"], patch_size=layout["patch_size"],
      stage_ratio=float(d.stage_ratio), cross_radius=float(d.cross_radius),
      jitter_sigma=float(d.token_jitter_sigma), jitter_clip=float(d.token_jitter_clip), views=str(d.views),
      augmentations=tuple(d.augmentations or transforms.default_augmentations(d.kind)),
      depth_rule=layout["depth_rule"], stem_neighbors=layout["stem_neighbors"],
      patch_sizes=tuple(layout["patch_sizes"]),
      # Warm-up lengths as Sonata's schedulers count them: int(total_steps * fraction).
      crop_ratio_max=float(d.crop_ratio_max), color_range=str(d.color_range),
      mask_ratio_start=float(cfg.mask_ratio_start), mask_ratio_warmup=int(cfg.total_steps * cfg.mask_ratio_warmup_frac),
      mask_cell_start=float(d.mask_cell) * float(d.mask_cell_start_ratio),
      mask_cell_warmup=int(cfg.total_steps * d.mask_cell_warmup_frac))


@dataclasses.dataclass(frozen=True)
class PackSpec:
  """How `dos_jax.batching.packing` fills and lays out one pack (the batch of one device, or one of several).

  Attributes (budgets in point slots / sequence positions, one entry per encoder stage):
    teacher, student: slot budgets N_s of a pack's teacher / student sets (data.packed_capacity,
      data.packed_student_capacity).
    teacher_sequence, student_sequence: attention sequence budgets L_s (data.packed_sequence,
      data.packed_student_sequence).
    pack_scenes: W, the pack's window of the global example sequence: the most scenes it can hold.
    patch_size: the model's attention patch size, an int for every stage or one per stage (BatchSpec.patch_sizes,
      else BatchSpec.patch_size).
    num_views: views per scene V (a pack of b scenes holds b * V views, scene-major).
  """
  teacher: Tuple[int, ...]
  student: Tuple[int, ...]
  teacher_sequence: Tuple[int, ...]
  student_sequence: Tuple[int, ...]
  pack_scenes: int
  patch_size: Union[int, Tuple[int, ...]]
  num_views: int

  @property
  def max_views(self) -> int:
    """M, the static number of view segments of a pack (W * V)."""
    return self.pack_scenes * self.num_views


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  """What the training input pipeline (`dos_jax.batching.pipeline`) computes with.

  Attributes:
    batch: the views' batching (`BatchSpec`).
    seed: the run seed (scene order and every host-side random draw of an example).
    batch_size: global examples a step draws: packs per step x pack.pack_scenes (the most scenes of a step).
    pack: the packing (`PackSpec`).
    num_workers: batch-building workers; 0 = in the consumer's thread.
    prefetch: batches built ahead per worker.
    worker_backend: 'thread' | 'process' (WORKER_BACKENDS).
  """
  batch: BatchSpec
  seed: int
  batch_size: int
  pack: PackSpec
  num_workers: int
  prefetch: int
  worker_backend: str

  @property
  def packs_per_step(self) -> int:
    return self.batch_size // self.pack.pack_scenes


def _ints(values) -> Tuple[int, ...]:
  return tuple(int(c) for c in values)


def _stage_patches(batch: BatchSpec):
  return list(batch.patch_sizes) if batch.patch_sizes else [batch.patch_size] * batch.num_stages


def worst_sequence(views: int, capacity: int, patch: int) -> int:
  """The most sequence positions `views` views of at most `capacity` points each can take at a stage with
  attention patch `patch` (`packing.layout`): a long view ceil(n / P) whole patches; short views (n <= P) go
  first-fit into patches, where at most one patch is half full or less, so they need at most 2 * total / P + 1
  patches (and never more than one each)."""
  if views * capacity <= patch:
    return views * capacity
  if capacity > patch:
    return views * (-(-capacity // patch)) * patch
  return min(views, 2 * views * capacity // patch + 1) * patch


def default_budgets(batch: BatchSpec, scenes: int) -> Dict[str, Tuple[int, ...]]:
  """Budgets that hold `scenes` scenes at their per-view stage capacities (the per-view padded batch, as a
  pack): {'teacher', 'student', 'teacher_sequence', 'student_sequence'} -> per-stage tuples."""
  # Here, not at the top: the gate (dos_jax.schema) imports this module and must not pull in flax/JAX (structs).
  from dos_jax.batching import patches  # pylint: disable=g-import-not-at-top
  views = scenes * batch.num_views
  out = {}
  for name, cap in (("teacher", batch.capacity), ("student", batch.student_set_capacity)):
    caps = patches.stage_capacities(cap, batch.num_stages, batch.patch_size, batch.stage_ratio)
    out[name] = tuple(views * c for c in caps)
    out[f"{name}_sequence"] = tuple(worst_sequence(views, c, p) for c, p in zip(caps, _stage_patches(batch)))
  return out


def pipeline_spec(cfg) -> PipelineSpec:
  """Decodes the input-pipeline keys of a validated config (see the module docstring).

  Raises:
    ConfigError naming the key when a teacher stage-0 budget cannot hold one scene at its per-view capacity.
  """
  d = cfg.data
  batch = batch_spec(cfg)
  scenes = int(d.pack_scenes)
  one = default_budgets(batch, 1)
  full = default_budgets(batch, scenes)
  given_budgets = {"teacher": ("packed_capacity", d.packed_capacity),
                   "student": ("packed_student_capacity", d.packed_student_capacity),
                   "teacher_sequence": ("packed_sequence", d.packed_sequence),
                   "student_sequence": ("packed_student_sequence", d.packed_student_sequence)}
  budgets = {}
  for name, (key, value) in given_budgets.items():
    given = _ints(value)
    budgets[name] = given or full[name]
    if name.startswith("teacher") and budgets[name][0] < one[name][0]:
      raise ConfigError(f"config.data.{key}={given}: stage 0 holds {budgets[name][0]}, less than one scene at its "
                        f"per-view capacities needs ({one[name][0]}); "
                        "recalibrate with benchmarks/padding.py --calibrate, or lower data.capacity / "
                        "data.student_capacity")
  pack = PackSpec(pack_scenes=scenes, patch_size=batch.patch_sizes or batch.patch_size, num_views=batch.num_views,
                  **budgets)
  return PipelineSpec(batch=batch, seed=int(cfg.seed), batch_size=int(cfg.batch_size), pack=pack,
                      num_workers=int(d.num_workers), prefetch=int(d.prefetch),
                      worker_backend=str(d.worker_backend))
