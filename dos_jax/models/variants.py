"""Encoder size variants, decoded in one place (used by the model and by batching to know the stage count)."""

from __future__ import annotations

from typing import Any, Dict

from dos_jax.errors import ConfigError

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
    raise ConfigError(f"config.model.variant={variant!r}: expected one of {sorted(VARIANTS)}")
  return dict(VARIANTS[variant])
