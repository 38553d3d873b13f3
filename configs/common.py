"""Shared config pieces: argument parsing and the DOS defaults every experiment starts from.

Configs are small Python files with `get_config(arg=None) -> ml_collections.ConfigDict`. The `arg` string takes
typed options, e.g. `--config configs/scannet.py:variant=base,smoke`.
"""

from __future__ import annotations

import ml_collections

from dos_jax import schema
from dos_jax.data import transforms

# Recipes: 'sonata' (the schema's defaults: Sonata's pretraining recipe where the DOS paper is silent) and 'v1'
# (the values dos_jax used before it, so results of the earlier protocol reproduce).
RECIPES = ("sonata", "v1")


def parse_arg(arg, **spec):
  """Parses 'a=1,b,c=x' into a ConfigDict typed by the defaults in `spec` (a bare name sets a bool True)."""
  out = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return out
  for item in arg.split(","):
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in spec:
      raise ValueError(f"unknown config argument {key!r}; accepted: {sorted(spec)}")
    default = spec[key]
    if not value:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value) if default is not None else value
  return out


def base_config() -> ml_collections.ConfigDict:
  """DOS defaults (paper / Sonata values) for every key; experiment configs override a few fields. The schema
  lives in the package (`dos_jax/schema.py`), so the library never imports configs/."""
  return schema.default_config()


def set_packed_sizes(c: ml_collections.ConfigDict, capacity, student_capacity, sequence, student_sequence):
  """Sets the four per-stage budgets of a pack (one int per encoder stage): teacher and student slots
  (data.packed_capacity, data.packed_student_capacity) and attention sequence positions (data.packed_sequence,
  data.packed_student_sequence), in the order `benchmarks/padding.py --calibrate` prints them. The pipeline fills
  each pack with as many scenes of its data.pack_scenes window as fit them."""
  c.data.packed_capacity = tuple(capacity)
  c.data.packed_student_capacity = tuple(student_capacity)
  c.data.packed_sequence = tuple(sequence)
  c.data.packed_student_sequence = tuple(student_sequence)
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks an experiment config in place for CI: synthetic scenes of the same kind (indoor/outdoor), the tiny
  encoder, small capacities and a few steps. The method switches (alpha, mask ratio and cell, grid, supervision,
  normalization) are kept, so the smoke run exercises the experiment's recipe on data every machine has."""
  c.total_steps = 6
  c.batch_size = 2
  c.log_every = 2
  c.checkpoint_every = 3
  c.num_prototypes = 64
  c.data.format = "synthetic"
  c.data.root = ""
  c.data.dataset = "synthetic"
  c.data.num_scenes = 4
  c.data.capacity = 1024
  c.data.student_capacity = 512
  c.data.num_workers = 0
  c.model.variant = "tiny"
  # The paper configs' budgets are for their encoder and data, not the smoke's: one scene per pack at its
  # per-view capacities (the per-view padded batch, as packs).
  c.data.pack_scenes = 1
  set_packed_sizes(c, (), (), (), ())
  c.model.head_hidden = 64
  c.model.head_dim = 32
  c.probe.steps = 20
  c.probe.num_classes = 20
  return c


def apply_recipe(c: ml_collections.ConfigDict, recipe: str) -> ml_collections.ConfigDict:
  """Sets the recipe keys of `c` in place; call it last in get_config (the augmentations depend on data.kind).

  'sonata': the schema's defaults, nothing to change. 'v1': the earlier recipe: no masking warm-up (mask ratio
  and cells at their final values from step 0), a fixed crop of 0.6 of the scene, the v1 augmentation list
  (`transforms.default_augmentations(kind, 'v1')`), colours in [0, 1], a linear lr warm-up from 0 and cosine decay
to 1% (`optim.schedule='warmup_cosine'`), no layer-wise lr decay; the probe reads the projected features with
weight decay 1e-4 and a cosine schedule. (optim.lr and probe.lr are each config's own.)
  """
  if recipe not in RECIPES:
    raise ValueError(f"recipe={recipe!r}: expected one of {RECIPES}")
  if recipe == "v1":
    c.mask_ratio_warmup_frac = 0.0
    c.data.mask_cell_warmup_frac = 0.0
    c.data.crop_ratio = 0.6
    c.data.crop_ratio_max = 0.6
    c.data.augmentations = tuple(transforms.default_augmentations(c.data.kind, "v1"))
    c.data.color_range = "unit"
    c.optim.schedule = "warmup_cosine"
    c.optim.layer_decay = 1.0
    c.probe.features = "projected"
    c.probe.weight_decay = 1e-4
    c.probe.schedule = "cosine"
  return c
