"""The experiment config schema and its one validation gate.

Every key an experiment config has is listed once in `KEYS`: its default, its accepted values and what it means
(with its unit). `default_config()` builds the ConfigDict every `configs/*.py` starts from (`configs/common.py`);
`validate(config)` is the gate at the edge (launch/ and `train_and_evaluate` call it, before any data is read or
anything compiles): it raises `dos_jax.errors.ConfigError` naming the key (`config.data.capacity`) and the
accepted range, checks the cross-key constraints, and returns the EFFECTIVE config (the optional keys left None
filled with the value the run uses), which is what DIR/config.json records. Layers below take the validated
config's values and do not check them again.

The gate imports no JAX (a bad config fails in a second): choice lists come from the numpy layers that implement
them and from `dos_jax.choices` for the layers written in JAX.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import ml_collections

from dos_jax import choices
from dos_jax import variants
from dos_jax.batching import spec as batch_spec_lib
from dos_jax.data import catalog
from dos_jax.data import color
from dos_jax.data import sources
from dos_jax.data import synthetic
from dos_jax.data import transforms
from dos_jax.data import views
from dos_jax.errors import ConfigError

DATASETS = ("synthetic",) + tuple(sources.DATASETS)  # data.dataset: a label set (file, class count, names)


@dataclasses.dataclass(frozen=True)
class Rule:
  """A value check, `check(value) -> bool`, and the accepted values in words (for the error message)."""
  check: Callable[[Any], bool]
  accepted: str


def _number(value, integer: bool) -> bool:
  if isinstance(value, bool):  # bool is an int subclass; True is never a valid step count or rate
    return False
  if integer:
    return isinstance(value, int)
  return isinstance(value, (int, float)) and math.isfinite(value)


def number(lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False) -> Rule:
  """A number in an interval; `lo_open`/`hi_open` exclude the bound; None is unbounded."""

  def check(v):
    if not _number(v, integer):
      return False
    return not ((lo is not None and (v < lo or (lo_open and v == lo)))
                or (hi is not None and (v > hi or (hi_open and v == hi))))

  left = "(" if lo_open or lo is None else "["
  right = ")" if hi_open or hi is None else "]"
  interval = f"{left}{'-inf' if lo is None else repr(lo)}, {'inf' if hi is None else repr(hi)}{right}"
  return Rule(check, f"{'an integer' if integer else 'a finite number'} in {interval}")


def one_of(values) -> Rule:
  values = tuple(values)
  return Rule(lambda v: isinstance(v, str) and v in values, f"one of {list(values)}")


def optional(rule: Rule) -> Rule:
  return Rule(lambda v: v is None or rule.check(v), f"None or {rule.accepted}")


BOOL = Rule(lambda v: isinstance(v, bool), "a bool (True or False)")
STRING = Rule(lambda v: isinstance(v, str), "a string")
SEED = number(0, 2**31 - 1, integer=True)
POSITIVE_INT = number(1, integer=True)
NON_NEGATIVE_INT = number(0, integer=True)
FRACTION = number(0.0, 1.0)
POSITIVE = number(0.0, lo_open=True)
METRES = number(0.0, lo_open=True)
FEAT_KEYS = Rule(lambda v: (isinstance(v, (tuple, list)) and len(v) > 0 and len(set(v)) == len(v)
                            and all(isinstance(k, str) and k in batch_spec_lib.FEATURE_DIMS for k in v)),
                 f"a non-empty tuple of distinct names from {list(batch_spec_lib.FEATURE_DIMS)}")
CAPACITIES = Rule(lambda v: isinstance(v, (tuple, list)) and all(_number(c, True) and c >= 1 for c in v),
                  "a tuple of positive integers, one per encoder stage (() = data.pack_scenes scenes at their per-view "
                  "capacities)")
AUGMENTATIONS = Rule(lambda v: isinstance(v, (tuple, list)) and all(isinstance(o, (str, tuple, list)) for o in v),
                     "a tuple of (op name, kwargs) pairs (dos_jax.data.transforms.OPS); () = defaults of data.kind")


@dataclasses.dataclass(frozen=True)
class Optional_:
  """The default of an optional key: None, settable from the command line as `kind` (`default_config` puts a
  fresh `ml_collections` placeholder in each config). `resolved` says what None means; the gate fills it in."""
  kind: type
  resolved: str


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: dotted name, default, accepted values, and what it means (unit included)."""
  name: str
  default: Any
  rule: Rule
  doc: str


# The schema. A key the code reads and not listed here does not exist; a key listed here is read somewhere
# (tests/test_schema.py checks both).
KEYS: Tuple[Key, ...] = (
    Key("seed", 0, SEED, "run seed: parameter init, augmentation, masking, scene order"),
    Key("total_steps", 1000, POSITIVE_INT, "optimizer steps of the run (the schedules span them)"),
    Key("batch_size", 2, POSITIVE_INT,
        "global examples (scenes) a step draws over all devices and hosts: packs per step x data.pack_scenes; the "
        "packs hold as many of them as fit their budgets (all of them when the budgets are ())"),
    Key("log_every", 10, POSITIVE_INT, "steps between metric lines (metrics.jsonl, TensorBoard)"),
    Key("checkpoint_every", 200, NON_NEGATIVE_INT, "steps between checkpoints; 0 = only the last (and SIGTERM)"),
    Key("keep_checkpoints", 3, POSITIVE_INT, "checkpoints kept on disk"),
    Key("num_devices", 0, NON_NEGATIVE_INT, "devices on the 'data' mesh axis; 0 = all (tests use fewer)"),
    # --- method switches (DOS) ---
    Key("zipf_alpha", 1.3, number(0.0), "Zipf exponent of the prototype marginal; 0 = uniform Sinkhorn"),
    Key("num_prototypes", 1024, POSITIVE_INT, "K, learnable prototypes"),
    Key("mask_ratio", 0.7, number(0.0, 1.0, hi_open=True),
        "fraction of mask cells hidden from the student (0.7 segmentation, 0.6 detection pretraining)"),
    Key("mask_ratio_start", 0.3, number(0.0, 1.0, hi_open=True),
        "mask ratio at step 0, rising linearly to mask_ratio over mask_ratio_warmup_frac (Sonata: 0.3)"),
    Key("mask_ratio_warmup_frac", 0.05, FRACTION,
        "mask-ratio warm-up, fraction of total_steps (Sonata: 0.05); 0 = mask_ratio from step 0"),
    Key("supervision", "observable", one_of(batch_spec_lib.SUPERVISION),
        "observable (DOS) | masked_tokens | token_jitter (baselines)"),
    Key("normalization", "softmap", one_of(choices.NORMALIZATIONS), "softmap (DOS) | clustering (baseline)"),
    Key("cross_view", True, BOOL, "add the cross-view term (needs data.num_views == 2)"),
    Key("sinkhorn_iters", 3, POSITIVE_INT, "Zipf-Sinkhorn iterations"),
    Key("teacher_temp_start", 0.04, POSITIVE, "teacher temperature at step 0"),
    Key("teacher_temp_end", 0.07, POSITIVE, "teacher temperature after the warm-up"),
    Key("teacher_temp_warmup_frac", 0.05, FRACTION, "teacher temperature warm-up, fraction of total_steps"),
    Key("student_temp", 0.1, POSITIVE, "student temperature"),
    Key("ema_momentum_start", 0.994, FRACTION, "teacher EMA momentum at step 0 (cosine rise to the end value)"),
    Key("ema_momentum_end", 1.0, FRACTION, "teacher EMA momentum at the last step"),
    Key("nonfinite", "skip", one_of(choices.NONFINITE_POLICIES),
        "on a non-finite loss or gradient: skip the step | stop the run"),
    # --- optimiser ---
    Key("optim.lr", 4e-3, POSITIVE, "peak learning rate of the last encoder block and the non-block parameters "
        "(Sonata's base_lr 0.004)"),
    Key("optim.schedule", "onecycle", one_of(("onecycle", "warmup_cosine")),
        "onecycle (Sonata: torch OneCycleLR, cosine both ways, from lr / div_factor to lr / (div_factor * "
        "final_div_factor)) | warmup_cosine (recipe v1: linear warm-up from 0, cosine to lr * min_lr_ratio)"),
    Key("optim.warmup_frac", 0.05, FRACTION, "learning-rate warm-up, fraction of total_steps (Sonata's pct_start)"),
    Key("optim.div_factor", 10.0, number(1.0), "onecycle: peak / initial learning rate (Sonata: 10)"),
    Key("optim.final_div_factor", 1000.0, number(1.0),
        "onecycle: initial / final learning rate (Sonata: 1000, so the run ends at lr / 1e4)"),
    Key("optim.min_lr_ratio", 0.01, FRACTION, "warmup_cosine: final learning rate / peak"),
    Key("optim.layer_decay", 0.9, number(0.0, 1.0, lo_open=True),
        "layer-wise lr decay: encoder block k of n (over all stages) learns at lr * layer_decay ** (n - 1 - k), "
        "everything else at lr (Sonata: 0.9); 1 = off"),
    Key("optim.weight_decay_start", 0.04, number(0.0), "AdamW weight decay at step 0 (cosine schedule)"),
    Key("optim.weight_decay_end", 0.2, number(0.0), "AdamW weight decay at the last step"),
    Key("optim.clip_norm", 3.0, number(0.0), "global gradient-norm clip; 0 = no clipping"),
    Key("optim.b1", 0.9, number(0.0, 1.0, hi_open=True), "Adam beta1"),
    Key("optim.b2", 0.999, number(0.0, 1.0, hi_open=True), "Adam beta2"),
    # --- data ---
    Key("data.format", "synthetic", one_of(catalog.FORMATS), "synthetic | pointcept (scene folders) | tfds"),
    Key("data.root", "", STRING, "data folder (pointcept: scene folders; tfds: a data_dir); '' for synthetic"),
    Key("data.kind", "indoor", one_of(synthetic.KINDS),
        "indoor | outdoor | longtail: synthetic generator and augmentation defaults"),
    Key("data.dataset", "synthetic", one_of(DATASETS), "label set: its label file, class count and names"),
    Key("data.num_scenes", 64, POSITIVE_INT, "synthetic training scenes"),
    Key("data.seed", Optional_(int, "the run's seed for the probe, 0 in training"), optional(SEED),
        "seed of the synthetic scene set (train (seed, 0, i), val (seed, 1, i))"),
    Key("data.num_val_scenes", Optional_(int, "max(1, data.num_scenes // 4)"), optional(POSITIVE_INT),
        "synthetic validation scenes (the probe's evaluation set)"),
    Key("data.num_points", Optional_(int, "the generator's natural count"), optional(POSITIVE_INT),
        "points per synthetic scene"),
    Key("data.segment_key", Optional_(str, "data.dataset's label file"), optional(STRING),
        "label file of Pointcept scenes without .npy (segment20, segment200, segment)"),
    Key("data.num_classes", Optional_(int, "data.dataset's class count"), optional(POSITIVE_INT),
        "semantic classes of the labels"),
    Key("data.tfds_name", Optional_(str, "the only dataset under data.root"), optional(STRING),
        "tfds: which prepared dataset under data.root (e.g. synthetic_scenes/indoor_64_16_s0)"),
    Key("data.grid_size", 0.08, METRES, "voxel size of grid sampling, metres (0.08 indoor, 0.2 outdoor)"),
    Key("data.mask_cell", 0.4, METRES, "mask block size, metres (0.4 indoor, 1.0 outdoor)"),
    Key("data.mask_cell_start_ratio", 0.25, number(0.0, 1.0, lo_open=True),
        "mask cell at step 0 / data.mask_cell, rising linearly to 1 over data.mask_cell_warmup_frac (Sonata: "
        "0.1 m -> 0.4 m, so 0.25; outdoor 1 m cells start at 0.25 m)"),
    Key("data.mask_cell_warmup_frac", 0.05, FRACTION,
        "mask-cell warm-up, fraction of total_steps (Sonata: 0.05); 0 = data.mask_cell from step 0"),
    Key("data.num_views", 2, POSITIVE_INT, "views per scene"),
    Key("data.crop_ratio", 0.4, number(0.0, 1.0, lo_open=True),
        "smallest fraction of a scene's points a crop keeps (Sonata's global view scale: 0.4 to 1.0)"),
    Key("data.crop_ratio_max", 1.0, number(0.0, 1.0, lo_open=True),
        "largest fraction a crop keeps: each crop draws its fraction uniformly from [crop_ratio, crop_ratio_max] "
        "(equal = a fixed fraction, e.g. 0.6 in recipe v1)"),
    Key("data.color_range", "unit", one_of(color.COLOR_RANGES),
        "colour features: unit [0, 1] (Pointcept's NormalizeColor at the Sonata commit, color / 255) | signed "
        "[-1, 1] (earlier Pointcept); applied in training and evaluation alike"),
    Key("data.views", "duplicate", one_of(views.VIEW_MODES),
        "duplicate (one crop, V copies; paper) | independent (one crop per view)"),
    Key("data.capacity", 8192, POSITIVE_INT, "stage-0 slots per teacher view (padded; whole attention patches)"),
    Key("data.student_capacity", 4096, POSITIVE_INT, "stage-0 slots per student view (visible points, padded)"),
    Key("data.overflow", "downsample", one_of(batch_spec_lib.OVERFLOW),
        "a view larger than its capacity: downsample | error"),
    Key("data.feat_keys", ("coord", "color", "normal"), FEAT_KEYS, "input features, concatenated in this order"),
    Key("data.num_workers", 2, NON_NEGATIVE_INT, "batch-building workers; 0 = in the training thread"),
    Key("data.prefetch", 4, NON_NEGATIVE_INT, "batches built ahead per worker"),
    Key("data.worker_backend", "thread", one_of(batch_spec_lib.WORKER_BACKENDS),
        "thread | process workers (process: the scene source must be picklable)"),
    Key("data.stage_ratio", 0.5, number(0.0, 1.0, lo_open=True), "capacity of pooled stage s+1 / stage s"),
    Key("data.cross_radius", 0.16, METRES,
        "cross-view matching radius, metres: nearest original point of the other view within it (2 grid cells)"),
    Key("data.token_jitter_sigma", 0.01, number(0.0),
        "token_jitter: N(0, sigma^2) per axis, metres (Sonata); 0 = masked tokens at their exact positions"),
    Key("data.token_jitter_clip", 0.02, METRES, "token_jitter: clipped to +-clip per axis, metres"),
    Key("data.pack_scenes", 1, POSITIVE_INT,
        "a pack's window of the example sequence: the most scenes one pack (device batch) holds"),
    Key("data.packed_capacity", (), CAPACITIES,
        "per-stage teacher slot budget of a pack (benchmarks/padding.py --calibrate)"),
    Key("data.packed_student_capacity", (), CAPACITIES, "per-stage student slot budget of a pack"),
    Key("data.packed_sequence", (), CAPACITIES, "per-stage teacher attention sequence budget of a pack"),
    Key("data.packed_student_sequence", (), CAPACITIES, "per-stage student attention sequence budget of a pack"),
    Key("data.augmentations", (), AUGMENTATIONS,
        "[(op name, kwargs), ...] of dos_jax.data.transforms; () = the defaults of data.kind"),
    # --- model ---
    Key("model.variant", "tiny", one_of(variants.VARIANTS), "encoder size (dos_jax.variants)"),
    Key("model.dtype", "float32", one_of(choices.MODEL_DTYPES), "compute dtype (params stay float32)"),
    Key("model.attention", "xla", one_of(choices.ATTENTION_KERNELS),
        "patch attention: xla | cudnn (GPU flash attention, needs model.dtype='bfloat16')"),
    Key("model.remat", False, BOOL, "recompute block activations in the backward pass (less memory)"),
    Key("model.scan_blocks", False, BOOL,
        "run each stage's blocks as one lax.scan (same values; ~2x faster TPU compile and fewer temporaries, "
        "but ~1.3x the compiler-estimated step cycles: README)"),
    Key("model.drop_path", 0.3, number(0.0, 1.0, hi_open=True), "student stochastic depth (teacher: none)"),
    Key("model.mlp_ratio", 4, POSITIVE, "MLP width / channels in each block"),
    Key("model.head_hidden", 256, POSITIVE_INT, "projector hidden width"),
    Key("model.head_dim", 64, POSITIVE_INT, "projector output (prototype) dimension"),
    Key("model.shuffle_orders", False, BOOL,
        "shuffle the serialization orders per stage in training (upstream PTv3)"),
    Key("model.up_cast_level", 0, NON_NEGATIVE_INT, "levels the up-cast concatenates; 0 = all (Sonata's probe: 2)"),
    Key("model.upcast_projection", True, BOOL,
        "Linear + LayerNorm on the up-cast (dos; Sonata-compatible head: False)"),
    # --- evaluation inside training (dos_jax.eval.evaluators) ---
    Key("evals.linear_probe.every", 0, NON_NEGATIVE_INT,
        "run the linear probe (launch.probe's code) on the live encoder every N steps and at the end; 0 = off"),
    Key("evals.linear_probe.steps", 100, POSITIVE_INT, "probe steps of each in-training linear probe"),
    Key("evals.linear_probe.train_scenes", 4, POSITIVE_INT,
        "in-training probe: first N scenes of the 'train' split it trains on"),
    Key("evals.linear_probe.eval_scenes", 4, POSITIVE_INT,
        "in-training probe: first N scenes of the 'val' split it is evaluated on (the small held-out split)"),
    Key("evals.collapse.every", 0, NON_NEGATIVE_INT,
        "collapse diagnostics of the head on held-out scenes every N steps; 0 = off"),
    Key("evals.collapse.eval_scenes", 4, POSITIVE_INT, "collapse diagnostics: first N scenes of the 'val' split"),
    # --- linear probe (launch.probe) ---
    Key("probe.features", "stages", one_of(("stages", "projected")),
        "what the probe reads: stages (Sonata: the raw concatenation of every encoder stage up-cast to full "
        "resolution, no learned projection) | projected (the encoder's output: the dos up-cast projection)"),
    Key("probe.steps", 300, POSITIVE_INT, "probe optimizer steps"),
    Key("probe.lr", 2e-3, POSITIVE, "probe peak learning rate (Sonata's linear probe: 0.002 over ~800 epochs)"),
    Key("probe.weight_decay", 0.02, number(0.0), "probe AdamW weight decay on w (Sonata: 0.02; recipe v1: 1e-4)"),
    Key("probe.schedule", "onecycle", one_of(("onecycle", "cosine")),
        "probe lr over probe.steps: onecycle (Sonata: pct_start 0.05, div 10, final div 1000) | cosine (v1)"),
    Key("probe.standardize", True, BOOL,
        "scale probe features by the training set's mean/std inside the affine classifier (the budget "
        "adaptation: a few hundred steps instead of Sonata's ~800 epochs); False = a plain linear layer"),
    Key("probe.batch_points", 65536, POSITIVE_INT, "points per probe step"),
    Key("probe.class_balanced", False, BOOL, "weight classes by inverse frequency"),
    Key("probe.num_classes", 20, POSITIVE_INT, "probe classes when the data names none"),
    Key("probe.train_fraction", 0.7, number(0.0, 1.0, lo_open=True, hi_open=True),
        "fraction of a folder's scenes (whole rooms) the probe trains on"),
    Key("probe.capacity", Optional_(int, "sized to every voxel of each batch"), optional(POSITIVE_INT),
        "stage-0 slots per probe scene"),
)
SCHEMA: Dict[str, Key] = {k.name: k for k in KEYS}


def default_config() -> ml_collections.ConfigDict:
  """The defaults of every key (paper / Sonata values); experiment configs override a few."""
  c = ml_collections.ConfigDict()
  for key in KEYS:
    *groups, leaf = key.name.split(".")
    node = c
    for g in groups:
      if g not in node:
        node[g] = ml_collections.ConfigDict()
      node = node[g]
    node[leaf] = (ml_collections.config_dict.placeholder(key.default.kind) if isinstance(key.default, Optional_)
                  else key.default)
  return c


def flatten(config, prefix: str = "") -> Iterator[Tuple[str, Any]]:
  """Yields (dotted key, value) for every leaf of a (nested) ConfigDict, in sorted key order."""
  for key in sorted(config.keys()):
    value = config[key]
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from flatten(value, name + ".")
    else:
      yield name, value


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples a config holds (recursively)."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_record(stored: Dict[str, Any]) -> ml_collections.ConfigDict:
  """The validated config of a run from the nested dict it recorded (DIR/config.json's "config": what
  `validate` returned, as JSON); its keys are checked like any config's (ConfigError naming a bad one)."""
  config = default_config()
  flat = {k: _tuples(v) for k, v in flatten(stored)}
  unknown = sorted(set(flat) - set(SCHEMA))
  if unknown:
    raise _unknown_key(unknown[0])
  config.update_from_flattened_dict(flat)
  return validate(config)


def _unknown_key(name: str) -> ConfigError:
  prefix, _, leaf = name.rpartition(".")
  siblings = sorted(k.name.rpartition(".")[2] for k in KEYS if k.name.rpartition(".")[0] == prefix)
  hint = difflib.get_close_matches(leaf, siblings, n=3)
  did_you_mean = (f" Did you mean {', '.join(repr((prefix + '.' if prefix else '') + h) for h in hint)}?"
                  if hint else "")
  return ConfigError(f"config.{name}: unknown key.{did_you_mean} Known keys here: {siblings} (the schema is "
                     "dos_jax/schema.py:KEYS).")


def _check_capacity(name: str, capacity: int, patch_size: int) -> None:
  """Stage 0 must be whole attention patches; later stages are rounded up to patches by the batching
  (`dos_jax.batching.patches.stage_capacities`), so stage 0 is the only constraint on the config."""
  if capacity % min(patch_size, capacity):
    lower = (capacity // patch_size) * patch_size
    options = [c for c in (lower, lower + patch_size) if c > 0]
    raise ConfigError(
        f"config.{name}={capacity}: must be a multiple of the model's attention patch size {patch_size} "
        f"(model.variant), or at most one patch; e.g. {' or '.join(map(str, options))}.")


def check_batch_split(batch_size: int, num_devices: int, pack_scenes: int = 1) -> None:
  """The batch_size / pack_scenes packs of a step must split into whole packs over the `num_devices` devices."""
  packs = batch_size // pack_scenes
  if batch_size % pack_scenes or packs % num_devices:
    lower = num_devices * max(1, packs // num_devices) * pack_scenes
    raise ConfigError(f"config.batch_size={batch_size}: must be a multiple of the {num_devices} devices on the data "
                      f"axis times data.pack_scenes={pack_scenes} (each device gets whole packs of that many "
                      f"scenes at most), e.g. {lower} or {lower + num_devices * pack_scenes}; or set "
                      "--config.num_devices to use fewer devices.")


def _check_values(config) -> Dict[str, Any]:
  """Every key known, present and accepted by its rule; returns {dotted key: value}."""
  values = dict(flatten(config))
  for name in values:
    if name not in SCHEMA:
      raise _unknown_key(name)
  for key in KEYS:
    *groups, _ = key.name.split(".")
    node = config
    for g in groups:  # a group replaced by a single value
      node = node[g] if g in node else None
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config.{key.name}: missing (config.{g} is not a group of keys); expected "
                          f"{key.rule.accepted}")
    if key.name not in values:
      raise ConfigError(f"config.{key.name}: missing; expected {key.rule.accepted} (default in dos_jax/schema.py)")
    if not key.rule.check(values[key.name]):
      raise ConfigError(f"config.{key.name}={values[key.name]!r}: expected {key.rule.accepted} ({key.doc}).")
  return values


def _check_cross_keys(v: Dict[str, Any]) -> None:
  """The constraints between keys."""
  patch = int(variants.VARIANTS[v["model.variant"]]["patch_size"])
  _check_capacity("data.capacity", v["data.capacity"], patch)
  _check_capacity("data.student_capacity", v["data.student_capacity"], patch)
  if v["data.format"] in ("pointcept", "tfds") and not v["data.root"]:
    raise ConfigError(f"config.data.root is empty but data.format={v['data.format']!r} reads from disk: set "
                      "--config.data.root=PATH (a folder of scene folders), or use --config.data.format=synthetic.")
  if v["data.format"] == "synthetic" and v["data.root"]:
    raise ConfigError(f"config.data.root={v['data.root']!r} is set but data.format='synthetic' generates its scenes "
                      "and reads no files: add --config.data.format=pointcept (a folder of scene folders; also set "
                      "--config.data.dataset) or tfds, or drop data.root.")
  if v["cross_view"] and v["data.num_views"] != 2:
    raise ConfigError(f"config.data.num_views={v['data.num_views']}: cross_view=True pairs view v with view "
                      "1-v, so num_views must be 2 (or set --config.cross_view=False).")
  if v["data.student_capacity"] > v["data.capacity"]:
    raise ConfigError(f"config.data.student_capacity={v['data.student_capacity']}: must be <= "
                      f"data.capacity={v['data.capacity']} (the student sees a subset of the teacher's view).")
  if v["data.crop_ratio"] > v["data.crop_ratio_max"]:
    raise ConfigError(f"config.data.crop_ratio={v['data.crop_ratio']}: must be <= data.crop_ratio_max="
                      f"{v['data.crop_ratio_max']} (each crop draws its fraction from [crop_ratio, crop_ratio_max]).")
  if v["ema_momentum_start"] > v["ema_momentum_end"]:
    raise ConfigError(f"config.ema_momentum_start={v['ema_momentum_start']}: must be <= ema_momentum_end="
                      f"{v['ema_momentum_end']} (the teacher momentum rises over training).")
  if v["model.attention"] == "cudnn" and v["model.dtype"] != "bfloat16":
    raise ConfigError("config.model.attention='cudnn' needs config.model.dtype='bfloat16' (cuDNN flash attention "
                      "has no float32 kernel).")
  if v["model.attention"] == "cudnn":
    raise ConfigError("config.model.attention='cudnn': training batches are packs, whose attention is masked by view "
                      "(segment ids), which only model.attention='xla' does (on TPU it lowers to a flash kernel); "
                      "set --config.model.attention=xla.")
  _check_packing(v)
  try:  # op names and parameters now, not in the first batch
    transforms.build(v["data.augmentations"] or transforms.default_augmentations(v["data.kind"]))
  except ValueError as e:
    raise ConfigError(f"config.data.augmentations: {e}") from e


def _check_packing(v: Dict[str, Any]) -> None:
  """The pack budgets, when given: one entry per encoder stage (() = data.pack_scenes scenes at their per-view
  capacities); the steps's scene window splits into packs. (That a stage-0 budget holds one scene at its per-view
  capacities is checked where the stage capacities are computed: `dos_jax.batching.spec.pipeline_spec`.)"""
  stages = len(variants.VARIANTS[v["model.variant"]]["channels"])
  fix = "calibrate with `python benchmarks/padding.py --config CONFIG --calibrate`, or () for per-view capacities"
  for key in ("packed_capacity", "packed_student_capacity", "packed_sequence", "packed_student_sequence"):
    value = tuple(v[f"data.{key}"])
    if value and len(value) != stages:
      raise ConfigError(f"config.data.{key}={value}: needs one entry per encoder stage ({stages} for "
                        f"model.variant={v['model.variant']!r}) or (); {fix}")
  check_batch_split(v["batch_size"], 1, v["data.pack_scenes"])


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> ml_collections.ConfigDict:
  """The gate: checks every key of `config` and the cross-key constraints; returns the effective config.

  Args:
    config: a full experiment config (`configs/*.py:get_config`, with command-line overrides). Not modified.
    num_devices: devices on the data axis of the mesh; when given, `batch_size` must be a multiple of it.

  Returns:
    A copy of `config` with the optional keys the config leaves None filled in where the value does not depend
    on the caller: `data.num_val_scenes` (max(1, num_scenes // 4)), `data.segment_key` / `data.num_classes`
    (those of a Pointcept `data.dataset`; a synthetic source has its own classes). `data.seed`, `data.num_points`, `data.tfds_name` and
    `probe.capacity` stay None (their rule depends on the caller or on the data). Validating it again returns
    it unchanged.

  Raises:
    ConfigError naming the key and the accepted values.
  """
  values = _check_values(config)
  _check_cross_keys(values)
  if num_devices is not None:
    check_batch_split(values["batch_size"], num_devices, values["data.pack_scenes"])
  effective = ml_collections.ConfigDict(config.to_dict())  # placeholders become plain values (None or typed)
  d = effective.data
  if d.num_val_scenes is None:
    d.num_val_scenes = max(1, int(d.num_scenes) // 4)  # as dos_jax.data.sources.synthetic_source resolves it
  if d.dataset in sources.DATASETS:  # as dos_jax.data.sources.pointcept_source resolves them
    label_file, classes = sources.DATASETS[d.dataset]
    d.segment_key = label_file if d.segment_key is None else d.segment_key
    d.num_classes = int(classes) if d.num_classes is None else d.num_classes
  return effective


def data_parallel_devices(config: ml_collections.ConfigDict, available: int) -> int:
  """Devices on the 'data' mesh axis (`config.num_devices`, 0 = all `available`); checks batch_size splits.

  Raises:
    ConfigError: num_devices > available, or the packs of a step (batch_size / data.pack_scenes) not a multiple
      of the device count.
  """
  n = int(config.num_devices) or int(available)
  if n > available:
    raise ConfigError(f"config.num_devices={config.num_devices}: only {available} devices are available; expected "
                      f"an integer in [0, {available}] (0 = all).")
  check_batch_split(int(config.batch_size), n, int(config.data.pack_scenes))
  return n
