"""Shared fixtures of the batching tests: small synthetic rooms and a small config."""

import dataclasses

import numpy as np

from configs import synthetic_tiny
from dos_jax.data.scene import Scene


def room(seed, n=6000):
  """Floor and two walls of a 2 x 1.6 x 1.5 m room, with colours, normals and labels."""
  rng = np.random.default_rng(seed)
  size = np.array([2.0, 1.6, 1.5])
  coord = rng.uniform(0, 1, (n, 3)) * size
  face = rng.choice(3, n, p=[0.4, 0.3, 0.3])  # 0: floor z=0, 1: wall x=0, 2: wall y=0
  axis = np.array([2, 0, 1])[face]
  coord[np.arange(n), axis] = 0.0
  normal = np.zeros((n, 3), np.float32)
  normal[np.arange(n), axis] = 1.0
  return Scene(coord=coord.astype(np.float32), color=rng.random((n, 3)).astype(np.float32), normal=normal,
               segment=face.astype(np.int32), name=f"room{seed}")


def cfg(**kw):
  """synthetic_tiny with small capacities, no workers and one scene per pack at its per-view capacities (the
  budgets ()); `kw`: dotted key -> value overrides."""
  c = synthetic_tiny.get_config()
  c.data.capacity = 512
  c.data.student_capacity = 256
  c.data.num_workers = 0
  c.data.pack_scenes = 1
  for key in ("packed_capacity", "packed_student_capacity", "packed_sequence", "packed_student_sequence"):
    c.data[key] = ()
  c.update_from_flattened_dict(kw)
  return c


SCENES = [room(i) for i in range(3)]


def leaves(tree, prefix=""):
  """(dotted name, array) of every array of a batch pytree (None fields, e.g. unpacked segment ids, skipped)."""
  if tree is None:
    return
  if isinstance(tree, np.ndarray):
    yield prefix, tree
  elif isinstance(tree, tuple):
    for i, t in enumerate(tree):
      yield from leaves(t, f"{prefix}[{i}]")
  else:
    for f in dataclasses.fields(tree):
      yield from leaves(getattr(tree, f.name), f"{prefix}.{f.name}")


def view_batch(scenes, spec, rng):
  """The views of `scenes` (one Generator, in order) stacked [B, V] for inspection (`train_views.stack_views`)."""
  from dos_jax.batching import train_views  # pylint: disable=g-import-not-at-top
  return train_views.stack_views([train_views.train_views(s, spec, rng) for s in scenes])


def view(batch, b, v):
  """The (b, v) element of [B, V] stacked TrainViews as plain arrays."""
  def pick(t):
    if t is None:
      return None
    if isinstance(t, np.ndarray):
      return t[b, v]
    if isinstance(t, tuple):
      return tuple(pick(x) for x in t)
    return type(t)(**{f.name: pick(getattr(t, f.name)) for f in dataclasses.fields(t)})
  return pick(batch)
