"""Tests of dos_jax.train. Helpers here build tiny hand-made TrainBatches (independent of the host pipeline): one
pack per scene, its two views at their per-view capacities (`spec.default_budgets` of one scene).

A test scene is a set of unique voxels in a small box (so every stage fits its capacity), two views of it that
share the points (view 1 in a shuffled slot order, so teacher slots differ between views) and one block mask per
view (cells of 4 voxels). The student set holds the visible points ('observable') or the full view with mask
tokens (token variants).
"""

import dataclasses
import functools

import jax
import numpy as np

from configs import synthetic_tiny
from dos_jax import specs
from dos_jax import variants
from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs
from dos_jax.train import sharding

GRID = 0.1          # metres per voxel
TEACHER_CAP = 128
STUDENT_CAP = 64


def tiny_config(**overrides):
  """synthetic_tiny:smoke shrunk further: 16 prototypes, small head, capacities 128 / 64."""
  c = synthetic_tiny.get_config("smoke")
  c.num_prototypes = 16
  c.model.head_hidden = 32
  c.model.head_dim = 16
  c.data.capacity = TEACHER_CAP
  c.data.student_capacity = STUDENT_CAP
  c.data.grid_size = GRID
  c.data.cross_radius = 2 * GRID
  c.total_steps = 100
  c.optim.warmup_frac = 0.0
  c.update_from_flattened_dict(overrides)
  return c


@dataclasses.dataclass
class Scene:
  grid: np.ndarray    # i64[n, 3] unique voxels
  color: np.ndarray   # f32[n, 3]
  masks: tuple        # V bool[n] arrays, True = masked


def make_scene(rng: np.random.Generator, n: int = 90) -> Scene:
  """n unique voxels in a 10 x 10 x 2 box, two block masks (about half the 4-voxel cells each)."""
  box = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
  grid = box[rng.choice(len(box), n, replace=False)]
  cells = grid[:, :2] // 4
  cell_id = cells[:, 0] * 3 + cells[:, 1]
  masks = []
  for _ in range(2):
    while True:
      masked_cells = rng.random(9) < 0.5
      mask = masked_cells[cell_id]
      if 0 < (~mask).sum() <= STUDENT_CAP and mask.sum() > 0:
        break
    masks.append(mask)
  return Scene(grid=grid, color=rng.random((n, 3)).astype(np.float32), masks=tuple(masks))


def _feat(coord, color):
  return np.concatenate([coord, color], axis=1).astype(np.float32)


def build_batch(scenes, config, supervision: str = "observable") -> structs.TrainBatch:
  """TrainBatch of B = len(scenes) packs, pack b holding the two views of scene b."""
  spec = variants.decode_variant(config.model.variant)
  num_stages, patch = len(spec["channels"]), spec["patch_size"]
  student_cap = STUDENT_CAP if supervision == "observable" else TEACHER_CAP
  items = []
  for b, scene in enumerate(scenes):
    n = len(scene.grid)
    coord = (scene.grid * GRID + GRID / 2).astype(np.float32)
    # View v lists the points in its own slot order: slot_of[v][i] = slot of original point i.
    perms = [np.arange(n), np.random.default_rng(b).permutation(n)]
    slot_of = [np.argsort(p) for p in perms]
    teachers, students, fields = [], [], []
    for v in range(2):
      p = perms[v]
      teachers.append(patches.build_point_set(coord[p], _feat(coord[p], scene.color[p]), p, GRID, TEACHER_CAP,
                                              num_stages, patch))
      if supervision == "observable":
        ids = p[~scene.masks[v][p]]
        tvalid = np.ones(len(ids), bool)
        token = np.zeros(student_cap, bool)
      else:
        ids = p
        tvalid = scene.masks[v][p]
        token = np.zeros(student_cap, bool)
        token[:n] = scene.masks[v][p]
      students.append(patches.build_point_set(coord[ids], _feat(coord[ids], scene.color[ids]), ids, GRID,
                                              student_cap, num_stages, patch))
      m = len(ids)
      target_index = np.full(student_cap, TEACHER_CAP, np.int32)
      target_index[:m] = slot_of[v][ids]
      target_valid = np.zeros(student_cap, bool)
      target_valid[:m] = tvalid
      cross_index = np.full(student_cap, TEACHER_CAP, np.int32)
      cross_index[:m] = slot_of[1 - v][ids]
      cross_valid = np.zeros(student_cap, bool)
      cross_valid[:m] = True
      fields.append((token, target_index, target_valid, cross_index, cross_valid))
    views = [structs.TrainView(teacher=teachers[v], student=students[v], mask_token=token, target_index=ti,
                               target_valid=tv, cross_index=ci, cross_valid=cv)
             for v, (token, ti, tv, ci, cv) in enumerate(fields)]
    items.append(packing.pack_train_views(views, _pack_spec(config, supervision), [2 * b, 2 * b + 1]))
  return patches.stack_tree(items)


def _pack_spec(config, supervision):
  cfg = config.copy_and_resolve_references()
  cfg.supervision = supervision
  batch = spec_lib.batch_spec(cfg)
  return spec_lib.PackSpec(pack_scenes=1, patch_size=batch.patch_size, num_views=2,
                           **spec_lib.default_budgets(batch, 1))


def make_batch(config, batch_size: int, seed: int = 0, supervision: str = "observable") -> structs.TrainBatch:
  rng = np.random.default_rng(seed)
  return build_batch([make_scene(rng) for _ in range(batch_size)], config, supervision)


# ---- Shared compiled steps (one compile per process, reused by test_step and test_sharding) ----

REF_BATCH = 8       # scenes per step in the 1-vs-8-device comparison and the step tests
REF_STEPS = 3


@functools.lru_cache(maxsize=None)
def reference_setup():
  """(config, host batch [8 packs], host initial state, 1-device mesh, jitted 1-device step) built once."""
  config = tiny_config(batch_size=REF_BATCH)
  batch = make_batch(config, REF_BATCH, seed=0)
  mesh = sharding.make_mesh(1)
  spec = specs.step_spec(config)
  state = sharding.create_sharded_state(spec, jax.random.PRNGKey(0), batch, mesh)
  host_state = jax.device_get(state)
  step_fn = sharding.jit_train_step(spec, mesh, sharding.state_sharding(mesh, state))
  return config, batch, host_state, mesh, step_fn


@functools.lru_cache(maxsize=None)
def reference_run():
  """REF_STEPS steps of the 1-device step on the reference batch: (losses f64[REF_STEPS], host final state).

  The per-step metrics of that run are left in `reference_run.metrics`.
  """
  _, batch, host_state, mesh, step_fn = reference_setup()
  losses, state = run_steps(step_fn, host_state, batch, mesh, REF_STEPS)
  reference_run.metrics = run_steps.metrics
  return losses, jax.device_get(state)


def run_steps(step_fn, host_state, batch, mesh, num_steps, shard=None):
  """Runs `num_steps` steps of `step_fn` from a fresh device copy of `host_state` on a fixed batch.

  Returns (losses f64[num_steps], final device state); the host metrics of every step are left in
  `run_steps.metrics` (a list) and the last step's in `run_steps.last_metrics`.
  """
  state = jax.device_put(host_state, sharding.state_sharding(mesh, host_state))
  global_batch = (shard or sharding.shard_batch)(batch, mesh)
  losses, history = [], []
  for _ in range(num_steps):
    state, metrics = step_fn(state, global_batch, jax.random.fold_in(state.rng, state.step))
    history.append(jax.device_get(metrics))
    losses.append(float(history[-1]["loss"]))
  run_steps.metrics = history
  run_steps.last_metrics = history[-1]
  return np.asarray(losses), state
