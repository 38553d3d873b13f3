"""PyTorch reference of the full PTv3-style encoder (`dos_jax.models.ptv3.PointTransformerV3`), eval mode.

  model = encoder.PointTransformerV3.from_variant("tiny", in_channels=9).double()
  model.load_state_dict(convert.flax_to_torch_state_dict(params, dtype=torch.float64))
  feats = model(encoder.points_to_torch(points, torch.float64))      # f[B, N_0, D]

Architecture (see `dos_jax.models.ptv3` for the Flax original): embedding; stage s: (s >= 1: grid pooling) then
depths[s] blocks (block i uses serialization order i % 4); Sonata-style upcast: from the deepest stage, gather the
parent features down to the children and concatenate with the child's own, up to stage 0 (width sum(channels)),
then Linear + LayerNorm. Output is exactly 0 at padded slots. No drop path (parity is checked in eval mode).

Module/parameter names: `embedding.*`, `enc.enc{s}.down.*` (s >= 1), `enc.enc{s}.block{i}.*`, `upcast.proj.*`,
`upcast.norm.*` (block-level names in `dos_jax.torch_ref.blocks`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np
import torch
from torch import nn

from dos_jax import variants
from dos_jax.torch_ref import blocks


def points_to_torch(points: Any, dtype: torch.dtype = torch.float32) -> Any:
  """A (batched) PointSet/Stage/any pytree of numpy or jax arrays -> same pytree of torch tensors.

  Floating arrays become `dtype`, integer arrays int64, booleans stay bool.
  """
  def convert(a):
    a = np.asarray(a)
    if a.dtype == np.bool_:
      return torch.from_numpy(a.copy())
    if np.issubdtype(a.dtype, np.integer):
      return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(np.array(a, dtype=np.float64)).to(dtype)
  return jax.tree.map(convert, points)


class EncoderStage(nn.Module):
  """Optional grid pooling ("down") from the previous stage, then blocks "block{i}"."""

  def __init__(self, in_channels: int, channels: int, depth: int, heads: int, patch_size: int, mlp_ratio: float,
               pool: bool):
    super().__init__()
    self.depth = depth
    if pool:
      self.down = blocks.GridPooling(in_channels, channels)
    else:
      self.down = None
    for i in range(depth):
      self.add_module(f"block{i}", blocks.Block(channels, heads, patch_size, order_index=i, mlp_ratio=mlp_ratio))

  def forward(self, x: torch.Tensor, stage: Any, parent: Optional[torch.Tensor]) -> torch.Tensor:
    """x: f[B, N_{s-1}, C_{s-1}] (or [B, N_s, C_s] without pooling) -> f[B, N_s, C_s]."""
    if self.down is not None:
      x = self.down(x, parent, stage.valid)
    for i in range(self.depth):
      x = getattr(self, f"block{i}")(x, stage)
    return x


class Upcast(nn.Module):
  """proj (Linear D -> D), norm (LayerNorm)."""

  def __init__(self, dim: int):
    super().__init__()
    self.proj = nn.Linear(dim, dim)
    self.norm = blocks.layer_norm(dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.norm(self.proj(x))


class PointTransformerV3(nn.Module):
  """The torch reference encoder, same architecture and parameter tree as the Flax one."""

  def __init__(self, in_channels: int, channels: Sequence[int], depths: Sequence[int], heads: Sequence[int],
               patch_size: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.channels = tuple(channels)
    self.embedding = blocks.Embedding(in_channels, channels[0])
    self.enc = nn.ModuleDict()
    for s, (c, d, h) in enumerate(zip(channels, depths, heads)):
      self.enc[f"enc{s}"] = EncoderStage(channels[s - 1] if s else c, c, d, h, patch_size, mlp_ratio, pool=s > 0)
    self.upcast = Upcast(sum(channels))

  @classmethod
  def from_variant(cls, variant: str, in_channels: int, mlp_ratio: float = 4.0) -> "PointTransformerV3":
    """The reference for a `dos_jax.variants` name ('tiny', 'small', 'base')."""
    spec = variants.decode_variant(variant)
    return cls(in_channels, spec["channels"], spec["depths"], spec["heads"], spec["patch_size"], mlp_ratio)

  @property
  def out_dim(self) -> int:
    return sum(self.channels)

  def forward_with_aux(self, points: Any, mask_token: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """points: batched PointSet of torch tensors (`points_to_torch`); mask_token: bool[B, N_0] or None.

    Returns:
      (f[B, N_0, D] with 0 at padded slots, aux dict with `enc{s}`: f[B, N_s, C_s] and `upcast_concat`).
    """
    x = self.embedding(points.feat, points.stages[0].valid, mask_token)
    feats = []
    aux = {}
    for s in range(len(self.channels)):
      parent = points.parent[s - 1] if s > 0 else None
      x = self.enc[f"enc{s}"](x, points.stages[s], parent)
      feats.append(x)
      aux[f"enc{s}"] = x
    up = feats[-1]
    for s in range(len(self.channels) - 2, -1, -1):
      up = torch.cat([feats[s], blocks.gather_rows(up, points.parent[s])], dim=-1)
    aux["upcast_concat"] = up
    y = self.upcast(up)
    return blocks.zero_padded(y, points.stages[0].valid), aux

  def forward(self, points: Any, mask_token: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense features f[B, N_0, D] of every stage-0 slot (0 at padded slots)."""
    return self.forward_with_aux(points, mask_token)[0]
