"""PyTorch reference of the PTv3-style encoder blocks of `dos_jax.models.blocks` (eager, CPU, f32 or f64).

Written for parity checks, not production: same padded, batched arrays as the Flax modules (a leading batch axis
[B], index arrays with the capacity N as the "absent" sentinel, see `dos_jax.batching.structs`), same semantics:

  * gathers go through a zero sentinel row; every block output is exactly 0 at padded slots;
  * LayerNorm: biased variance, eps 1e-5 (torch.nn.LayerNorm); GELU: exact erf (torch.nn.GELU());
  * attention: scaled dot product with scale 1/sqrt(C/heads) inside patches of P = min(patch_size, N) points of
    one serialization order; padded keys masked; a fully padded patch attends to all of its (padded) keys so it
    stays finite; a partial last patch is completed with the points before it (as upstream PTv3);
  * grid pooling: Linear, max over the children of each parent slot (padded children, whose parent is the sentinel,
    are dropped), LayerNorm, GELU.

Parameter names follow Pointcept's PTv3 (torch.nn.Linear weights are [out, in]):

  cpe.0.{weight [C_out, 3, 3, 3, C_in], bias}  (spconv SubMConv3d-like layout; weight[:, i, j, l, :] acts on the
                                                neighbour at grid + (i - 1, j - 1, l - 1))
  cpe.1.{weight, bias} (Linear)   cpe.2.{weight, bias} (LayerNorm)
  norm1.0.*   attn.qkv.*   attn.proj.*   norm2.0.*   mlp.0.fc1.*   mlp.0.fc2.*
  down.proj.*   down.norm.0.*   (grid pooling)
  embedding.stem.linear.*   embedding.stem.norm.*   embedding.mask_token

`dos_jax.torch_ref.convert` maps these to and from the Flax param tree.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

LN_EPS = 1e-5


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
  """Batched row gather with a zero sentinel row.

  Args:
    x: f[B, N, C].
    index: int[B, ...] slots in [0, N]; N gathers zeros.

  Returns:
    f[B, ..., C].
  """
  b, _, c = x.shape
  padded = torch.nn.functional.pad(x, (0, 0, 0, 1))
  flat = index.reshape(b, -1).long()
  out = torch.gather(padded, 1, flat.unsqueeze(-1).expand(-1, -1, c))
  return out.reshape(tuple(index.shape) + (c,))


def zero_padded(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  """x: f[B, N, C], valid: bool[B, N] -> x with padded rows exactly 0."""
  return torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype))


def gelu(x: torch.Tensor) -> torch.Tensor:
  """Exact (erf) GELU."""
  return torch.nn.functional.gelu(x, approximate="none")


def layer_norm(channels: int) -> nn.LayerNorm:
  return nn.LayerNorm(channels, eps=LN_EPS)


class CPE(nn.Module):
  """Conditional positional encoding: 27-neighbour gather + per-offset linear ("0"), Linear ("1"), LayerNorm ("2")."""

  def __init__(self, channels: int):
    super().__init__()
    self.channels = channels
    conv = nn.Module()
    conv.weight = nn.Parameter(torch.zeros(channels, 3, 3, 3, channels))
    conv.bias = nn.Parameter(torch.zeros(channels))
    self.add_module("0", conv)
    self.add_module("1", nn.Linear(channels, channels))
    self.add_module("2", layer_norm(channels))

  def forward(self, x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """x: f[B, N, C], neighbors: int[B, N, 27] (sentinel N) -> f[B, N, C]."""
    conv = getattr(self, "0")
    gathered = gather_rows(x, neighbors)                                   # [B, N, 27, C_in]
    # weight [C_out, 3, 3, 3, C_in] -> [27, C_in, C_out]: offset k = 9 (dx+1) + 3 (dy+1) + (dz+1).
    kernel = conv.weight.permute(1, 2, 3, 4, 0).reshape(27, x.shape[-1], self.channels)
    y = torch.einsum("bnkc,kcd->bnd", gathered, kernel) + conv.bias
    y = getattr(self, "1")(y)
    return getattr(self, "2")(y)


class SerializedAttention(nn.Module):
  """Multi-head self-attention in patches of P consecutive points of one serialization order (qkv, proj)."""

  def __init__(self, channels: int, heads: int, patch_size: int):
    super().__init__()
    self.channels, self.heads, self.patch_size = channels, heads, patch_size
    self.qkv = nn.Linear(channels, 3 * channels)
    self.proj = nn.Linear(channels, channels)

  def forward(self, x: torch.Tensor, valid: torch.Tensor, order: torch.Tensor,
              inverse: torch.Tensor) -> torch.Tensor:
    """x: f[B, N, C]; valid: bool[B, N]; order/inverse: int[B, N] of one serialization order -> f[B, N, C]."""
    b, n, c = x.shape
    h = self.heads
    p = min(self.patch_size, n)
    num_patches = -(-n // p)
    pad = num_patches * p - n
    xs = gather_rows(x, order)
    vs = torch.gather(valid, 1, order.long())
    if pad:
      xs = torch.nn.functional.pad(xs, (0, 0, 0, pad))
      vs = torch.nn.functional.pad(vs, (0, pad), value=False)
    if num_patches > 1:
      # Upstream completes the last partial patch with the P - r points before it (positions n .. n_pad - 1 take
      # positions n - P .. n - r - 1), when the sequence has n > P real points.
      n_real = vs.sum(dim=1, keepdim=True)
      pos = torch.arange(xs.shape[1])[None, :]
      fill = (pos >= n_real) & (pos < (n_real + p - 1) // p * p) & (n_real > p)
      xs = torch.where(fill[..., None], torch.roll(xs, p, dims=1), xs)
      vs = vs | fill
    qkv = self.qkv(xs).reshape(b * num_patches, p, 3, h, c // h)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))          # [B*np, H, P, Dh]
    key_valid = vs.reshape(b * num_patches, p)
    key_valid = key_valid | ~key_valid.any(dim=-1, keepdim=True)        # fully padded patch: attend to itself
    logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(c // h)
    logits = logits.masked_fill(~key_valid[:, None, None, :], -math.inf)
    y = torch.matmul(torch.softmax(logits, dim=-1), v)                 # [B*np, H, P, Dh]
    y = y.transpose(1, 2).reshape(b, num_patches * p, c)[:, :n]
    y = self.proj(y)
    return gather_rows(y, inverse)


class MLP(nn.Module):
  """fc1 (C -> int(ratio C)), exact GELU, fc2."""

  def __init__(self, channels: int, ratio: float = 4.0):
    super().__init__()
    hidden = int(channels * ratio)
    self.fc1 = nn.Linear(channels, hidden)
    self.fc2 = nn.Linear(hidden, channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(gelu(self.fc1(x)))


class Block(nn.Module):
  """x += CPE(x); x += Attn(LN(x)); x += MLP(LN(x)); zero at padded slots (eval mode: no drop path)."""

  def __init__(self, channels: int, heads: int, patch_size: int, order_index: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.order_index = order_index
    self.cpe = CPE(channels)
    self.norm1 = nn.Sequential(layer_norm(channels))
    self.attn = SerializedAttention(channels, heads, patch_size)
    self.norm2 = nn.Sequential(layer_norm(channels))
    self.mlp = nn.Sequential(MLP(channels, mlp_ratio))

  def forward(self, x: torch.Tensor, stage) -> torch.Tensor:
    """x: f[B, N, C]; stage: batched `structs.Stage` of torch tensors -> f[B, N, C]."""
    o = self.order_index % stage.order.shape[1]
    x = x + self.cpe(x, stage.neighbors)
    x = x + self.attn(self.norm1(x), stage.valid, stage.order[:, o], stage.inverse[:, o])
    x = x + self.mlp(self.norm2(x))
    return zero_padded(x, stage.valid)


class GridPooling(nn.Module):
  """Stride-2 grid pooling: proj (Linear), segment max into parent slots, norm.0 (LayerNorm), GELU."""

  def __init__(self, in_channels: int, channels: int):
    super().__init__()
    self.proj = nn.Linear(in_channels, channels)
    self.norm = nn.Sequential(layer_norm(channels))

  def forward(self, x: torch.Tensor, parent: torch.Tensor, next_valid: torch.Tensor) -> torch.Tensor:
    """x: f[B, N_s, C_in], parent: int[B, N_s] (sentinel M), next_valid: bool[B, M] -> f[B, M, C]."""
    b, m = next_valid.shape
    y = self.proj(x)
    index = parent.long().unsqueeze(-1).expand(-1, -1, y.shape[-1])
    pooled = torch.zeros(b, m + 1, y.shape[-1], dtype=y.dtype, device=y.device)
    pooled = pooled.scatter_reduce(1, index, y, reduce="amax", include_self=False)[:, :m]
    pooled = zero_padded(pooled, next_valid)
    return zero_padded(gelu(self.norm(pooled)), next_valid)


class Embedding(nn.Module):
  """stem.linear (C_in -> C), stem.norm (LayerNorm), GELU; learnable mask_token [C]."""

  def __init__(self, in_channels: int, channels: int):
    super().__init__()
    self.stem = nn.Module()
    self.stem.linear = nn.Linear(in_channels, channels)
    self.stem.norm = layer_norm(channels)
    self.mask_token = nn.Parameter(torch.zeros(channels))

  def forward(self, feat: torch.Tensor, valid: torch.Tensor,
              mask_token: Optional[torch.Tensor] = None) -> torch.Tensor:
    """feat: f[B, N, C_in]; valid, mask_token: bool[B, N] -> f[B, N, C], 0 at padded slots."""
    x = gelu(self.stem.norm(self.stem.linear(feat)))
    if mask_token is not None:
      x = torch.where(mask_token.unsqueeze(-1), self.mask_token.to(x.dtype), x)
    return zero_padded(x, valid)
