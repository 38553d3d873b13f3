"""Config decoding for the host-side batching: `batch_spec(cfg) -> BatchSpec`.

`cfg` is a config the gate (`dos_jax.schema.validate`) has accepted: the values are not checked again here.
Keys read (under `cfg.data` unless noted): grid_size, capacity, student_capacity, num_views, crop_ratio,
mask_cell, overflow, feat_keys, stage_ratio, cross_radius, token_jitter_sigma, token_jitter_clip, views,
augmentations (() = `dos_jax.data.transforms.default_augmentations(kind)`), kind; top level: mask_ratio,
supervision, model.variant (or the architecture of upstream's keys, `dos_jax.variants.upstream_architecture`, when
config.model carries a loaded Pointcept checkpoint's).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from dos_jax import variants
from dos_jax.data import transforms

# Channels contributed by each entry of data.feat_keys, concatenated in the listed order.
FEATURE_DIMS = {"coord": 3, "color": 3, "normal": 3, "strength": 1}
# Student sets: visible points only (DOS) or the full view with mask tokens (the token baselines).
SUPERVISION = ("observable", "masked_tokens", "token_jitter")
OVERFLOW = ("downsample", "error")  # a view larger than its capacity
WORKER_BACKENDS = ("thread", "process")  # dos_jax.batching.pipeline workers


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """What the host-side batching computes with, decoded (and validated) from an experiment config once."""
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
      patch_sizes=tuple(layout["patch_sizes"]))
