"""ModelSpec: what the network computes with, decoded once from a validated config (`dos_jax.specs.model_spec`).

The encoder (`dos_jax.models.encoder`) reads its fields by the names of the config's `model.*` keys (variant,
dtype, attention, remat, drop_path, mlp_ratio, shuffle_orders, up_cast_level, upcast_projection), so it takes a
ModelSpec, `config.model` or the upstream model config of a loaded Pointcept checkpoint alike; the network
(`dos_jax.models.network`) adds the projector/prototype head and whether the student embeds the points marked in
`batch.mask_token` with the learnable mask token. Nothing here knows the experiment config, so the model is usable
(and testable) without one, and the values are not checked again: `dos_jax.schema.validate` has.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Encoder + head hyper-parameters (frozen and hashable: jitted functions close over it).

  Attributes:
    variant: encoder size, a key of `dos_jax.variants.VARIANTS` ('tiny' | 'small' | 'base').
    dtype: compute dtype name, 'float32' | 'bfloat16' (params stay float32).
    attention: patch attention kernel, 'xla' | 'cudnn'.
    remat: recompute block activations in the backward pass.
    drop_path: student stochastic-depth rate in [0, 1) (used only when training).
    mlp_ratio: MLP width / channels in each block.
    shuffle_orders: shuffle the serialization orders per stage in training (upstream PTv3).
    up_cast_level: levels the up-cast concatenates (0 = all).
    upcast_projection: Linear + LayerNorm on the up-cast.
    head_hidden, head_dim: projector hidden and output widths.
    num_prototypes: K prototypes.
    student_mask_token: the student embeds the points marked in `batch.mask_token` with the learnable mask token
      (the token baselines); False under observable supervision (the student set holds visible points only).
  """
  variant: str = "tiny"
  dtype: str = "float32"
  attention: str = "xla"
  remat: bool = False
  drop_path: float = 0.0
  mlp_ratio: float = 4.0
  shuffle_orders: bool = False
  up_cast_level: int = 0
  upcast_projection: bool = True
  head_hidden: int = 256
  head_dim: int = 64
  num_prototypes: int = 1024
  student_mask_token: bool = False
