"""Pure init/apply functions of the encoder: the student and the teacher are `apply` with different params.

  params = encoder.init(rng, points, config.model)
  feats = encoder.apply(params, points, train=True, rng=key, model_cfg=config.model)   # f32[B, N, D]

`points` is a batched `dos_jax.batching.structs.PointSet` (leading axis [B]). `model_cfg` is `config.model`
(keys: variant, dtype, drop_path, mlp_ratio; optional: attention = 'xla' | 'cudnn', remat = False | True to
recompute block activations in the backward pass; shuffle_orders (training-time order shuffling, with `order_rng`);
up_cast_level (0 = all levels) and upcast_projection (the Sonata-compatible head: up_cast_level=2,
upcast_projection=False). A model loaded from an upstream checkpoint (`dos_jax.interop.pointcept`) also carries
upstream's architecture keys, which take the place of the variant's: type ('PT-v3m2' | 'PT-v3m1'),
enc_channels, enc_depths, enc_num_head, enc_patch_size, order, mask_token, layer_scale). Both functions are jit-able;
the model is rebuilt from the config on every call (cheap: a frozen dataclass), so jit them with model_cfg closed
over (e.g. `functools.partial(encoder.apply, model_cfg=cfg)`), not as a traced argument.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from dos_jax import variants
from dos_jax.batching import structs
from dos_jax.models import ptv3

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ATTENTION = {"xla": None, "cudnn": "cudnn", None: None}


def _get(cfg: Any, key: str, default: Any) -> Any:
  # config.model is an ml_collections.ConfigDict (has .get); plain dicts work too.
  if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
    return cfg.get(key, default)
  return getattr(cfg, key, default)


def _architecture(model_cfg: Any) -> Dict[str, Any]:
  """channels/depths/heads/patch_size and the upstream options, from the variant or upstream's keys."""
  spec = variants.decode_variant(_get(model_cfg, "variant", "tiny"))
  if _get(model_cfg, "enc_channels", None) is not None:
    spec = dict(channels=tuple(_get(model_cfg, "enc_channels", None)), depths=tuple(_get(model_cfg, "enc_depths", ())),
                heads=tuple(_get(model_cfg, "enc_num_head", ())), patch_size=_get(model_cfg, "enc_patch_size", 1024))
    if not len(spec["channels"]) == len(spec["depths"]) == len(spec["heads"]):
      raise ValueError(f"model config: enc_channels {spec['channels']}, enc_depths {spec['depths']} and "
                        f"enc_num_head {spec['heads']} must have one entry per stage")
  patch = spec["patch_size"]
  spec["patch_size"] = int(patch) if isinstance(patch, int) else tuple(int(p) for p in patch)
  kind = _get(model_cfg, "type", "PT-v3m2")
  if kind not in ("PT-v3m2", "PT-v3m1"):
    raise ValueError(f"model config type={kind!r}: expected 'PT-v3m2' or 'PT-v3m1'")
  order = _get(model_cfg, "order", structs.ORDERS)
  order = (order,) if isinstance(order, str) else tuple(order)
  bad = [o for o in order if o not in structs.ORDERS]
  if bad or not order:
    raise ValueError(f"model config order={order!r}: expected names among {structs.ORDERS}")
  level = int(_get(model_cfg, "up_cast_level", 0) or 0)
  if level < 0:
    raise ValueError(f"config.model.up_cast_level={level}: expected >= 0 (0 = every level)")
  spec.update(orders=tuple(structs.ORDERS.index(o) for o in order),
              embedding="conv" if kind == "PT-v3m1" else "linear",
              pool_norm="batch" if kind == "PT-v3m1" else "layer",
              mask_token=bool(_get(model_cfg, "mask_token", kind == "PT-v3m2")),
              layer_scale=bool(_get(model_cfg, "layer_scale", False)),
              shuffle_orders=bool(_get(model_cfg, "shuffle_orders", False)),
              up_cast_level=level or None,
              upcast_projection=bool(_get(model_cfg, "upcast_projection", True)))
  return spec


def build(model_cfg: Any) -> ptv3.PointTransformerV3:
  """The Flax module described by `model_cfg` (raises ValueError naming the bad config.model key)."""
  spec = _architecture(model_cfg)
  dtype_name = _get(model_cfg, "dtype", "float32")
  if dtype_name not in _DTYPES:
    raise ValueError(f"config.model.dtype={dtype_name!r}: expected one of {sorted(_DTYPES)}")
  drop_path = float(_get(model_cfg, "drop_path", 0.0))
  if not 0.0 <= drop_path < 1.0:
    raise ValueError(f"config.model.drop_path={drop_path}: expected a rate in [0, 1)")
  mlp_ratio = float(_get(model_cfg, "mlp_ratio", 4))
  if mlp_ratio <= 0:
    raise ValueError(f"config.model.mlp_ratio={mlp_ratio}: expected > 0")
  attention = _get(model_cfg, "attention", "xla")
  if attention not in _ATTENTION:
    raise ValueError(f"config.model.attention={attention!r}: expected 'xla' or 'cudnn'")
  if attention == "cudnn" and dtype_name != "bfloat16":
    raise ValueError("config.model.attention='cudnn' needs config.model.dtype='bfloat16' (cuDNN flash attention "
                      "has no float32 kernel)")
  for c, h in zip(spec["channels"], spec["heads"]):
    if c % h:
      raise ValueError(f"config.model.variant: channels {c} not divisible by heads {h}")
  return ptv3.PointTransformerV3(
      channels=tuple(spec.pop("channels")), depths=tuple(spec.pop("depths")), heads=tuple(spec.pop("heads")),
      mlp_ratio=mlp_ratio, drop_path=drop_path, dtype=_DTYPES[dtype_name], attention=_ATTENTION[attention],
      remat=bool(_get(model_cfg, "remat", False)), **spec)


def _check_points(model: ptv3.PointTransformerV3, points: Any) -> None:
  if len(points.stages) != len(model.channels):
    raise ValueError(f"config.model.variant has {len(model.channels)} stages but the batch has "
                      f"{len(points.stages)}: build batches with the same variant")
  if points.feat.ndim != 3:
    raise ValueError(f"encoder expects a batched PointSet (feat [B, N, C_in]), got feat shape {points.feat.shape}")


def output_dim(model_cfg: Any) -> int:
  """Width D of the dense features `apply` returns: sum of the variant's stage widths."""
  return build(model_cfg).out_dim


def init(rng: jax.Array, points: Any, model_cfg: Any) -> Dict[str, Any]:
  """Initial params (f32 pytree, the 'params' collection) for batches shaped like `points`."""
  model = build(model_cfg)
  _check_points(model, points)
  variables = jax.jit(lambda r, p: model.init({"params": r}, p, train=False))(rng, points)
  return variables["params"]


def apply_with_aux(params: Dict[str, Any], points: Any, *, train: bool, rng: Optional[jax.Array] = None,
                   mask_token: Optional[jax.Array] = None, order_rng: Optional[jax.Array] = None,
                   model_cfg: Any) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Like `apply`, also returning the aux dict (per-stage features `enc{s}`, `upcast_concat`)."""
  model = build(model_cfg)
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
          model_cfg: Any) -> jax.Array:
  """Dense features f32[B, N_0, D] of every stage-0 slot (exactly 0 at padded slots).

  Args:
    params: from `init`.
    points: batched PointSet.
    train: enables drop path (needs `rng`).
    rng: PRNG key for drop path.
    mask_token: optional bool[B, N_0]: where True the embedding is replaced by the learnable mask token.
    order_rng: PRNG key for training-time order shuffling (used only with model_cfg.shuffle_orders; each stage
      draws a permutation of the orders, shared by the batch, as upstream). None = the deterministic orders
      (evaluation).
    model_cfg: config.model.
  """
  return apply_with_aux(params, points, train=train, rng=rng, mask_token=mask_token, order_rng=order_rng,
                        model_cfg=model_cfg)[0]


def param_count(variant: str, in_channels: int = 9, mlp_ratio: float = 4.0) -> int:
  """Closed-form parameter count of a variant (in_channels: width of PointSet.feat, 9 = coord+colour+normal)."""
  spec = variants.decode_variant(variant)
  return ptv3.param_count_formula(spec["channels"], spec["depths"], in_channels, mlp_ratio)


def count_params(params: Any) -> int:
  """Number of scalars in a params pytree."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
