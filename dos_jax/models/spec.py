"""ModelSpec: what the network computes with, decoded once from a validated config (`dos_jax.specs.model_spec`).

The encoder (`dos_jax.models.encoder`) builds its module from a ModelSpec: the architecture is the variant's
(`ModelSpec.architecture` None) or an explicit `dos_jax.variants.Architecture` (a loaded upstream Pointcept
checkpoint's: `dos_jax.interop.pointcept.model_spec`, or config.model after `launch.probe --init-from`); the
network (`dos_jax.models.network`) adds the projector/prototype head and whether the student embeds the points
marked in `batch.mask_token` with the learnable mask token. Nothing here knows the experiment config, so the
model is usable (and testable) without one, and the values are not checked again: `dos_jax.schema.validate` has
(and `dos_jax.interop` checks an upstream architecture against the checkpoint's tensors).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from dos_jax import choices
from dos_jax import variants

Architecture = variants.Architecture


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Encoder + head hyper-parameters (frozen and hashable: jitted functions close over it).

  Attributes:
    variant: encoder size, a key of `dos_jax.variants.VARIANTS` ('tiny' | 'small' | 'base'); its architecture is
      used unless `architecture` is given.
    dtype: compute dtype name, 'float32' | 'bfloat16' (params stay float32).
    attention: patch attention kernel, 'xla' | 'cudnn'.
    remat: recompute block activations in the backward pass.
    scan_blocks: run each stage's blocks as one lax.scan over their stacked params (same values, same param
      tree; the compiled program holds one block per stage, not one per block: a faster compile, a slower step).
    drop_path: student stochastic-depth rate in [0, 1) (used only when training).
    mlp_ratio: MLP width / channels in each block.
    shuffle_orders: shuffle the serialization orders per stage in training (upstream PTv3).
    up_cast_level: levels the up-cast concatenates (0 = all).
    upcast_projection: Linear + LayerNorm on the up-cast.
    head_hidden, head_dim: projector hidden and output widths.
    num_prototypes: K prototypes.
    student_mask_token: the student embeds the points marked in `batch.mask_token` with the learnable mask token
      (the token baselines); False under observable supervision (the student set holds visible points only).
    architecture: an explicit architecture (upstream's), or None = the variant's (`architecture_of`).
  """
  variant: str = "tiny"
  dtype: str = "float32"
  attention: str = "xla"
  remat: bool = False
  scan_blocks: bool = False
  drop_path: float = 0.0
  mlp_ratio: float = 4.0
  shuffle_orders: bool = False
  up_cast_level: int = 0
  upcast_projection: bool = True
  head_hidden: int = 256
  head_dim: int = 64
  num_prototypes: int = 1024
  student_mask_token: bool = False
  architecture: Optional[Architecture] = None

  def __post_init__(self):
    # A spec built by hand (not decoded from a validated config) fails here with its field named, not later as a
    # KeyError or a shape error deep inside the encoder's trace.
    arch = self.architecture
    bad = []
    if arch is None and self.variant not in variants.VARIANTS:
      bad.append(f"variant={self.variant!r} (expected one of {sorted(variants.VARIANTS)})")
    if self.dtype not in choices.MODEL_DTYPES:
      bad.append(f"dtype={self.dtype!r} (expected one of {choices.MODEL_DTYPES})")
    if self.attention not in choices.ATTENTION_KERNELS:
      bad.append(f"attention={self.attention!r} (expected one of {choices.ATTENTION_KERNELS})")
    if arch is not None:
      if arch.type not in variants.UPSTREAM_TYPES:
        bad.append(f"architecture.type={arch.type!r} (expected one of {variants.UPSTREAM_TYPES})")
      n = len(arch.channels)
      if not n or len(arch.depths) != n or len(arch.heads) != n or len(arch.patch_sizes) != n:
        bad.append(f"architecture: channels {arch.channels}, depths {arch.depths}, heads {arch.heads}, "
                   f"patch_sizes {arch.patch_sizes} need one entry per stage each")
      elif any(c % h for c, h in zip(arch.channels, arch.heads)):
        bad.append(f"architecture: heads {arch.heads} must divide channels {arch.channels}")
      if not arch.orders or any(o not in variants.ORDERS for o in arch.orders):
        bad.append(f"architecture.orders={arch.orders!r} (expected names among {variants.ORDERS})")
    if bad:
      raise ValueError("ModelSpec: " + "; ".join(bad))


def architecture_of(spec: ModelSpec) -> Architecture:
  """The architecture `spec` builds: spec.architecture, or its variant's (`variants.variant_architecture`, which
  the batching's `variants.stage_layout` reads too)."""
  return spec.architecture if spec.architecture is not None else variants.variant_architecture(spec.variant)
