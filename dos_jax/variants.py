"""Encoder size variants, decoded in one place: the model reads the widths, the batching the stage count and patch
sizes, the gate the names. A bottom-layer table (it imports nothing from the package), so the batching does not
import the models package. Bad arguments raise ValueError: config values reach here through the gate
(`dos_jax.schema.validate` checks config.model.variant), upstream model configs through `dos_jax.interop`."""

from __future__ import annotations

from typing import Any, Dict

VARIANTS: Dict[str, Dict[str, Any]] = {
    # CPU tests and the quickstart.
    "tiny": dict(channels=(16, 32, 64), depths=(1, 1, 1), heads=(1, 2, 4), patch_size=64),
    # A mid size for single-GPU experiments.
    "small": dict(channels=(32, 64, 128, 256), depths=(2, 2, 2, 2), heads=(2, 4, 8, 16), patch_size=256),
    # Point Transformer V3 / Sonata encoder.
    "base": dict(channels=(48, 96, 192, 384, 512), depths=(3, 3, 3, 12, 3), heads=(3, 6, 12, 24, 32),
                 patch_size=1024),
}


def decode_variant(variant: str) -> Dict[str, Any]:
  """Returns dict(channels, depths, heads, patch_size) for a variant name."""
  if variant not in VARIANTS:
    raise ValueError(f"config.model.variant={variant!r}: expected one of {sorted(VARIANTS)}")
  return dict(VARIANTS[variant])


def stage_layout(model_cfg: Any) -> Dict[str, Any]:
  """What batching needs to know of a model: num_stages, patch_size (the largest per-stage one), patch_sizes
  (one per stage: the packer lays each stage out with its own), depth_rule
  ('inherit' for upstream PT-v3m1, else 'recompute') and stem_neighbors (PT-v3m1's 5x5x5 stem). Reads upstream's
  keys (enc_channels, enc_patch_size, type) when a model config carries them (a loaded Pointcept checkpoint),
  else the variant."""
  get = model_cfg.get if hasattr(model_cfg, "get") else (lambda k, d=None: getattr(model_cfg, k, d))
  channels = get("enc_channels", None)
  if channels is not None:
    patch = get("enc_patch_size", 1024)
    num_stages = len(channels)
  else:
    spec = decode_variant(get("variant", "tiny"))
    num_stages, patch = len(spec["channels"]), spec["patch_size"]
  per_stage = tuple(int(p) for p in patch) if isinstance(patch, (tuple, list)) else (int(patch),) * num_stages
  if len(per_stage) != num_stages:
    raise ValueError(f"model config enc_patch_size={tuple(per_stage)}: expected one patch size per stage "
                      f"({num_stages} stages)")
  m1 = get("type", "PT-v3m2") == "PT-v3m1"
  return dict(num_stages=num_stages, patch_size=max(per_stage), patch_sizes=per_stage,
              depth_rule="inherit" if m1 else "recompute", stem_neighbors=m1)
