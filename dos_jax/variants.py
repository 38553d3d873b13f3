"""Encoder size variants and explicit (upstream) architectures, decoded in one place: the model reads the widths,
the batching the stage count and patch sizes, the gate the names. A bottom-layer table (it imports nothing from
the package, not even JAX: the gate reads it), so the batching does not import the models package. Bad arguments raise ValueError: config values
reach here through the gate (`dos_jax.schema.validate` checks config.model.variant), upstream model configs
through `dos_jax.interop` (which checks a checkpoint's architecture against its tensors)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

VARIANTS: Dict[str, Dict[str, Any]] = {
    # CPU tests and the quickstart.
    "tiny": dict(channels=(16, 32, 64), depths=(1, 1, 1), heads=(1, 2, 4), patch_size=64),
    # A mid size for single-GPU experiments.
    "small": dict(channels=(32, 64, 128, 256), depths=(2, 2, 2, 2), heads=(2, 4, 8, 16), patch_size=256),
    # Point Transformer V3 / Sonata encoder.
    "base": dict(channels=(48, 96, 192, 384, 512), depths=(3, 3, 3, 12, 3), heads=(3, 6, 12, 24, 32),
                 patch_size=1024),
}

# Upstream Pointcept's constructor names under config.model: a loaded checkpoint's model config carries them
# (`dos_jax.interop.pointcept.load_checkpoint`), and `launch.probe --init-from` merges them into config.model, where
# they take the place of model.variant's architecture. All or none (upstream_architecture).
UPSTREAM_KEYS = ("type", "enc_channels", "enc_depths", "enc_num_head", "enc_patch_size", "order", "mask_token",
                 "layer_scale")
UPSTREAM_TYPES = ("PT-v3m2", "PT-v3m1")
# Serialization order names (upstream `order`), cycled across the attention blocks of a stage: block i uses
# ORDERS[i % len(ORDERS)]. Named here (the bottom layer) so architectures can state them without importing the
# batching; `dos_jax.batching.structs.ORDERS` is this tuple.
ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An encoder's architecture stated explicitly (that of a loaded upstream checkpoint); frozen and hashable.

  Attributes:
    type: 'PT-v3m2' (Sonata: linear stem, LayerNorm pooling) | 'PT-v3m1' (5x5x5 conv stem, BatchNorm pooling,
      depth inherited by pooled stages; evaluation only). Upstream `type`.
    channels, depths, heads: one per stage (upstream enc_channels, enc_depths, enc_num_head).
    patch_sizes: attention patch size of each stage (upstream enc_patch_size).
    orders: serialization order names cycled by the blocks of a stage (upstream `order`; names in ORDERS).
    mask_token: the embedding has a learnable mask token.
    layer_scale: upstream's LayerScale in each block.
  """
  type: str
  channels: Tuple[int, ...]
  depths: Tuple[int, ...]
  heads: Tuple[int, ...]
  patch_sizes: Tuple[int, ...]
  orders: Tuple[str, ...]
  mask_token: bool
  layer_scale: bool


def decode_variant(variant: str) -> Dict[str, Any]:
  """Returns dict(channels, depths, heads, patch_size) for a variant name."""
  if variant not in VARIANTS:
    raise ValueError(f"config.model.variant={variant!r}: expected one of {sorted(VARIANTS)}")
  return dict(VARIANTS[variant])


def variant_architecture(variant: str) -> Architecture:
  """The dos encoder of a variant as an Architecture: PT-v3m2-style (linear stem, LayerNorm pooling), one patch
  size at every stage, every order of ORDERS, a mask token, no LayerScale."""
  v = decode_variant(variant)
  return Architecture(type="PT-v3m2", channels=tuple(v["channels"]), depths=tuple(v["depths"]),
                      heads=tuple(v["heads"]), patch_sizes=(int(v["patch_size"]),) * len(v["channels"]),
                      orders=ORDERS, mask_token=True, layer_scale=False)


def _per_stage(value: Any) -> Tuple[int, ...]:
  return (int(value),) if isinstance(value, (int, float)) else tuple(int(v) for v in value)


def upstream_architecture(model_cfg: Mapping[str, Any]) -> Optional[Architecture]:
  """The Architecture of upstream's keys (UPSTREAM_KEYS) in `model_cfg`, None when it carries none.

  model_cfg: a mapping read by key (`k in model_cfg`, `model_cfg[k]`): config.model (an ml_collections.ConfigDict)
  after `launch.probe --init-from` merged a loaded checkpoint's model config into it, or that model config itself
  (a plain dict: `dos_jax.interop.pointcept.model_spec`). Either all of UPSTREAM_KEYS are there
  (`dos_jax.interop.pointcept.infer_config` writes every one) or none is; a single enc_patch_size applies to every
  stage.
  """
  present = [k for k in UPSTREAM_KEYS if k in model_cfg]
  if not present:
    return None
  if len(present) != len(UPSTREAM_KEYS):
    raise ValueError(f"model config carries upstream keys {present} but not {sorted(set(UPSTREAM_KEYS) - set(present))}: "
                     "a loaded checkpoint's model config has all of them (dos_jax.interop.pointcept)")
  channels = _per_stage(model_cfg["enc_channels"])
  patch = _per_stage(model_cfg["enc_patch_size"])
  order = model_cfg["order"]
  return Architecture(
      type=str(model_cfg["type"]), channels=channels, depths=_per_stage(model_cfg["enc_depths"]),
      heads=_per_stage(model_cfg["enc_num_head"]), patch_sizes=patch * len(channels) if len(patch) == 1 else patch,
      orders=(order,) if isinstance(order, str) else tuple(str(o) for o in order),
      mask_token=bool(model_cfg["mask_token"]), layer_scale=bool(model_cfg["layer_scale"]))


def stage_layout(variant: str, architecture: Optional[Architecture]) -> Dict[str, Any]:
  """What batching needs to know of a model: num_stages, patch_size (the largest per-stage one), patch_sizes
  (one per stage: the packer lays each stage out with its own), depth_rule ('inherit' for upstream PT-v3m1, else
  'recompute') and stem_neighbors (PT-v3m1's 5x5x5 stem). From `architecture` when given (a ModelSpec's), else
  from the variant's (`variant_architecture`)."""
  arch = architecture if architecture is not None else variant_architecture(variant)
  num_stages, per_stage = len(arch.channels), tuple(arch.patch_sizes)
  m1 = arch.type == "PT-v3m1"
  if len(per_stage) != num_stages:
    raise ValueError(f"model patch sizes {per_stage}: expected one per stage ({num_stages} stages)")
  return dict(num_stages=num_stages, patch_size=max(per_stage), patch_sizes=per_stage,
              depth_rule="inherit" if m1 else "recompute", stem_neighbors=m1)
