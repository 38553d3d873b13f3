"""Config decoding for the host-side batching: `batch_spec(cfg) -> BatchSpec`, `pipeline_spec(cfg) -> PipelineSpec`.

`cfg` is a config the gate (`dos_jax.schema.validate`) has accepted: the values are not checked again here.
Keys read by `batch_spec` (under `cfg.data` unless noted): grid_size, capacity, student_capacity, num_views,
crop_ratio, mask_cell, overflow, feat_keys, stage_ratio, cross_radius, token_jitter_sigma, token_jitter_clip,
views, augmentations (() = `dos_jax.data.transforms.default_augmentations(kind)`), kind, mask_cell_start_ratio,
mask_cell_warmup_frac, crop_ratio_max, color_range; top level: mask_ratio, mask_ratio_start, mask_ratio_warmup_frac, total_steps, supervision,
model.variant (or the architecture of upstream's keys, `dos_jax.variants.upstream_architecture`, when
config.model carries a loaded Pointcept checkpoint's). `pipeline_spec` adds: seed, batch_size; data.num_workers,
data.prefetch, data.worker_backend, data.packing, data.pack_scenes, data.packed_capacity,
data.packed_student_capacity, data.packed_sequence, data.packed_student_sequence.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple, Union

from dos_jax import variants
from dos_jax.data import transforms
from dos_jax.data import views as views_lib

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
  """How `dos_jax.batching.packing` packs the views of one device's scenes into one point set per stage.

  Attributes (sizes in point slots / sequence positions, one entry per encoder stage):
    teacher, student: slot capacities N_s of a pack's teacher / student sets (data.packed_capacity,
      data.packed_student_capacity).
    teacher_sequence, student_sequence: attention sequence lengths L_s (data.packed_sequence,
      data.packed_student_sequence; the slot capacities where the config leaves them ()).
    pack_scenes: scenes per pack (= per device); 0 = all the scenes of the host's step.
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


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  """What the training input pipeline (`dos_jax.batching.pipeline`) computes with.

  Attributes:
    batch: the views' batching (`BatchSpec`).
    seed: the run seed (scene order and every host-side random draw of an example).
    batch_size: scenes per step over all processes (global).
    pack: the packing (`PackSpec`); None = packing off (per-view padded batches).
    num_workers: batch-building workers; 0 = in the consumer's thread.
    prefetch: batches built ahead per worker.
    worker_backend: 'thread' | 'process' (WORKER_BACKENDS).
  """
  batch: BatchSpec
  seed: int
  batch_size: int
  pack: Optional[PackSpec]
  num_workers: int
  prefetch: int
  worker_backend: str


def _ints(values) -> Tuple[int, ...]:
  return tuple(int(c) for c in values)


def pipeline_spec(cfg) -> PipelineSpec:
  """Decodes the input-pipeline keys of a validated config (see the module docstring)."""
  d = cfg.data
  batch = batch_spec(cfg)
  pack = None
  if d.packing:
    teacher, student = _ints(d.packed_capacity), _ints(d.packed_student_capacity)
    pack = PackSpec(teacher=teacher, student=student, teacher_sequence=_ints(d.packed_sequence) or teacher,
                    student_sequence=_ints(d.packed_student_sequence) or student, pack_scenes=int(d.pack_scenes),
                    patch_size=batch.patch_sizes or batch.patch_size, num_views=batch.num_views)
  return PipelineSpec(batch=batch, seed=int(cfg.seed), batch_size=int(cfg.batch_size), pack=pack,
                      num_workers=int(d.num_workers), prefetch=int(d.prefetch),
                      worker_backend=str(d.worker_backend))
