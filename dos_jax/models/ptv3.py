"""Point Transformer V3-style encoder (Flax linen) on fixed-shape padded point batches.

Input is a batched `dos_jax.batching.structs.PointSet` (leading axis [B] on every array, S stages). The network:

  embedding   feat -> channels[0] (Linear, LayerNorm, GELU); optional learnable mask token.
  enc0        depths[0] blocks at stage 0.
  enc{s}      (s >= 1) `down`: stride-2 grid pooling to stage s (Linear, segment-max over children, LayerNorm,
              GELU), then depths[s] blocks at stage s.
  block{i}    x += CPE(x); x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x))). Attention runs inside patches
              of P = min(patch_size, N_s) consecutive points of serialization order i % 4 (z, z-trans, hilbert,
              hilbert-trans: PTv3 cycles the order per block within each stage).
  upcast      Sonata-style: from the deepest stage, gather parent features down to the children and concatenate
              with the child's own features, up to stage 0 (width sum(channels)), then Linear (sum -> D) and
              LayerNorm. D = sum(channels): 112 for `tiny`, 1232 for `base`.

Output: f32[B, N_0, D], exactly 0 at padded slots, plus an aux dict with each stage's features
(`enc{s}`: [B, N_s, C_s] in the compute dtype) and the concatenated upcast (`upcast_concat`).

Differences from Pointcept's PTv3 (documented for the torch reference and the converter): the embedding is a
Linear (PTv3: a 5^3 sparse conv + BatchNorm), norms are LayerNorm throughout (PTv3 pools with BatchNorm), and the
last, partial patch of a sequence attends only to its own real points (PTv3 pads it by repeating points of the
previous patch).

Parameter tree (Pointcept-like names; f32; C = channels[s], r = mlp_ratio):

  embedding/stem/{kernel [C_in, C0], bias [C0]}    embedding/norm/{scale, bias}    embedding/mask_token [C0]
  enc{s}/down/proj/{kernel [C_{s-1}, C], bias}      enc{s}/down/norm/{scale, bias}          (s >= 1)
  enc{s}/block{i}/cpe/conv/{kernel [27, C, C], bias}  (kernel[k] <-> structs.NEIGHBOR_OFFSETS[k])
  enc{s}/block{i}/cpe/linear/{kernel [C, C], bias}  enc{s}/block{i}/cpe/norm/{scale, bias}
  enc{s}/block{i}/norm1/{scale, bias}            enc{s}/block{i}/norm2/{scale, bias}
  enc{s}/block{i}/attn/qkv/{kernel [C, 3C], bias}   enc{s}/block{i}/attn/proj/{kernel [C, C], bias}
  enc{s}/block{i}/mlp/fc1/{kernel [C, rC], bias}    enc{s}/block{i}/mlp/fc2/{kernel [rC, C], bias}
  upcast/proj/{kernel [D, D], bias}                 upcast/norm/{scale, bias}

Dense kernels are [in, out] (torch Linear weights are [out, in]: transpose when converting).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dos_jax.models import blocks


class EncoderStage(nn.Module):
  """One stage: optional grid pooling from the previous stage, then `depth` blocks."""
  channels: int
  depth: int
  heads: int
  patch_size: int
  mlp_ratio: float
  drop_path: Sequence[float]
  pool: bool
  dtype: Any = jnp.float32
  attention: Optional[str] = None
  remat: bool = False

  @nn.compact
  def __call__(self, x, stage, parent, train: bool):
    """x: [B, N_{s-1}, C_{s-1}] (or [B, N_s, C_s] without pooling) -> ([B, N_s, C_s], aux)."""
    if self.pool:
      x = blocks.GridPooling(self.channels, self.dtype, name="down")(x, parent, stage.valid)
    aux = {}
    # Rematerialisation recomputes each block's activations in the backward pass (memory for compute);
    # argument 3 of Block.__call__ (self, x, stage, train) is the Python bool `train`.
    block_cls = nn.remat(blocks.Block, static_argnums=(3,)) if self.remat else blocks.Block
    for i in range(self.depth):
      block = block_cls(self.channels, self.heads, self.patch_size, order_index=i, mlp_ratio=self.mlp_ratio,
                           drop_path=self.drop_path[i], dtype=self.dtype, attention=self.attention,
                           name=f"block{i}")
      x, block_aux = block(x, stage, train)
      aux.update({f"block{i}/{k}": v for k, v in block_aux.items()})
    return x, aux


class PointTransformerV3(nn.Module):
  """The encoder. See the module docstring for the architecture and the parameter tree."""
  channels: Tuple[int, ...]
  depths: Tuple[int, ...]
  heads: Tuple[int, ...]
  patch_size: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention: Optional[str] = None
  remat: bool = False

  @property
  def out_dim(self) -> int:
    return sum(self.channels)

  @nn.compact
  def __call__(self, points, *, train: bool = False,
               mask_token: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """points: batched PointSet (leading [B]); mask_token: bool[B, N_0] or None -> (f32[B, N_0, D], aux)."""
    num_stages = len(self.channels)
    # Stochastic depth rises linearly over all blocks, as PTv3 (torch.linspace(0, drop_path, sum(depths))).
    total = sum(self.depths)
    rates = [self.drop_path * i / max(total - 1, 1) for i in range(total)]
    x = blocks.Embedding(self.channels[0], self.dtype, name="embedding")(points.feat, points.valid, mask_token)
    feats = []
    aux = {}
    start = 0
    for s in range(num_stages):
      stage_module = EncoderStage(
          self.channels[s], self.depths[s], self.heads[s], self.patch_size, self.mlp_ratio,
          tuple(rates[start:start + self.depths[s]]), pool=s > 0, dtype=self.dtype, attention=self.attention,
          remat=self.remat, name=f"enc{s}")
      start += self.depths[s]
      x, stage_aux = stage_module(x, points.stages[s], points.parent[s - 1] if s > 0 else None, train)
      feats.append(x)
      aux[f"enc{s}"] = x
      aux.update({f"enc{s}/{k}": v for k, v in stage_aux.items()})
    # Upcast: children take their parent's (already concatenated) features, deepest stage first.
    up = feats[-1]
    for s in range(num_stages - 2, -1, -1):
      up = jnp.concatenate([feats[s], blocks.gather_rows(up, points.parent[s])], axis=-1)
    aux["upcast_concat"] = up
    y = _Upcast(self.out_dim, self.dtype, name="upcast")(up)
    return blocks.zero_padded(y.astype(jnp.float32), points.valid), aux


class _Upcast(nn.Module):
  """Projection of the concatenated multi-stage features: Linear D -> D, LayerNorm (params proj/*, norm/*)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="proj",
                 kernel_init=nn.initializers.truncated_normal(0.02), bias_init=nn.initializers.zeros)(x)
    return blocks.LayerNorm(jnp.float32, name="norm")(y)


def block_param_count(c: int, mlp_ratio: float) -> int:
  """Closed form for one block of width c: (32 + 2r) c^2 + (13 + r) c (r = mlp_ratio, integer hidden width)."""
  hidden = int(c * mlp_ratio)
  # cpe: 27c^2 + c (conv) + c^2 + c (linear) + 2c (norm); norm1, norm2: 2c each; qkv: 3c^2 + 3c; proj: c^2 + c;
  # fc1: c*h + h; fc2: h*c + c.
  return 32 * c * c + 2 * c * hidden + 13 * c + hidden


def param_count_formula(channels: Sequence[int], depths: Sequence[int], in_channels: int,
                        mlp_ratio: float = 4.0) -> int:
  """Closed-form parameter count of `PointTransformerV3` (independent of the module code; tested against it)."""
  c0 = channels[0]
  total = in_channels * c0 + c0 + 2 * c0 + c0          # embedding: stem, norm, mask token
  for s, (c, d) in enumerate(zip(channels, depths)):
    if s > 0:
      total += channels[s - 1] * c + c + 2 * c         # down: proj + norm
    total += d * block_param_count(c, mlp_ratio)
  d_out = sum(channels)
  total += d_out * d_out + d_out + 2 * d_out           # upcast: proj + norm
  return total
