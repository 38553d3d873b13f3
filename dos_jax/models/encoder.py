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

import math
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from dos_jax import variants
from dos_jax.batching import structs
from dos_jax.models import ptv3
from dos_jax.models import spec as model_spec
from dos_jax.models.spec import Architecture, ModelSpec

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ATTENTION = {"xla": None, "cudnn": "cudnn", None: None}


def _get(cfg: Any, key: str, default: Any) -> Any:
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _legacy_spec(model_cfg: Any) -> ModelSpec:
  """TRANSITIONAL (issue 16, removed once every caller passes a ModelSpec): a ModelSpec from config.model, a
  plain dict or upstream's model config, with the defaults and checks `build` had when it read those."""
  arch = None
  if _get(model_cfg, "enc_channels", None) is not None:
    kind = _get(model_cfg, "type", "PT-v3m2")
    order = _get(model_cfg, "order", structs.ORDERS)
    patch = _get(model_cfg, "enc_patch_size", 1024)
    channels = tuple(int(c) for c in _get(model_cfg, "enc_channels", None))
    arch = Architecture(type=kind, channels=channels, depths=tuple(_get(model_cfg, "enc_depths", ())),
                        heads=tuple(_get(model_cfg, "enc_num_head", ())),
                        patch_sizes=(int(patch),) * len(channels) if isinstance(patch, int) else tuple(patch),
                        orders=(order,) if isinstance(order, str) else tuple(order),
                        mask_token=bool(_get(model_cfg, "mask_token", kind == "PT-v3m2")),
                        layer_scale=bool(_get(model_cfg, "layer_scale", False)))
  spec = ModelSpec(
      variant=_get(model_cfg, "variant", "tiny"), dtype=_get(model_cfg, "dtype", "float32"),
      attention=_get(model_cfg, "attention", "xla"), remat=bool(_get(model_cfg, "remat", False)),
      drop_path=float(_get(model_cfg, "drop_path", 0.0)), mlp_ratio=float(_get(model_cfg, "mlp_ratio", 4)),
      shuffle_orders=bool(_get(model_cfg, "shuffle_orders", False)),
      up_cast_level=int(_get(model_cfg, "up_cast_level", 0) or 0),
      upcast_projection=bool(_get(model_cfg, "upcast_projection", True)), architecture=arch)
  a = model_spec.architecture_of(spec)
  if not len(a.channels) == len(a.depths) == len(a.heads):
    raise ValueError(f"model config: enc_channels {a.channels}, enc_depths {a.depths} and enc_num_head {a.heads} "
                     "must have one entry per stage")
  if a.type not in variants.UPSTREAM_TYPES:
    raise ValueError(f"model config type={a.type!r}: expected 'PT-v3m2' or 'PT-v3m1'")
  if not a.orders or any(o not in structs.ORDERS for o in a.orders):
    raise ValueError(f"model config order={a.orders!r}: expected names among {structs.ORDERS}")
  if spec.dtype not in _DTYPES:
    raise ValueError(f"config.model.dtype={spec.dtype!r}: expected one of {sorted(_DTYPES)}")
  if spec.attention not in _ATTENTION:
    raise ValueError(f"config.model.attention={spec.attention!r}: expected 'xla' or 'cudnn'")
  for c, h in zip(a.channels, a.heads):
    if c % h:
      raise ValueError(f"config.model.variant: channels {c} not divisible by heads {h}")
  return spec


def _spec(spec: Optional[ModelSpec], model_cfg: Any) -> ModelSpec:
  if spec is None and model_cfg is None:
    raise TypeError("the encoder needs a ModelSpec (spec=)")
  if spec is None:
    spec = model_cfg
  return spec if isinstance(spec, ModelSpec) else _legacy_spec(spec)


def build(spec: ModelSpec) -> ptv3.PointTransformerV3:
  """The Flax module a ModelSpec describes (its values are the gate's or interop's: not checked again)."""
  spec = _spec(spec, None)
  arch = model_spec.architecture_of(spec)
  m1 = arch.type == "PT-v3m1"
  return ptv3.PointTransformerV3(
      channels=tuple(arch.channels), depths=tuple(arch.depths), heads=tuple(arch.heads),
      patch_size=tuple(arch.patch_sizes), mlp_ratio=float(spec.mlp_ratio), drop_path=float(spec.drop_path),
      dtype=_DTYPES[spec.dtype], attention=_ATTENTION[spec.attention], remat=bool(spec.remat),
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
                   spec: Optional[ModelSpec] = None, model_cfg: Any = None
                   ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Like `apply`, also returning the aux dict (per-stage features `enc{s}`, `upcast_concat`)."""
  model = build(_spec(spec, model_cfg))
  _check_points(model, points)
  rngs = {}
  if train and model.drop_path > 0.0:
    if rng is None:
      raise ValueError("encoder.apply(train=True) with drop_path > 0 needs an rng")
    rngs["dropout"] = rng
  return model.apply({"params": params}, points, train=train, mask_token=mask_token, order_key=order_rng,
                     rngs=rngs)


def apply(params: Dict[str, Any], points: Any, *, train: bool, rng: Optional[jax.Array] = None,
          mask_token: Optional[jax.Array] = None, order_rng: Optional[jax.Array] = None,
          spec: Optional[ModelSpec] = None, model_cfg: Any = None) -> jax.Array:
  """Dense features f32[B, N_0, D] of every stage-0 slot (exactly 0 at padded slots).

  Args:
    params: from `init`.
    points: batched PointSet.
    train: enables drop path (needs `rng`).
    rng: PRNG key for drop path.
    mask_token: optional bool[B, N_0]: where True the embedding is replaced by the learnable mask token.
    order_rng: PRNG key for training-time order shuffling (used only with spec.shuffle_orders; each stage
      draws a permutation of the orders, shared by the batch, as upstream). None = the deterministic orders
      (evaluation).
    spec: the ModelSpec (`dos_jax.specs.model_spec(config)`). (`model_cfg=`, config.model or a dict, is accepted
      until every caller passes a ModelSpec.)
  """
  return apply_with_aux(params, points, train=train, rng=rng, mask_token=mask_token, order_rng=order_rng,
                        spec=spec, model_cfg=model_cfg)[0]


def param_count(variant: str, in_channels: int = 9, mlp_ratio: float = 4.0) -> int:
  """Closed-form parameter count of a variant (in_channels: width of PointSet.feat, 9 = coord+colour+normal)."""
  spec = variants.decode_variant(variant)
  return ptv3.param_count_formula(spec["channels"], spec["depths"], in_channels, mlp_ratio)


def count_params(params: Any) -> int:
  """Number of scalars in a params pytree."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
