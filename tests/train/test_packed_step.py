"""Packed training batches give the unpacked step's loss and gradients (same scenes, views and weights).

The per-view pieces come from the real view pipeline (synthetic indoor scenes, tiny encoder, drop path 0); the
unpacked batch stacks them at the per-view capacities (1 device); the packed one puts each scene's 2 views in one
set per stage, 2 packs sharded over 2 devices (packing is per device), so this also checks multi-device equality.
The loss is a mean of per-view KLs (values ~1-5) computed by different reduction orders: rtol 1e-5 (~100 float32
eps). Gradients: sums over <= 2k rows per leaf with cancellation, bounded by 1e-4 x the leaf's largest entry.
"""

import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax import specs
from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.batching import spec as spec_lib
from dos_jax.batching import train_views
from dos_jax.data import catalog
from dos_jax.models import network
from dos_jax.train import sharding
from dos_jax.train import step as step_lib

pytestmark = pytest.mark.system


def _pieces(cfg):
  params = spec_lib.batch_spec(cfg)
  source = catalog.scene_source(cfg.data, "train")
  stats = {}
  pieces = [train_views.train_views(source[i], params, np.random.default_rng(10 + i), stats) for i in range(2)]
  return params, pieces, stats


def test_packed_loss_and_grads_equal_unpacked():
  cfg = synthetic_tiny.get_config("smoke")
  cfg.data.capacity, cfg.data.student_capacity, cfg.num_prototypes = 512, 256, 16
  cfg.model.head_hidden, cfg.model.head_dim = 16, 8
  params, pieces, stats = _pieces(cfg)
  assert stats["teacher_views"] == 4 and stats["student_views"] == 4
  unpacked = train_views.stack_batch(pieces)
  # Two packs of one scene each, sharded over 2 devices below. Slots: exactly the larger pack's real points;
  # attention sequences: the larger layout footprint (longer: the sequence has gaps the slots do not).
  flat = [[p for p in vs] for vs in pieces]

  def sizes(branch):
    counts = [np.array([packing.stage_counts(getattr(p, branch)) for p in vs]) for vs in flat]
    slots = np.max([c.sum(0) for c in counts], axis=0)
    seq = np.max([packing.footprints(c, params.patch_size) for c in counts], axis=0)
    return [int(c) for c in slots], [int(c) for c in seq]

  (t_slots, t_seq), (s_slots, s_seq) = sizes("teacher"), sizes("student")
  assert t_seq[1] > t_slots[1] and s_seq[0] > s_slots[0]  # the sequences have gaps
  spec = spec_lib.PackSpec(teacher=tuple(t_slots), student=tuple(s_slots), teacher_sequence=tuple(t_seq),
                           student_sequence=tuple(s_seq), pack_scenes=1, patch_size=params.patch_size, num_views=2)
  packed = patches.stack_tree([packing.pack_train_views(vs, spec) for vs in flat])
  assert packed.teacher.coord.shape[0] == 2 and packed.view_count.shape == (2, 2)
  spec = specs.step_spec(cfg)
  net = network.init_params(jax.random.key(0), unpacked, spec.model)
  teacher = jax.tree.map(lambda x: x * 1.01, net)

  def loss(p, batch):
    return step_lib.compute_loss(p, teacher, batch, jax.random.key(1), np.int32(3), spec)

  (l_u, m_u), g_u = jax.value_and_grad(loss, has_aux=True)(net, unpacked)
  # Packing is per device: the packed batch's leading (pack) axis is sharded like the scene axis.
  mesh = sharding.make_mesh(min(2, jax.device_count()))
  rep = sharding.replicated(mesh)
  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), in_shardings=(rep, sharding.batch_sharding(mesh)))
  (l_p, m_p), g_p = grad_fn(jax.device_put(net, rep), sharding.shard_batch(packed, mesh))
  np.testing.assert_allclose(l_p, l_u, rtol=1e-5)
  np.testing.assert_allclose(m_p["loss_cross"], m_u["loss_cross"], rtol=1e-5)
  np.testing.assert_allclose(m_p["effective_prototypes"], m_u["effective_prototypes"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()) + 1e-8),
               g_p, g_u)
