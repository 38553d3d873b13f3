"""Shared config pieces: argument parsing and the DOS defaults every experiment starts from.

Configs are small Python files with `get_config(arg=None) -> ml_collections.ConfigDict`. The `arg` string takes
typed options, e.g. `--config configs/scannet.py:variant=base,smoke`.
"""

from __future__ import annotations

import ml_collections

from dos_jax import schema


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
  """Sets the four per-stage tuples of packed batches (one int per encoder stage): teacher and student slots
  (data.packed_capacity, data.packed_student_capacity) and attention sequence lengths (data.packed_sequence,
  data.packed_student_sequence), in the order `benchmarks/padding.py --calibrate` prints them. Does not switch
  data.packing on: a config that calibrates sizes for an optional packed run keeps them off by default."""
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
  c.data.packing = False       # the paper configs' packed sizes are for their encoder and data, not the smoke's
  c.model.head_hidden = 64
  c.model.head_dim = 32
  c.probe.steps = 20
  c.probe.num_classes = 20
  return c
