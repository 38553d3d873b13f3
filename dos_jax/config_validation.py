"""Config validation: every key, type and value checked on the host, before any data is read or anything compiles.

`validate_config(config)` raises `dos_jax.errors.ConfigError` naming the key (`config.data.capacity`) and the
accepted range, so a typo or an impossible value fails in a second instead of after a minute of compilation or an
hour of training. The schema is `dos_jax.schema.default_config()`: a key it does not hold is unknown, and its default
gives the expected type. Value ranges live in `_RULES` below, one line per key.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import ml_collections

from dos_jax import schema
from dos_jax.errors import ConfigError
from dos_jax.models import variants

SUPERVISIONS = ("observable", "masked_tokens", "token_jitter")
NORMALIZATIONS = ("softmap", "clustering")
NONFINITE_POLICIES = ("skip", "stop")
DATA_FORMATS = ("synthetic", "pointcept", "tfds")
DATA_KINDS = ("indoor", "outdoor", "longtail")
DATASETS = ("synthetic", "scannet", "scannet200", "s3dis", "nuscenes", "semantickitti")
OVERFLOW_POLICIES = ("downsample", "error")
FEAT_KEYS = ("coord", "color", "normal", "strength")
DTYPES = ("float32", "bfloat16")


class _Rule:
  """A value check: `check(value) -> bool` and the accepted range in words for the error message."""

  def __init__(self, check: Callable[[Any], bool], accepted: str):
    self.check = check
    self.accepted = accepted


def _number(value, integer: bool) -> bool:
  if isinstance(value, bool):  # bool is an int subclass; True is never a valid step count or rate
    return False
  if integer:
    return isinstance(value, int)
  return isinstance(value, (int, float)) and math.isfinite(value)


def _range(lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False) -> _Rule:
  """A numeric interval; `lo_open`/`hi_open` exclude the bound."""

  def check(v):
    if not _number(v, integer):
      return False
    if lo is not None and (v < lo or (lo_open and v == lo)):
      return False
    if hi is not None and (v > hi or (hi_open and v == hi)):
      return False
    return True

  kind = "an integer" if integer else "a finite number"
  left = "(" if lo_open else "["
  right = ")" if hi_open else "]"
  lo_s = "-inf" if lo is None else repr(lo)
  hi_s = "inf" if hi is None else repr(hi)
  if lo is None:
    left = "("
  if hi is None:
    right = ")"
  return _Rule(check, f"{kind} in {left}{lo_s}, {hi_s}{right}")


def _one_of(*choices) -> _Rule:
  return _Rule(lambda v: isinstance(v, str) and v in choices, f"one of {list(choices)}")


def _boolean() -> _Rule:
  return _Rule(lambda v: isinstance(v, bool), "a bool (True or False)")


def _string() -> _Rule:
  return _Rule(lambda v: isinstance(v, str), "a string")


def _optional(rule: _Rule) -> _Rule:
  return _Rule(lambda v: v is None or rule.check(v), f"None or {rule.accepted}")


def _feat_keys() -> _Rule:
  def check(v):
    return (isinstance(v, (tuple, list)) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(k, str) and k in FEAT_KEYS for k in v))

  return _Rule(check, f"a non-empty tuple of distinct names from {list(FEAT_KEYS)}")


def _capacities() -> _Rule:
  return _Rule(lambda v: isinstance(v, (tuple, list)) and all(_number(c, True) and c >= 1 for c in v),
               "a tuple of positive integers, one per encoder stage (() when data.packing is off)")


_POSITIVE_INT = _range(1, integer=True)
_NON_NEGATIVE_INT = _range(0, integer=True)
_FRACTION = _range(0.0, 1.0)

# One rule per leaf key of dos_jax.schema.default_config(). A key added to the schema needs a rule here (a test checks).
_RULES: Dict[str, _Rule] = {
    "seed": _range(0, 2**31 - 1, integer=True),
    "total_steps": _POSITIVE_INT,
    "batch_size": _POSITIVE_INT,
    "log_every": _POSITIVE_INT,
    "checkpoint_every": _NON_NEGATIVE_INT,  # 0: only the final checkpoint (and on SIGTERM)
    "keep_checkpoints": _POSITIVE_INT,
    "num_devices": _NON_NEGATIVE_INT,  # 0: all devices
    "zipf_alpha": _range(0.0),
    "num_prototypes": _POSITIVE_INT,
    "mask_ratio": _range(0.0, 1.0, hi_open=True),
    "supervision": _one_of(*SUPERVISIONS),
    "normalization": _one_of(*NORMALIZATIONS),
    "cross_view": _boolean(),
    "sinkhorn_iters": _POSITIVE_INT,
    "teacher_temp_start": _range(0.0, lo_open=True),
    "teacher_temp_end": _range(0.0, lo_open=True),
    "teacher_temp_warmup_frac": _FRACTION,
    "student_temp": _range(0.0, lo_open=True),
    "ema_momentum_start": _FRACTION,
    "ema_momentum_end": _FRACTION,
    "nonfinite": _one_of(*NONFINITE_POLICIES),
    "optim.lr": _range(0.0, lo_open=True),
    "optim.warmup_frac": _FRACTION,
    "optim.min_lr_ratio": _FRACTION,
    "optim.weight_decay_start": _range(0.0),
    "optim.weight_decay_end": _range(0.0),
    "optim.clip_norm": _range(0.0),  # 0: no clipping
    "optim.b1": _range(0.0, 1.0, hi_open=True),
    "optim.b2": _range(0.0, 1.0, hi_open=True),
    "data.format": _one_of(*DATA_FORMATS),
    "data.root": _string(),
    "data.kind": _one_of(*DATA_KINDS),
    "data.dataset": _one_of(*DATASETS),
    "data.num_scenes": _POSITIVE_INT,
    "data.grid_size": _range(0.0, lo_open=True),
    "data.mask_cell": _range(0.0, lo_open=True),
    "data.num_views": _POSITIVE_INT,
    "data.crop_ratio": _range(0.0, 1.0, lo_open=True),
    "data.capacity": _POSITIVE_INT,
    "data.student_capacity": _POSITIVE_INT,
    "data.overflow": _one_of(*OVERFLOW_POLICIES),
    "data.feat_keys": _feat_keys(),
    "data.num_workers": _NON_NEGATIVE_INT,
    "data.prefetch": _NON_NEGATIVE_INT,
    "data.stage_ratio": _range(0.0, 1.0, lo_open=True),
    "data.worker_backend": _one_of("thread", "process"),
    "data.cross_radius": _range(0.0),  # 0: 2 grid cells
    "data.token_jitter_sigma": _range(0.0),  # metres per axis; 0 = masked tokens at their exact positions
    "data.token_jitter_clip": _range(0.0, lo_open=True),  # metres
    "data.views": _one_of("duplicate", "independent"),
    "data.packing": _boolean(),
    "data.pack_scenes": _NON_NEGATIVE_INT,  # 0: the whole host batch in one pack
    "data.packed_capacity": _capacities(),
    "data.packed_student_capacity": _capacities(),
    "data.packed_sequence": _capacities(),  # () = the slot capacities
    "data.packed_student_sequence": _capacities(),
    "data.augmentations": _Rule(lambda v: isinstance(v, (tuple, list)),
                                "a tuple of (op name, kwargs) pairs (dos_jax.data.transforms); () = defaults"),
    "model.variant": _one_of(*variants.VARIANTS),
    "model.dtype": _one_of(*DTYPES),
    "model.drop_path": _range(0.0, 1.0, hi_open=True),
    "model.mlp_ratio": _range(0.0, lo_open=True),
    "model.head_hidden": _POSITIVE_INT,
    "model.head_dim": _POSITIVE_INT,
    "model.shuffle_orders": _boolean(),
    "model.up_cast_level": _NON_NEGATIVE_INT,
    "model.upcast_projection": _boolean(),
    "probe.steps": _POSITIVE_INT,
    "probe.lr": _range(0.0, lo_open=True),
    "probe.batch_points": _POSITIVE_INT,
    "probe.class_balanced": _boolean(),
    "probe.num_classes": _POSITIVE_INT,
    "probe.train_fraction": _range(0.0, 1.0, lo_open=True, hi_open=True),
    "probe.capacity": _optional(_POSITIVE_INT),
    "data.seed": _optional(_range(0, 2**31 - 1, integer=True)),
    "data.num_val_scenes": _optional(_POSITIVE_INT),
    "data.num_points": _optional(_POSITIVE_INT),
    "data.segment_key": _optional(_string()),
    "data.num_classes": _optional(_POSITIVE_INT),
    "data.tfds_name": _optional(_string()),
}


def _type_rule(default: Any) -> _Rule:
  """For a schema key without an entry in _RULES: the type of its default (int accepted where float is)."""
  if isinstance(default, bool):
    return _boolean()
  if isinstance(default, int):
    return _range(integer=True)
  if isinstance(default, float):
    return _range()
  if isinstance(default, str):
    return _string()
  kind = type(default)
  return _Rule(lambda v: isinstance(v, kind), f"a {kind.__name__}")


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[Tuple[str, Any]]:
  """Yields (dotted key, value) for every leaf of a (nested) ConfigDict, in sorted key order."""
  for key in sorted(config.keys()):
    value = config[key]
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from flatten(value, name + ".")
    else:
      yield name, value


def _check_keys(config, schema, prefix: str = "") -> None:
  """Raises ConfigError for the first key of `config` that `schema` lacks (with close matches as a hint)."""
  for key in sorted(config.keys()):
    name = f"{prefix}{key}"
    if key not in schema:
      hint = difflib.get_close_matches(key, list(schema.keys()), n=3)
      did_you_mean = f" Did you mean {', '.join(repr(prefix + h) for h in hint)}?" if hint else ""
      raise ConfigError(
          f"config.{name}: unknown key.{did_you_mean} Known keys here: {sorted(schema.keys())} "
          "(a new key must first be added to dos_jax/schema.py:default_config).")
    sub, ref = config[key], schema[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(sub, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config.{name}: expected a group of keys {sorted(ref.keys())}, got {sub!r}")
      _check_keys(sub, ref, name + ".")
    elif isinstance(sub, (ml_collections.ConfigDict, dict)):
      raise ConfigError(f"config.{name}: expected a single value like {ref!r}, got a group of keys")


def _check_capacity(name: str, capacity: int, patch_size: int) -> None:
  """Stage 0 must be whole attention patches; later stages are rounded up to patches by the batching
  (`dos_jax.batching.patches.stage_capacities`), so stage 0 is the only constraint on the config."""
  if capacity % min(patch_size, capacity):
    lower = (capacity // patch_size) * patch_size
    options = [c for c in (lower, lower + patch_size) if c > 0]
    raise ConfigError(
        f"config.{name}={capacity}: must be a multiple of the model's attention patch size {patch_size} "
        f"(model.variant), or at most one patch; e.g. {' or '.join(map(str, options))}.")


def validate_config(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> None:
  """Checks a config before anything expensive happens; raises ConfigError naming the key and the accepted range.

  Args:
    config: a full experiment config (as returned by a `configs/*.py:get_config`, with command-line overrides).
    num_devices: devices on the data axis of the mesh; when given, `batch_size` must be a multiple of it.
  """
  schema_config = schema.default_config()
  _check_keys(config, schema_config)
  values = dict(flatten(config))
  defaults = dict(flatten(schema_config))
  for name, default in defaults.items():
    rule = _RULES.get(name) or _type_rule(default)
    if name not in values:
      raise ConfigError(f"config.{name}: missing; expected {rule.accepted} (default {default!r} in "
                        "dos_jax/schema.py)")
    value = values[name]
    if not rule.check(value):
      raise ConfigError(f"config.{name}={value!r}: expected {rule.accepted}.")

  # Cross-key constraints.
  patch_size = variants.decode_variant(values["model.variant"])["patch_size"]
  _check_capacity("data.capacity", values["data.capacity"], patch_size)
  _check_capacity("data.student_capacity", values["data.student_capacity"], patch_size)
  if values["data.format"] in ("pointcept", "tfds") and not values["data.root"]:
    raise ConfigError(f"config.data.root is empty but data.format={values['data.format']!r} reads from disk: set "
                      "--config.data.root=PATH (a folder of scene folders), or use --config.data.format=synthetic.")
  if values["cross_view"] and values["data.num_views"] != 2:
    raise ConfigError(f"config.data.num_views={values['data.num_views']}: cross_view=True pairs view v with view "
                      "1-v, so num_views must be 2 (or set --config.cross_view=False).")
  if values["data.student_capacity"] > values["data.capacity"]:
    raise ConfigError(f"config.data.student_capacity={values['data.student_capacity']}: must be <= "
                      f"data.capacity={values['data.capacity']} (the student sees a subset of the teacher's view).")
  if values["ema_momentum_start"] > values["ema_momentum_end"]:
    raise ConfigError(f"config.ema_momentum_start={values['ema_momentum_start']}: must be <= ema_momentum_end="
                      f"{values['ema_momentum_end']} (the teacher momentum rises over training).")
  if values["data.packing"]:
    _check_packing(values)
  if num_devices is not None:
    _check_batch_split(values["batch_size"], num_devices)


def _check_packing(values) -> None:
  """data.packing=True: one capacity (and sequence length, when given) per encoder stage, and the recipe the
  packed step implements (`dos_jax.batching.packing`, `dos_jax.segment_objective`)."""
  stages = len(variants.decode_variant(values["model.variant"])["channels"])
  fix = "calibrate with `python benchmarks/padding.py --config CONFIG --calibrate` or set --config.data.packing=False"
  for key in ("packed_capacity", "packed_student_capacity", "packed_sequence", "packed_student_sequence"):
    value = tuple(values[f"data.{key}"])
    optional = key.endswith("sequence")
    if (value or not optional) and len(value) != stages:
      raise ConfigError(f"config.data.{key}={value}: data.packing=True needs one entry per encoder stage "
                        f"({stages} for model.variant={values['model.variant']!r}){' or ()' if optional else ''}; "
                        f"{fix}")
  if values["supervision"] != "observable" or values["normalization"] != "softmap":
    raise ConfigError(f"config.data.packing=True supports supervision='observable' and normalization='softmap' "
                      f"(got {values['supervision']!r}, {values['normalization']!r}); set --config.data.packing=False")


def _check_batch_split(batch_size: int, num_devices: int) -> None:
  if batch_size % num_devices:
    lower = num_devices * max(1, batch_size // num_devices)
    raise ConfigError(f"config.batch_size={batch_size}: must be a multiple of the {num_devices} devices on the data "
                      f"axis (each device gets whole scenes), e.g. {lower} or {lower + num_devices}; or set "
                      "--config.num_devices to use fewer devices.")


def data_parallel_devices(config: ml_collections.ConfigDict, available: int) -> int:
  """Devices on the 'data' mesh axis (`config.num_devices`, 0 = all `available`); checks batch_size splits over them.

  Raises:
    ConfigError: num_devices > available, or batch_size not a multiple of the device count.
  """
  n = int(config.num_devices) or int(available)
  if n > available:
    raise ConfigError(f"config.num_devices={config.num_devices}: only {available} devices are available; expected "
                      f"an integer in [0, {available}] (0 = all).")
  _check_batch_split(int(config.batch_size), n)
  return n
