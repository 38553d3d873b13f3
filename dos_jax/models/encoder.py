"""Pure init/apply functions of the encoder: the student and the teacher are `apply` with different params.

  spec = specs.model_spec(config)                                  # a dos_jax.models.spec.ModelSpec
  params = encoder.init(rng, points, spec)
  feats = encoder.apply(params, points, train=True, rng=key, spec=spec)   # f32[B, N, D]

`points` is a batched `dos_jax.batching.structs.PointSet` (leading axis [B]). `spec` is a frozen ModelSpec:
dtype, attention ('xla' | 'cudnn'), remat (recompute block activations in the backward pass), drop_path,
mlp_ratio, shuffle_orders (training-time order shuffling, with `order_rng`), up_cast_level (0 = all levels) and
upcast_projection (the Sonata-compatible head: up_cast_level=2, upcast_projection=False), and the architecture:
the variant's, or an explicit `Architecture` (a loaded upstream checkpoint's: `dos_jax.interop.pointcept`, type
'PT-v3m2' | 'PT-v3m1'). Its values come through the gate (`dos_jax.schema.validate`) or interop and are not
checked here. The functions are jit-able; the module is rebuilt from the spec on every call (cheap: a frozen
dataclass), so jit them with the spec closed over (`functools.partial(encoder.apply, spec=spec)`), not as a traced
argument.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from dos_jax import variants
from dos_jax.batching import structs
from dos_jax.models import ptv3
from dos_jax.models import spec as model_spec
from dos_jax.models.spec import ModelSpec

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ATTENTION = {"xla": None, "cudnn": "cudnn"}


def build(spec: ModelSpec) -> ptv3.PointTransformerV3:
  """The Flax module a ModelSpec describes (its values are the gate's or interop's: not checked again)."""
  arch = model_spec.architecture_of(spec)
  m1 = arch.type == "PT-v3m1"
  return ptv3.PointTransformerV3(
      channels=tuple(arch.channels), depths=tuple(arch.depths), heads=tuple(arch.heads),
      patch_size=tuple(arch.patch_sizes), mlp_ratio=float(spec.mlp_ratio), drop_path=float(spec.drop_path),
      dtype=_DTYPES[spec.dtype], attention=_ATTENTION[spec.attention], remat=bool(spec.remat), scan_blocks=bool(spec.scan_blocks),
      orders=tuple(structs.ORDERS.index(o) for o in arch.orders), shuffle_orders=bool(spec.shuffle_orders),
      embedding="conv" if m1 else "linear", pool_norm="batch" if m1 else "layer", mask_token=bool(arch.mask_token),
      layer_scale=bool(arch.layer_scale), up_cast_level=int(spec.up_cast_level) or None,
      upcast_projection=bool(spec.upcast_projection))


def _check_points(model: ptv3.PointTransformerV3, points: Any) -> None:
  if len(points.stages) != len(model.channels):
    raise ValueError(f"the model has {len(model.channels)} stages but the batch has {len(points.stages)}: build "
                      "batches with the same model (batching.spec.batch_spec of the same config)")
  if points.feat.ndim != 3:
    raise ValueError(f"encoder expects a batched PointSet (feat [B, N, C_in]), got feat shape {points.feat.shape}")


def all_stages_spec(spec: ModelSpec) -> ModelSpec:
  """The spec whose `apply` gives the raw concatenation of EVERY stage's features carried to stage 0, without the
  dos up-cast projection: f32[B, N_0, sum(channels)] (1232 at base, Sonata's linear-probe input; 112 at tiny).
  The same params serve both specs (the projection's params are simply not read)."""
  return dataclasses.replace(spec, up_cast_level=0, upcast_projection=False)


def output_dim(spec: ModelSpec) -> int:
  """Width D of the dense features `apply` returns (sum of the concatenated stage widths)."""
  return build(spec).out_dim


def init(rng: jax.Array, points: Any, spec: ModelSpec) -> Dict[str, Any]:
  """Initial params (f32 pytree, the 'params' collection) for batches shaped like `points`."""
  model = build(spec)
  _check_points(model, points)
  variables = jax.jit(lambda r, p: model.init({"params": r}, p, train=False))(rng, points)
  return variables["params"]


def apply_with_aux(params: Dict[str, Any], points: Any, *, train: bool, rng: Optional[jax.Array] = None,
                   mask_token: Optional[jax.Array] = None, order_rng: Optional[jax.Array] = None,
                   spec: ModelSpec, rows: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Like `apply`, also returning the aux dict (per-stage features `enc{s}`, `upcast_concat`)."""
  model = build(spec)
  _check_points(model, points)
  rngs = {}
  if train and model.drop_path > 0.0:
    if rng is None:
      raise ValueError("encoder.apply(train=True) with drop_path > 0 needs an rng")
    rngs["dropout"] = rng
  return model.apply({"params": params}, points, train=train, mask_token=mask_token, order_key=order_rng,
                     rows=rows, rngs=rngs)


def apply(params: Dict[str, Any], points: Any, *, train: bool, rng: Optional[jax.Array] = None,
          mask_token: Optional[jax.Array] = None, order_rng: Optional[jax.Array] = None,
          spec: ModelSpec, rows: Optional[jax.Array] = None) -> jax.Array:
  """Dense features f32[B, N_0, D] of every stage-0 slot (exactly 0 at padded slots), or f32[B, R, D] at `rows`.

  Args:
    params: from `init`.
    points: batched PointSet.
    train: enables drop path (needs `rng`).
    rng: PRNG key for drop path.
    mask_token: optional bool[B, N_0]: where True the embedding is replaced by the learnable mask token.
    order_rng: PRNG key for training-time order shuffling (used only with spec.shuffle_orders; each stage
      draws a permutation of the orders, shared by the batch, as upstream). None = the deterministic orders
      (evaluation).
    spec: the ModelSpec (`dos_jax.specs.model_spec(config)`, or `dos_jax.interop.pointcept.model_spec` of a
      loaded upstream checkpoint's model config).
    rows: optional i32[B, R] stage-0 slots (sentinel N_0) at which to return the features (0 at the sentinel and
      at padded slots): what gathering them from the full output gives, with the up-cast's last level and
      projection computed at those rows only (the teacher's targets are read at the student's points alone).
  """
  return apply_with_aux(params, points, train=train, rng=rng, mask_token=mask_token, order_rng=order_rng,
                        spec=spec, rows=rows)[0]


def param_count(variant: str, in_channels: int = 9, mlp_ratio: float = 4.0) -> int:
  """Closed-form parameter count of a variant (in_channels: width of PointSet.feat, 9 = coord+colour+normal)."""
  spec = variants.decode_variant(variant)
  return ptv3.param_count_formula(spec["channels"], spec["depths"], in_channels, mlp_ratio)


def count_params(params: Any) -> int:
  """Number of scalars in a params pytree."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
