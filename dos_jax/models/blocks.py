"""Building blocks of the PTv3-style encoder, on padded point batches with a leading batch axis.

Every array carries a leading batch axis [B]; point axes are padded to a fixed capacity N_s and index arrays use the
capacity N_s as the "absent" sentinel (see `dos_jax.batching.structs`). Blocks never let information flow from padded
slots into real points: gathers go through a zero sentinel row, attention masks padded keys, pooling drops sentinel
parents, and every block zeroes its output at padded slots.

Mixed precision: matmuls run in `dtype` (float32 or bfloat16) with float32 parameters; LayerNorm and the attention
softmax run in float32.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dos_jax.models import attention

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
  # Through one flat row index: a TPU stores an array's minor axis in 128-lane tiles, so an index or result with
  # a short trailing axis minor (the CPE's 27 neighbours, the stem's 125) would be padded ~5x; flat, only the
  # channels are minor.
  # The sentinel reads an appended zero row here, not the gather's fill mode (`take_rows`): a many-to-one gather
  # like the CPE's compiles for a TPU into a gather fused with the pad, while fill mode adds a select that blocks
  # that fusion (one scannet block: CPE 5.8 -> 15.1 M estimated cycles).
  padded = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
  flat = index.reshape(index.shape[0], -1)
  return _take(padded, flat).reshape(index.shape + x.shape[-1:])


def take_rows(x: jax.Array, index: jax.Array, fill: Any = 0) -> jax.Array:
  """x[b, index[b]] per batch row, with `fill` where index is out of range (the sentinel N).

  x: [B, N, ...]; index: i32[B, L] in [0, N] -> [B, L, ...]. The sentinel reads `fill` through the gather's
  fill mode rather than from an appended row: for the serialization gathers (one-to-one, [L, 3C] rows) appending
  a row (pad to N + 1) copied the whole array, and on a TPU those pads were ~25% of the compiled step's
  estimated cycles. The transpose drops the sentinel's cotangent (a scatter in drop mode).
  """
  return jax.vmap(lambda rows, idx: rows.at[idx].get(mode="fill", fill_value=fill, wrap_negative_indices=False)
                  )(x, index)


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


@jax.custom_vjp
def gather_one_to_one(x: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
  """Row gather through a zero sentinel row where each row of x is read at most once: [B, N, C] -> [B, L, C].

  index: i32[B, L] rows of x in [0, N] (N gathers zeros); inverse: i32[B, N] the one position reading each row,
  L for rows nobody reads. So the transpose is the gather g[inverse] (no scatter-add). Packed attention uses it
  both ways: slots -> sequence (index = order, inverse = the slots' positions) and back (the two swapped).
  """
  return take_rows(x, index)


def _gather_fwd(x, index, inverse):
  return gather_one_to_one(x, index, inverse), (index, inverse)


def _gather_bwd(res, g):
  index, inverse = res
  return take_rows(g, inverse), None, None


gather_one_to_one.defvjp(_gather_fwd, _gather_bwd)


@jax.custom_vjp
def gather_to_patches(x: jax.Array, index: jax.Array, inverse: jax.Array, repeat: jax.Array) -> jax.Array:
  """`gather_one_to_one` where a row may also be read a second time (a partial patch's fill, see
  `fill_partial_patch_index`): x [B, N, C] -> [B, L, C] (index N reads zeros).

  inverse: i32[B, N] each row's first position; repeat: i32[B, N] its second one (L when none). The transpose is
  then two gathers, g[inverse] + g[repeat], not a scatter-add.
  """
  return take_rows(x, index)


def _to_patches_fwd(x, index, inverse, repeat):
  return take_rows(x, index), (inverse, repeat)


def _to_patches_bwd(res, g):
  inverse, repeat = res
  return take_rows(g, inverse) + take_rows(g, repeat), None, None, None


gather_to_patches.defvjp(_to_patches_fwd, _to_patches_bwd)


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

  A dropped row is zeroed; kept rows are scaled by 1 / (1 - rate). The key is `key` when given (the encoder
  stage derives one per block), else the 'dropout' rng stream; `rate: f32[]` given at call time (a stage's
  scanned blocks) replaces the static `rate`. One draw over the slots, or, with `noise_id: i32[B, N, 2]` (packed
  sets: the view's global index and the point's rank among its view's slots), one draw per point keyed by those
  two numbers, so a view's mask does not depend on where it is packed.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, noise_id: Optional[jax.Array] = None,
               key: Optional[jax.Array] = None, rate: Optional[jax.Array] = None) -> jax.Array:
    if not train or (rate is None and self.rate <= 0.0):
      return x
    keep = 1.0 - (self.rate if rate is None else rate)
    if key is None:
      key = self.make_rng("dropout")
    if noise_id is not None:
      draw = lambda ids: jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(key, ids[0]), ids[1]), keep)
      mask = jax.vmap(jax.vmap(draw))(noise_id)[..., None]
    else:
      mask = jax.random.bernoulli(key, keep, x.shape[:-1] + (1,))
    # A traced keep of exactly 1 (a rate-0 block inside a scan) keeps every row unscaled: x / 1 == x.
    return jnp.where(mask, x / jnp.asarray(keep, jnp.float32).astype(x.dtype), jnp.zeros((), x.dtype))


class Embedding(nn.Module):
  """Per-point input embedding: linear C_in -> C, LayerNorm, GELU; optional learnable mask token.

  Params: stem/{kernel, bias}, norm/{scale, bias}, mask_token f32[C] (absent with use_mask_token=False).
  """
  channels: int
  dtype: Any = jnp.float32
  use_mask_token: bool = True

  @nn.compact
  def __call__(self, feat: jax.Array, valid: jax.Array, mask_token: Optional[jax.Array] = None) -> jax.Array:
    """feat: f32[B, N, C_in], valid/mask_token: bool[B, N] -> [B, N, C] in dtype, 0 at padded slots."""
    # The stem runs in float32 whatever the compute dtype: raw coordinates (tens of metres) lose cm precision in bf16.
    x = _dense(self.channels, jnp.float32, "stem")(feat.astype(jnp.float32))
    x = gelu(LayerNorm(self.dtype, name="norm")(x))
    if not self.use_mask_token:
      if mask_token is not None:
        raise ValueError("this embedding has no mask token (use_mask_token=False)")
      return zero_padded(x, valid)
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


def fill_partial_patch(xs: jax.Array, vs: jax.Array, p: int, ss: Optional[jax.Array] = None
                       ) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """Completes the last, partial patch of each cloud with the points just before it (as upstream PTv3).

  For a cloud of n > P points starting on a patch boundary with r = n mod P > 0, upstream Pointcept
  (`SerializedAttention.get_padding_and_inverse`) pads its sequence to ceil(n / P) * P by repeating, at positions
  n .. n_pad - 1, the points at positions n - P .. n - r - 1: the last r points then attend over the last P points
  of the cloud instead of only over themselves. A cloud with n <= P is one patch of its n points (nothing to
  fill). Rule here: a padded position j >= P is filled from j - P when j's patch starts with a real point and
  j - P holds a real point of the SAME cloud (unpacked: any real point; packed: the same segment). A packed short
  view never straddles a patch boundary, so its patch is never filled; a packed long view starts on a boundary
  and owns its patches (`dos_jax.batching.packing.layout`), so each long view's partial patch is filled like its
  unpacked one.

  Args:
    xs: [B, L, C] features in serialization order, L a multiple of p.
    vs: bool[B, L] validity in the same order.
    p: patch size.
    ss: optional i32[B, L] segment of each position (packed sets), padding with its own values.

  Returns:
    (xs, vs, ss) with the filled positions holding copies of their source points, marked valid and given their
    source's segment. Outputs at filled positions belong to padded slots: callers drop them (every block zeroes
    padded slots).
  """
  fill, prev_seg = _fill_rule(vs, p, ss)
  # A slice and a concat: the backward pass is as cheap as the forward.
  xs = jnp.where(fill[..., None], jnp.roll(xs, p, axis=1), xs)
  if ss is not None:
    ss = jnp.where(fill, prev_seg, ss)
  return xs, vs | fill, ss


def _fill_rule(vs: jax.Array, p: int, ss: Optional[jax.Array]) -> Tuple[jax.Array, jax.Array]:
  """(fill bool[B, L]: the positions `fill_partial_patch` fills, prev_seg i32[B, L]: the segment at j - p)."""
  length = vs.shape[1]
  pos = jnp.arange(length, dtype=jnp.int32)
  head = pos // p * p                                               # first position of each position's patch
  seg = jnp.where(vs, 0, -1) if ss is None else ss
  prev_valid = jnp.roll(vs, p, axis=1)                              # roll(a, p)[j] = a[j - p]
  prev_seg = jnp.roll(seg, p, axis=1)
  fill = (~vs & (pos >= p)[None, :] & prev_valid & jnp.take(vs, head, axis=1)
          & (prev_seg == jnp.take(seg, head, axis=1)))
  return fill, prev_seg


def fill_partial_patch_index(order: jax.Array, vs: jax.Array, ss: jax.Array, inverse: jax.Array, p: int
                             ) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`fill_partial_patch` of a packed sequence done on its indices, before the features are gathered.

  Filling position j with the point at j - P is reading slot order[j - P] there, so the fill edits the i32 order
  instead of copying the [B, L, C] features twice (a roll and a select, ~18% of a stage-0 block's estimated TPU
  cycles); the gather then reads that slot twice (`gather_to_patches`).

  Args:
    order: i32[B, L] slot at each position (N for a gap), L a multiple of p. vs: bool[B, L] real positions.
    ss: i32[B, L] segment of each position (-1 at gaps). inverse: i32[B, N] each slot's position (>= L: none).
    p: patch size.

  Returns:
    (order, vs, ss, repeat): the filled order, validity and segments as `fill_partial_patch` gives them, and
    repeat: i32[B, N] the position that reads each slot a second time (L when none).
  """
  length = order.shape[1]
  fill, prev_seg = _fill_rule(vs, p, ss)
  order = jnp.where(fill, jnp.roll(order, p, axis=1), order)
  # Slot s at position i is read again at i + p exactly when that position is filled (a slot at no position,
  # inverse >= L, lands past the end and reads False).
  second = inverse + p
  read_again = take_rows(fill, second, False)
  repeat = jnp.where(read_again, second, length).astype(jnp.int32)
  return order, vs | fill, jnp.where(fill, prev_seg, ss), repeat


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
    capacity; the last partial patch of a cloud is completed with the points before it (`fill_partial_patch`,
    as upstream); padded keys are masked in every patch (a fully padded patch attends to its zero rows, finite).
    `segment: i32[B, N]` (packed sets): then order is i32[B, L] and inverse i32[B, N] with sentinels (the
    sequence is decoupled from the slots, see `_packed`); a query attends only to keys of its own segment.
    """
    if segment is not None:
      return self._packed(x, valid, order, inverse, segment)
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
    if num_patches > 1:
      xs, vs, _ = fill_partial_patch(xs, vs, p)
    qkv = _dense(3 * c, self.dtype, "qkv")(xs)
    qkv = qkv.reshape(b * num_patches, p, 3, h, c // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]              # [B*np, P, H, Dh]
    key_valid = vs.reshape(b * num_patches, p)
    if self.implementation == "cudnn":
      # Real points come first in the order, so the valid keys of each patch are a prefix of it.
      lengths = jnp.maximum(jnp.sum(key_valid, axis=-1, dtype=jnp.int32), 1)
      y = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
    else:
      # A fully padded patch would mask every key; let it attend to its (zero) rows instead so it stays finite.
      key_valid = key_valid | ~jnp.any(key_valid, axis=-1, keepdims=True)
      reference = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
          q, k, v, mask=key_valid[:, None, None, :], implementation=self.implementation)
      # The same mask as segments (TPU kernel): every query in segment 0, valid keys 0, the others 1.
      y = attention.segment_attention(q, k, v, jnp.zeros(key_valid.shape, jnp.int32),
                                      (~key_valid).astype(jnp.int32), reference)
    y = y.reshape(b, num_patches * p, c)[:, :n]
    y = _dense(c, self.dtype, "proj")(y)
    return permute_rows(y, inverse, order)                          # back to slot order

  def _packed(self, x, valid, order, inverse, segment):
    """A packed set (`dos_jax.batching.packing`): the attention sequence is decoupled from the slots.

    x: [B, N, C] slots; order: i32[B, L] slot at each sequence position (N for a gap: a position no point
    takes, e.g. the rest of a long view's last patch); inverse: i32[B, N] each slot's position (L for padding
    slots); segment: i32[B, N] view of each slot. qkv and proj run on the N slots; only the patch attention
    runs on the L positions, so patch padding costs attention FLOPs only. A query attends to keys of its own
    segment; gaps form one more segment (-1) of zero rows, finite and discarded.
    """
    b, n, c = x.shape
    h = self.heads
    length = order.shape[1]
    p = min(self.patch_size, length)
    num_patches = -(-length // p)
    pad = num_patches * p - length
    if self.implementation == "cudnn":
      raise ValueError("packed point sets need config.model.attention='xla' (segment masks)")
    qkv = _dense(3 * c, self.dtype, "qkv")(x)                      # per slot (a row-wise map commutes with gathers)
    vs = take_rows(valid, order, False)
    ss = take_rows(segment, order, -1)
    ss = jnp.where(vs, ss, -1)
    if pad:  # L not a multiple of P: the extra positions are gaps too (slots at none stay past the end)
      order_seq = jnp.pad(order, ((0, 0), (0, pad)), constant_values=n)
      vs = jnp.pad(vs, ((0, 0), (0, pad)))
      ss = jnp.pad(ss, ((0, 0), (0, pad)), constant_values=-1)
      inverse_seq = jnp.where(inverse >= length, length + pad, inverse)
    else:
      order_seq, inverse_seq = order, inverse
    if num_patches > 1:  # filling qkv rows = filling the input rows (qkv is row-wise)
      order_seq, vs, ss, repeat = fill_partial_patch_index(order_seq, vs, ss, inverse_seq, p)
      qs = gather_to_patches(qkv, order_seq, inverse_seq, repeat)  # [B, L, 3C], gaps 0
    else:
      qs = gather_one_to_one(qkv, order_seq, inverse_seq)
    qkv = qs.reshape(b * num_patches, p, 3, h, c // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]              # [B*np, P, H, Dh]
    ss = ss.reshape(b * num_patches, p)
    same = lambda: ss[:, :, None] == ss[:, None, :]                  # noqa: E731  [B*np, P(query), P(key)]
    reference = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
        q, k, v, mask=same()[:, None], implementation=self.implementation)
    # Named for the scanned stages' checkpoint policy (`ptv3.SCAN_POLICY`): kept, not recomputed, in the backward.
    y = checkpoint_name(attention.segment_attention(q, k, v, ss, ss, reference), "patch_attention")
    y = y.reshape(b, num_patches * p, c)[:, :length]
    y = gather_one_to_one(y, inverse, order)                        # back to the slots, padding slots 0
    return _dense(c, self.dtype, "proj")(y)


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
  """PTv3 block: x += CPE(x); x += DropPath(LS(Attn(LN(x)))); x += DropPath(LS(MLP(LN(x)))).

  `order_index` is the static index into `structs.ORDERS` of the serialization order this block uses; a traced
  `order_id` passed at call time (training-time order shuffling) takes its place. LS is upstream's optional
  LayerScale (`layer_scale=True`: params ls1, ls2 f32[C]); off (identity, no params) by default.

  Params: cpe/..., norm1, attn/{qkv, proj}, norm2, mlp/{fc1, fc2}[, ls1, ls2].
  """
  channels: int
  heads: int
  patch_size: int
  order_index: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention: Optional[str] = None
  layer_scale: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, stage: Any, train: bool,
               order_id: Optional[jax.Array] = None, noise_id: Optional[jax.Array] = None,
               key: Optional[jax.Array] = None, rate: Optional[jax.Array] = None) -> jax.Array:
    """x: [B, N, C] (0 at padded slots), stage: batched `structs.Stage`, order_id: i32[] or None, noise_id:
    i32[B, N, 2] or None, key: the block's drop-path PRNG key or None (the 'dropout' stream), rate: f32[]
    drop-path rate or None (the static `drop_path`) (`DropPath`) -> x [B, N, C]."""
    valid = stage.valid
    if order_id is None:
      o = self.order_index % stage.order.shape[1]
      order, inverse = stage.order[:, o], stage.inverse[:, o]
    else:
      order = jnp.take(stage.order, order_id, axis=1)
      inverse = jnp.take(stage.inverse, order_id, axis=1)
    key1, key2 = (None, None) if key is None else (jax.random.fold_in(key, 1), jax.random.fold_in(key, 2))
    x = x + CPE(self.channels, self.dtype, name="cpe")(x, stage.neighbors)
    attn = SerializedAttention(self.channels, self.heads, self.patch_size, self.dtype, self.attention, name="attn")
    y = attn(LayerNorm(self.dtype, name="norm1")(x), valid, order, inverse, stage.segment)
    if self.layer_scale:
      y = y * self.param("ls1", nn.initializers.constant(1e-5), (self.channels,), jnp.float32).astype(y.dtype)
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train, noise_id, key1, rate)
    y = MLP(self.channels, self.mlp_ratio, self.dtype, name="mlp")(LayerNorm(self.dtype, name="norm2")(x))
    if self.layer_scale:
      y = y * self.param("ls2", nn.initializers.constant(1e-5), (self.channels,), jnp.float32).astype(y.dtype)
    x = x + DropPath(self.drop_path, name="drop_path2")(y, train, noise_id, key2, rate)
    return zero_padded(x, valid)


class BatchNorm(nn.Module):
  """Evaluation-mode BatchNorm1d over the last axis from running statistics (upstream PT-v3m1, eps 1e-3).

  Params: scale, bias, mean, var (all f32[C]; mean/var are the checkpoint's running statistics, held in the
  params tree as constants). Training-mode batch statistics are not implemented (PT-v3m1 is load-and-evaluate
  only in dos_jax: the model raises if asked to train it).
  """
  eps: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    mean = self.param("mean", nn.initializers.zeros, (c,), jnp.float32)
    var = self.param("var", nn.initializers.ones, (c,), jnp.float32)
    y = (x.astype(jnp.float32) - mean) * (jax.lax.rsqrt(var + self.eps) * scale) + bias
    return y.astype(self.dtype)


def make_norm(kind: str, dtype: Any, name: str) -> nn.Module:
  """'layer' -> LayerNorm (PT-v3m2, dos) or 'batch' -> eval BatchNorm (PT-v3m1), under module name `name`."""
  if kind == "layer":
    return LayerNorm(dtype, name=name)
  if kind == "batch":
    return BatchNorm(dtype=dtype, name=name)
  raise ValueError(f"unknown norm {kind!r}: expected 'layer' or 'batch'")


class ConvEmbedding(nn.Module):
  """PT-v3m1 stem: submanifold 5x5x5 conv without bias (gathered neighbours x kernel), eval BatchNorm, GELU.

  Params: conv/kernel f32[125, C_in, C] (kernel[k] <-> `structs.STEM_OFFSETS[k]`), batch_norm/{scale, bias,
  mean, var}. Runs in float32 (raw coordinates are among the inputs).
  """
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array, valid: jax.Array, neighbors: jax.Array) -> jax.Array:
    """feat: f32[B, N, C_in], valid: bool[B, N], neighbors: i32[B, N, 125] -> [B, N, C] in dtype."""
    gathered = gather_rows(feat.astype(jnp.float32), neighbors)
    k, cin = gathered.shape[-2:]
    kernel = self.param("kernel", nn.initializers.truncated_normal(0.02), (k, cin, self.channels), jnp.float32)
    x = jnp.dot(gathered.reshape(gathered.shape[:-2] + (k * cin,)), kernel.reshape(k * cin, self.channels))
    x = gelu(BatchNorm(dtype=jnp.float32, name="batch_norm")(x))
    return zero_padded(x.astype(self.dtype), valid)


class GridPooling(nn.Module):
  """Stride-2 grid pooling: Linear to the next width, max over the children of each parent voxel, norm, GELU.

  Params: proj/{kernel, bias}, then norm/{scale, bias} (LayerNorm: PT-v3m2, dos) or batch_norm/{scale, bias, mean,
  var} (`norm='batch'`: PT-v3m1's SerializedPooling, eval BatchNorm; its clusters are the same parent voxels).
  """
  channels: int
  dtype: Any = jnp.float32
  norm: str = "layer"

  @nn.compact
  def __call__(self, x: jax.Array, parent: jax.Array, next_valid: jax.Array) -> jax.Array:
    """x: [B, N_s, C_s], parent: i32[B, N_s] (sentinel N_{s+1}), next_valid: bool[B, N_{s+1}] -> [B, N_{s+1}, C]."""
    m = next_valid.shape[1]
    y = _dense(self.channels, self.dtype, "proj")(x)
    # The sentinel parent m is out of range: segment_max drops those rows (no extra segment to slice off).
    pooled = jax.vmap(lambda d, s: jax.ops.segment_max(d, s, num_segments=m))(y, parent)
    # Padded parents have no children (segment_max gives -inf there): zero them before the norm.
    pooled = zero_padded(pooled, next_valid)
    name = "norm" if self.norm == "layer" else "batch_norm"
    pooled = gelu(make_norm(self.norm, self.dtype, name)(pooled))
    return zero_padded(pooled, next_valid)
