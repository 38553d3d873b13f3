"""Config decoding for the host-side batching: `batch_spec(cfg) -> BatchSpec`.

Config keys read (all under `cfg.data` unless noted): grid_size, capacity, student_capacity, num_views, crop_ratio,
mask_cell, overflow (downsample | error), feat_keys, kind (augmentation defaults), and, when present (absent,
None or 0 -> the default in brackets), views [duplicate], augmentations (a list of (op name, kwargs), see
`dos_jax.data.transforms`; [default_augmentations(kind)]), stage_ratio [0.5], cross_radius [2 * grid_size],
token_jitter_sigma [0.01 m] and token_jitter_clip [0.02 m] (absent or None only); top level: mask_ratio,
supervision, model.variant.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from dos_jax.batching import patches
from dos_jax.data import transforms
from dos_jax.data import views as views_lib
from dos_jax.errors import ConfigError
from dos_jax.models import variants

# Channels contributed by each entry of data.feat_keys, concatenated in the listed order.
FEATURE_DIMS = {"coord": 3, "color": 3, "normal": 3, "strength": 1}
SUPERVISION = ("observable", "masked_tokens", "token_jitter")
OVERFLOW = ("downsample", "error")
# Token jitter of the masked-token baseline (Sonata's): N(0, sigma^2) per axis, clipped to +-clip, in metres.
JITTER_SIGMA = 0.01
JITTER_CLIP = 0.02


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
  """Decodes and validates the batching keys of a config (raises ConfigError naming the key)."""
  d = cfg.data
  layout = variants.stage_layout(cfg.model)
  grid = float(d.grid_size)
  p = BatchSpec(
      grid_size=grid, capacity=int(d.capacity), student_capacity=int(d.student_capacity),
      num_views=int(d.num_views), crop_ratio=float(d.crop_ratio), mask_cell=float(d.mask_cell),
      mask_ratio=float(cfg.mask_ratio), supervision=str(cfg.supervision), overflow=str(d.overflow),
      feat_keys=tuple(d.feat_keys), num_stages=layout["num_stages"], patch_size=layout["patch_size"],
      stage_ratio=float(d.get("stage_ratio", None) or 0.5),
      cross_radius=float(d.get("cross_radius", None) or 2.0 * grid),
      jitter_sigma=float(_or_default(d.get("token_jitter_sigma", None), JITTER_SIGMA)),
      jitter_clip=float(_or_default(d.get("token_jitter_clip", None), JITTER_CLIP)),
      views=str(d.get("views", None) or "duplicate"),
      augmentations=tuple(d.get("augmentations", None) or transforms.default_augmentations(d.kind)),
      depth_rule=layout["depth_rule"], stem_neighbors=layout["stem_neighbors"],
      patch_sizes=tuple(layout["patch_sizes"]))
  checks = [
      (p.grid_size > 0, "data.grid_size", "> 0 (metres)"),
      (p.mask_cell > 0, "data.mask_cell", "> 0 (metres)"),
      (0 < p.crop_ratio <= 1, "data.crop_ratio", "in (0, 1]"),
      (0 <= p.mask_ratio < 1, "mask_ratio", "in [0, 1)"),
      (p.num_views >= 1, "data.num_views", ">= 1"),
      (p.supervision in SUPERVISION, "supervision", f"one of {SUPERVISION}"),
      (p.overflow in OVERFLOW, "data.overflow", f"one of {OVERFLOW}"),
      (p.jitter_sigma >= 0 and p.jitter_clip > 0, "data.token_jitter_sigma",
       ">= 0 with data.token_jitter_clip > 0 (metres)"),
      (p.views in views_lib.VIEW_MODES, "data.views", f"one of {views_lib.VIEW_MODES}"),
      (all(k in FEATURE_DIMS for k in p.feat_keys) and p.feat_keys, "data.feat_keys",
       f"a non-empty subset of {tuple(FEATURE_DIMS)}"),
  ]
  for ok, key, want in checks:
    if not ok:
      raise ConfigError(f"config.{key}={_get(cfg, key)!r}: expected {want}")
  patches.stage_capacities(p.capacity, p.num_stages, p.patch_size, p.stage_ratio)
  patches.stage_capacities(p.student_set_capacity, p.num_stages, p.patch_size, p.stage_ratio)
  transforms.build(p.augmentations)  # ConfigError for bad op names/parameters now, not in the first batch
  return p


def _or_default(value, default):
  return default if value is None else value


def _get(cfg, dotted):
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg
