"""Building blocks of the PTv3-style encoder, on padded point batches with a leading batch axis.

Every array carries a leading batch axis [B]; point axes are padded to a fixed capacity N_s and index arrays use the
capacity N_s as the "absent" sentinel (see `dos_jax.batching.structs`). Blocks never let information flow from padded
slots into real points: gathers go through a zero sentinel row, attention masks padded keys, pooling drops sentinel
parents, and every block zeroes its output at padded slots.

Mixed precision: matmuls run in `dtype` (float32 or bfloat16) with float32 parameters; LayerNorm and the attention
softmax run in float32.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch defaults, so that a torch reference with nn.LayerNorm / nn.GELU matches to float precision.
LN_EPS = 1e-5
NUM_NEIGHBORS = 27


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as torch.nn.GELU()."""
  return nn.gelu(x, approximate=False)


def gather_rows(x: jax.Array, index: jax.Array) -> jax.Array:
  """Batched row gather with a zero sentinel row.

  Args:
    x: [B, N, C] features.
    index: i32[B, ...] slots in [0, N]; N (the sentinel) gathers a row of zeros.

  Returns:
    [B, ..., C] with the dtype of x.
  """
  padded = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  return jax.vmap(lambda rows, idx: rows[idx])(padded, index)


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
  return jax.vmap(lambda rows, idx: rows[idx])(x, index)


@jax.custom_vjp
def permute_rows(x: jax.Array, perm: jax.Array, inverse: jax.Array) -> jax.Array:
  """x[b, perm[b]] for permutations perm: i32[B, N] with inverse[b, perm[b, j]] = j; x: [B, N, C].

  The backward pass is the gather g[b, inverse[b]] instead of the generic scatter-add (slow on CPU and GPU).
  """
  return _take(x, perm)


def _permute_fwd(x, perm, inverse):
  return _take(x, perm), (perm, inverse)


def _permute_bwd(res, g):
  perm, inverse = res
  return _take(g, inverse), None, None


permute_rows.defvjp(_permute_fwd, _permute_bwd)


def zero_padded(x: jax.Array, valid: jax.Array) -> jax.Array:
  """x: [B, N, C], valid: bool[B, N] -> x with padded slots set to exactly 0."""
  return jnp.where(valid[..., None], x, jnp.zeros((), x.dtype))


class LayerNorm(nn.Module):
  """LayerNorm over the last axis computed in float32 (params `scale`, `bias`), output in the compute dtype."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + bias
    return y.astype(self.dtype)


def _dense(features: int, dtype: Any, name: str, use_bias: bool = True) -> nn.Dense:
  # torch.nn.Linear-like init would be kaiming-uniform; PTv3 re-initialises Linear with trunc_normal(0.02).
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=nn.initializers.truncated_normal(0.02), bias_init=nn.initializers.zeros)


class DropPath(nn.Module):
  """Stochastic depth per point (as PTv3, whose DropPath acts on the [N, C] feature rows).

  A dropped row is zeroed; kept rows are scaled by 1 / (1 - rate). Uses the 'dropout' rng stream.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate <= 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape[:-1] + (1,))
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class Embedding(nn.Module):
  """Per-point input embedding: linear C_in -> C, LayerNorm, GELU; optional learnable mask token.

  Params: stem/{kernel, bias}, norm/{scale, bias}, mask_token f32[C].
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array, valid: jax.Array, mask_token: Optional[jax.Array] = None) -> jax.Array:
    """feat: f32[B, N, C_in], valid/mask_token: bool[B, N] -> [B, N, C] in dtype, 0 at padded slots."""
    # The stem runs in float32 whatever the compute dtype: raw coordinates (tens of metres) lose cm precision in bf16.
    x = _dense(self.channels, jnp.float32, "stem")(feat.astype(jnp.float32))
    x = gelu(LayerNorm(self.dtype, name="norm")(x))
    token = self.param("mask_token", nn.initializers.truncated_normal(0.02), (self.channels,), jnp.float32)
    if mask_token is not None:
      x = jnp.where(mask_token[..., None], token.astype(self.dtype), x)
    return zero_padded(x, valid)


class CPE(nn.Module):
  """Conditional positional encoding: submanifold 3x3x3 sparse conv (gather of the 27 voxel neighbours + linear
  over the 27*C gathered features), then Linear and LayerNorm, as PTv3's `cpe` (SubMConv3d, Linear, norm).

  Params: conv/{kernel f32[27, C, C], bias f32[C]} (kernel[k] acts on the neighbour at
  `structs.NEIGHBOR_OFFSETS[k]`), linear/{kernel, bias}, norm/{scale, bias}.
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, neighbors: jax.Array) -> jax.Array:
    """x: [B, N, C], neighbors: i32[B, N, 27] (sentinel N = absent) -> [B, N, C]."""
    c = self.channels
    y = _Conv(c, self.dtype, name="conv")(gather_rows(x, neighbors))
    y = _dense(c, self.dtype, "linear")(y)
    return LayerNorm(self.dtype, name="norm")(y)


class _Conv(nn.Module):
  """Linear over the gathered neighbourhood [B, N, 27, C_in] -> [B, N, C_out] (params kernel[27, C_in, C_out], bias)."""
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, gathered: jax.Array) -> jax.Array:
    k, cin = gathered.shape[-2:]
    kernel = self.param("kernel", nn.initializers.truncated_normal(0.02), (k, cin, self.channels), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.channels,), jnp.float32)
    flat = gathered.reshape(gathered.shape[:-2] + (k * cin,)).astype(self.dtype)
    y = jnp.dot(flat, kernel.reshape(k * cin, self.channels).astype(self.dtype))
    return y + bias.astype(self.dtype)


class SerializedAttention(nn.Module):
  """Multi-head self-attention inside patches of P consecutive points of one serialization order.

  Params: qkv/{kernel f32[C, 3C], bias} (output laid out as (3, heads, C/heads), as PTv3), proj/{kernel, bias}.
  """
  channels: int
  heads: int
  patch_size: int
  dtype: Any = jnp.float32
  implementation: Optional[str] = None  # None/'xla' (boolean key mask) or 'cudnn' (key lengths per patch)

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, order: jax.Array, inverse: jax.Array,
               segment: Optional[jax.Array] = None) -> jax.Array:
    """x: [B, N, C]; valid: bool[B, N]; order/inverse: i32[B, N] of one serialization order -> [B, N, C].

    The contract puts real points first in `order`, so patch boundaries of real points do not depend on the
    capacity; padded keys are masked in every patch (a fully padded patch attends to its zero rows, finite).
    `segment: i32[B, N]` (packed sets): a query attends only to keys of its own segment; padded slots form
    their own segment, so every query has at least itself as a key (finite everywhere).
    """
    b, n, c = x.shape
    h = self.heads
    p = min(self.patch_size, n)
    num_patches = -(-n // p)
    pad = num_patches * p - n
    xs = permute_rows(x, order, inverse)                            # [B, N, C] in serialization order
    vs = _take(valid, order)                                        # [B, N]
    if pad:  # capacity not a multiple of P: pad the sequence with masked slots
      xs = jnp.pad(xs, ((0, 0), (0, pad), (0, 0)))
      vs = jnp.pad(vs, ((0, 0), (0, pad)))
    qkv = _dense(3 * c, self.dtype, "qkv")(xs)
    qkv = qkv.reshape(b * num_patches, p, 3, h, c // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]              # [B*np, P, H, Dh]
    key_valid = vs.reshape(b * num_patches, p)
    if segment is not None:
      if self.implementation == "cudnn":
        raise ValueError("packed point sets need config.model.attention='xla' (segment masks)")
      ss = _take(segment, order)
      if pad:  # the extra sequence slots get a segment no slot has: they only see each other
        ss = jnp.pad(ss, ((0, 0), (0, pad)), constant_values=-1)
      ss = ss.reshape(b * num_patches, p)
      same = ss[:, :, None] == ss[:, None, :]                        # [B*np, P(query), P(key)]
      y = jax.nn.dot_product_attention(q, k, v, mask=same[:, None], implementation=self.implementation)
    elif self.implementation == "cudnn":
      # Real points come first in the order, so the valid keys of each patch are a prefix of it.
      lengths = jnp.maximum(jnp.sum(key_valid, axis=-1, dtype=jnp.int32), 1)
      y = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
    else:
      # A fully padded patch would mask every key; let it attend to its (zero) rows instead so it stays finite.
      key_valid = key_valid | ~jnp.any(key_valid, axis=-1, keepdims=True)
      y = jax.nn.dot_product_attention(q, k, v, mask=key_valid[:, None, None, :],
                                       implementation=self.implementation)
    y = y.reshape(b, num_patches * p, c)[:, :n]
    y = _dense(c, self.dtype, "proj")(y)
    return permute_rows(y, inverse, order)                          # back to slot order


class MLP(nn.Module):
  """fc1 (C -> ratio*C), GELU, fc2 (-> C). Params: fc1/{kernel, bias}, fc2/{kernel, bias}."""
  channels: int
  ratio: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    hidden = int(self.channels * self.ratio)
    return _dense(self.channels, self.dtype, "fc2")(gelu(_dense(hidden, self.dtype, "fc1")(x)))


class Block(nn.Module):
  """PTv3 block: x += CPE(x); x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x))).

  Params: cpe/..., norm1, attn/{qkv, proj}, norm2, mlp/{fc1, fc2}.
  """
  channels: int
  heads: int
  patch_size: int
  order_index: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, stage: Any, train: bool) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """x: [B, N, C] (0 at padded slots), stage: batched `structs.Stage` -> (x, aux)."""
    valid = stage.valid
    o = self.order_index % stage.order.shape[1]
    x = x + CPE(self.channels, self.dtype, name="cpe")(x, stage.neighbors)
    attn = SerializedAttention(self.channels, self.heads, self.patch_size, self.dtype, self.attention, name="attn")
    y = attn(LayerNorm(self.dtype, name="norm1")(x), valid, stage.order[:, o], stage.inverse[:, o], stage.segment)
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = MLP(self.channels, self.mlp_ratio, self.dtype, name="mlp")(LayerNorm(self.dtype, name="norm2")(x))
    x = x + DropPath(self.drop_path, name="drop_path2")(y, train)
    x = zero_padded(x, valid)
    return x, {}


class GridPooling(nn.Module):
  """Stride-2 grid pooling: Linear to the next width, max over the children of each parent voxel, LayerNorm, GELU.

  Params: proj/{kernel, bias}, norm/{scale, bias} (PTv3's GridPooling has proj + norm + act).
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, parent: jax.Array, next_valid: jax.Array) -> jax.Array:
    """x: [B, N_s, C_s], parent: i32[B, N_s] (sentinel N_{s+1}), next_valid: bool[B, N_{s+1}] -> [B, N_{s+1}, C]."""
    m = next_valid.shape[1]
    y = _dense(self.channels, self.dtype, "proj")(x)
    pooled = jax.vmap(lambda d, s: jax.ops.segment_max(d, s, num_segments=m + 1))(y, parent)[:, :m]
    # Padded parents have no children (segment_max gives -inf there): zero them before the norm.
    pooled = zero_padded(pooled, next_valid)
    pooled = gelu(LayerNorm(self.dtype, name="norm")(pooled))
    return zero_padded(pooled, next_valid)
