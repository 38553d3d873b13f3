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

Relation to upstream Pointcept: with `upcast_projection=False` this is PT-v3m2 (Sonata's backbone) in
encoder mode, to float32 rounding on any cloud (`dos_jax.interop.pointcept`, tested against upstream on real
scans): the last, partial patch of a sequence is completed with the points before it as upstream does, the
serialization depth is upstream's, and `orders` / `shuffle_orders` follow upstream's `order` / `shuffle_orders`.
`embedding='conv'`, `pool_norm='batch'` is PT-v3m1 (evaluation only). The dos default adds the upcast projection
(upstream has no weights for it).

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

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from dos_jax.models import blocks


# What a scanned stage keeps for its backward pass: matmul outputs and the patch attention's, nothing else. The
# rest (the CPE's 27-neighbour gather, [N, 27C]; the serialization gathers; norms and activations) is recomputed
# from them, as XLA does by fusion in unrolled blocks; saved, each would be written per block into a stacked
# residual the loop cannot fuse away (scannet's bf16 step on v5e: temporaries 10.2 GiB with everything saved,
# 4.2 with this policy, 5.1 unrolled).
SCAN_POLICY = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names("patch_attention"))


class EncoderStage(nn.Module):
  """One stage: optional grid pooling from the previous stage, then `depth` blocks.

  Block i uses serialization order `orders[i % len(orders)]` (indices into `structs.ORDERS`), or, when the
  traced `order_ids: i32[len(orders)]` is given (training-time shuffling), `order_ids[i % len(orders)]`. Its
  drop-path key is `fold_in(k, i)` of one key k the stage draws from the 'dropout' stream.

  With `scan` (and depth > 1) the blocks run as one `lax.scan` over their params stacked on the fly, so the
  compiler sees one block per stage instead of `depth` copies; the params keep their `block{i}` names, are
  created unrolled at init, and the values equal the unrolled blocks'. Scannet's bf16 step on v5e: compiled in
  458 s instead of 972, 1.2 GiB less per chip, but 267 M compiler-estimated cycles instead of 208 M (stacking
  the params every step, per-iteration slices of residuals and gradients, no fusion across blocks): off by
  default.
  """
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
  orders: Tuple[int, ...] = (0, 1, 2, 3)
  pool_norm: str = "layer"
  layer_scale: bool = False
  scan: bool = False

  @nn.compact
  def __call__(self, x, stage, parent, train: bool, order_ids: Optional[jax.Array] = None,
               noise_id: Optional[jax.Array] = None):
    """x: [B, N_{s-1}, C_{s-1}] (or [B, N_s, C_s] without pooling) -> [B, N_s, C_s]; noise_id: see Block."""
    if self.pool:
      x = blocks.GridPooling(self.channels, self.dtype, norm=self.pool_norm, name="down")(x, parent, stage.valid)
    num_orders = len(self.orders)
    dropping = train and max(self.drop_path, default=0.0) > 0.0
    key = self.make_rng("dropout") if dropping else None
    keys = [None if key is None else jax.random.fold_in(key, i) for i in range(self.depth)]
    # Block i's static order index, and its traced one under training-time shuffling (else None).
    static_orders = [self.orders[i % num_orders] for i in range(self.depth)]
    traced_orders = [None if order_ids is None else order_ids[i % num_orders] for i in range(self.depth)]

    def new_block(cls, **kw):
      return cls(self.channels, self.heads, self.patch_size, mlp_ratio=self.mlp_ratio, dtype=self.dtype,
                 attention=self.attention, layer_scale=self.layer_scale, **kw)

    if not self.scan or self.depth < 2 or self.is_initializing():
      # Rematerialisation recomputes each block's activations in the backward pass (memory for compute);
      # argument 3 of Block.__call__ (self, x, stage, train, ...) is the Python bool `train`.
      block_cls = nn.remat(blocks.Block, static_argnums=(3,)) if self.remat else blocks.Block
      for i in range(self.depth):
        block = new_block(block_cls, order_index=static_orders[i], drop_path=self.drop_path[i], name=f"block{i}")
        x = block(x, stage, train, traced_orders[i], noise_id, keys[i])
      return x
    params = self.variables["params"]
    xs = {"params": jax.tree.map(lambda *p: jnp.stack(p), *[params[f"block{i}"] for i in range(self.depth)]),
          "order": jnp.stack([jnp.asarray(s if t is None else t, jnp.int32)
                              for s, t in zip(static_orders, traced_orders)])}
    if dropping:
      xs["key"] = jnp.stack(keys)
      xs["rate"] = jnp.asarray(self.drop_path, jnp.float32)
    # Unbound (parent=None): applied to each block's params in turn; order, key and rate come per block.
    block = new_block(blocks.Block, order_index=0, parent=None)

    def body(h, one):
      h = block.apply({"params": one["params"]}, h, stage, train, one["order"], noise_id, one.get("key"),
                      one.get("rate"))
      return h, None

    x, _ = jax.lax.scan(jax.checkpoint(body) if self.remat else jax.checkpoint(body, policy=SCAN_POLICY), x, xs)
    return x


def noise_ids(stage, view_id: jax.Array) -> jax.Array:
  """i32[B, N_s, 2] drop-path keys of a packed stage's slots: (global view index, rank among its view's slots).

  stage: batched packed `structs.Stage` (segment i32[B, N_s], M for padding); view_id: i32[B, M]. Padding slots
  get (0, rank); their rows are zero anyway."""
  num_views = view_id.shape[-1]

  def one(segment, ids):
    pos = jnp.arange(segment.shape[0], dtype=jnp.int32)
    first = jax.ops.segment_min(pos, segment, num_segments=num_views + 1)
    view = jnp.concatenate([ids, jnp.zeros((1,), ids.dtype)])[segment]
    return jnp.stack([view, pos - first[segment]], axis=-1)

  return jax.vmap(one)(stage.segment, view_id)


def _per_stage(value: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * num_stages
  return tuple(int(v) for v in value)


class PointTransformerV3(nn.Module):
  """The encoder. See the module docstring for the architecture and the parameter tree.

  Upstream options (defaults = the dos encoder): `patch_size` an int or one per stage (upstream
  `enc_patch_size`); `orders` indices into `structs.ORDERS` cycled by the blocks of a stage (upstream `order`);
  `shuffle_orders`: when called with an `order_key`, each stage draws a random permutation of `orders` from it
  (upstream's `Point.serialization(shuffle_orders=True)` at the embedding and at every
  pooling); `embedding='conv'` + `pool_norm='batch'` is PT-v3m1 (5x5x5 conv stem and eval BatchNorm; evaluation
  only); `mask_token` whether the embedding has one; `layer_scale` upstream's LayerScale; `up_cast_level` how
  many levels the up-cast concatenates (None = all, S - 1; Sonata probes 2), the result carried to stage 0;
  `upcast_projection` the dos Linear + LayerNorm on top (upstream has none).
  """
  channels: Tuple[int, ...]
  depths: Tuple[int, ...]
  heads: Tuple[int, ...]
  patch_size: Union[int, Tuple[int, ...]]
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention: Optional[str] = None
  remat: bool = False
  orders: Tuple[int, ...] = (0, 1, 2, 3)
  shuffle_orders: bool = False
  embedding: str = "linear"
  pool_norm: str = "layer"
  mask_token: bool = True
  layer_scale: bool = False
  up_cast_level: Optional[int] = None
  upcast_projection: bool = True
  scan_blocks: bool = False

  @property
  def levels(self) -> int:
    """Number of up-cast levels concatenated (0..S-1)."""
    s = len(self.channels)
    return s - 1 if self.up_cast_level is None else min(int(self.up_cast_level), s - 1)

  @property
  def out_dim(self) -> int:
    return sum(self.channels[len(self.channels) - 1 - self.levels:])

  @nn.compact
  def __call__(self, points, *, train: bool = False, mask_token: Optional[jax.Array] = None,
               order_key: Optional[jax.Array] = None,
               rows: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """points: batched PointSet (leading [B]); mask_token: bool[B, N_0] or None; order_key: PRNG key of the
    block-order permutations (used only with `shuffle_orders`; stage s draws
    `jax.random.permutation(fold_in(order_key, s), len(orders))`) -> (f32[B, N_0, D], aux).

    rows: optional i32[B, R] stage-0 slots (sentinel N_0): the output is then f32[B, R, D], the features of those
    slots only (0 at the sentinel and at padded slots), the same values as gathering them from the full output.
    The stages run on every point; the up-cast's last level and its projection run on the R rows alone."""
    num_stages = len(self.channels)
    if train and (self.embedding != "linear" or self.pool_norm != "layer"):
      raise ValueError("PT-v3m1 (conv stem, BatchNorm) runs in evaluation mode only: dos_jax implements its "
                       "BatchNorm from running statistics, not batch statistics (call with train=False)")
    patch_sizes = _per_stage(self.patch_size, num_stages)
    # Stochastic depth rises linearly over all blocks, as PTv3 (torch.linspace(0, drop_path, sum(depths))).
    total = sum(self.depths)
    rates = [self.drop_path * i / max(total - 1, 1) for i in range(total)]
    if self.embedding == "conv":
      if mask_token is not None:
        raise ValueError("the PT-v3m1 embedding has no mask token")
      x = blocks.ConvEmbedding(self.channels[0], self.dtype, name="embedding")(
          points.feat, points.valid, points.stem_neighbors)
    else:
      x = blocks.Embedding(self.channels[0], self.dtype, use_mask_token=self.mask_token, name="embedding")(
          points.feat, points.valid, mask_token)
    feats = []
    aux = {}
    start = 0
    if not self.shuffle_orders:
      order_key = None
    for s in range(num_stages):
      order_ids = None
      if order_key is not None:
        perm = jax.random.permutation(jax.random.fold_in(order_key, s), len(self.orders))
        order_ids = jnp.asarray(self.orders, jnp.int32)[perm]
      stage_module = EncoderStage(
          self.channels[s], self.depths[s], self.heads[s], patch_sizes[s], self.mlp_ratio,
          tuple(rates[start:start + self.depths[s]]), pool=s > 0, dtype=self.dtype, attention=self.attention,
          remat=self.remat, orders=tuple(self.orders), pool_norm=self.pool_norm, layer_scale=self.layer_scale,
          scan=self.scan_blocks, name=f"enc{s}")
      start += self.depths[s]
      noise = None
      if train and self.drop_path > 0 and getattr(points, "view_id", None) is not None:
        noise = noise_ids(points.stages[s], points.view_id)
      x = stage_module(x, points.stages[s], points.parent[s - 1] if s > 0 else None, train, order_ids, noise)
      feats.append(x)
      aux[f"enc{s}"] = x
    # Upcast: children take their parent's (already concatenated) features, deepest stage first; below the last
    # concatenated level the features are only carried down (Sonata's up_cast_level, then its probe's gather).
    up = feats[-1]
    lowest = num_stages - 1 - self.levels
    valid = points.valid
    if rows is not None:
      valid = blocks.take_rows(points.valid, rows, False)
      if num_stages == 1:
        up = blocks.take_rows(up, rows)
    for s in range(num_stages - 2, -1, -1):
      # Fill mode (no appended zero row): one parent row per child, and the pad copied all of `up` (the whole
      # upcast's widest array; on a TPU 21.7 -> 8.5 M estimated cycles forward at scannet's stage 1 -> 0).
      parent, feat = points.parent[s], feats[s]
      if s == 0 and rows is not None:
        # The requested rows' own features and their parents' (a parent's sentinel is N_1, read as zeros below).
        parent = blocks.take_rows(parent, rows, up.shape[1])
        feat = blocks.take_rows(feat, rows)
      carried = blocks.take_rows(up, parent)
      up = jnp.concatenate([feat, carried], axis=-1) if s >= lowest else carried
    aux["upcast_concat"] = up
    if not self.upcast_projection:
      return blocks.zero_padded(up.astype(jnp.float32), valid), aux
    y = _Upcast(self.out_dim, self.dtype, name="upcast")(up)
    return blocks.zero_padded(y.astype(jnp.float32), valid), aux


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
