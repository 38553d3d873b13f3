"""One batch type: the same views in other packs give the same loss and gradients (float32 rounding).

The views come from the real view pipeline (synthetic indoor scenes, tiny encoder, drop path 0). Layout A puts
each scene in its own pack at its per-view capacities (what a per-view padded batch was, now a pack of one scene);
layout B fills packs of two-scene windows by budget, so its second pack holds one scene and two empty view
segments, and is sharded over 2 devices. The loss is the mean over the real views in both (B has fewer packs but
the same 6 views), so loss and gradients must agree. Tolerances: the loss is a mean of 6 per-view KLs (values
~1-5) reduced in another order: rtol 1e-5 (~100 float32 eps); gradients are sums of <= 2k rows per leaf with
cancellation, bounded by 1e-4 x the leaf's largest entry.
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


def _config():
  cfg = synthetic_tiny.get_config("smoke")
  cfg.data.capacity, cfg.data.student_capacity, cfg.num_prototypes = 512, 256, 16
  cfg.model.head_hidden, cfg.model.head_dim = 16, 8
  return cfg


def test_same_views_in_other_packs_give_the_same_loss_and_grads():
  cfg = _config()
  params = spec_lib.batch_spec(cfg)
  source = catalog.scene_source(cfg.data, "train")
  examples = [packing.SceneExample(views=train_views.train_views(source[i], params, np.random.default_rng(10 + i)),
                                   stats={}, index=i) for i in range(3)]

  def pack_spec(scenes):
    return spec_lib.PackSpec(pack_scenes=scenes, patch_size=params.patch_size, num_views=2,
                             **spec_lib.default_budgets(params, scenes))

  one = patches.stack_tree([packing.build_pack([e], pack_spec(1)) for e in examples])
  two = patches.stack_tree([packing.build_pack(examples[:2], pack_spec(2)), packing.build_pack(examples[2:], pack_spec(2))])
  assert one.view_valid.shape == (3, 2) and one.view_valid.all()
  assert two.view_valid.tolist() == [[True] * 4, [True, True, False, False]]
  spec = specs.step_spec(cfg)
  net = network.init_params(jax.random.key(0), one, spec.model)
  teacher = jax.tree.map(lambda x: x * 1.01, net)

  def loss(p, batch):
    return step_lib.compute_loss(p, teacher, batch, jax.random.key(1), np.int32(3), spec)

  (l_1, m_1), g_1 = jax.jit(jax.value_and_grad(loss, has_aux=True))(net, one)
  mesh = sharding.make_mesh(min(2, jax.device_count()))
  rep = sharding.replicated(mesh)
  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), in_shardings=(rep, sharding.batch_sharding(mesh)))
  (l_2, m_2), g_2 = grad_fn(jax.device_put(net, rep), sharding.shard_batch(two, mesh))
  assert float(m_1["views"]) == float(m_2["views"]) == 6.0
  np.testing.assert_allclose(l_2, l_1, rtol=1e-5)
  np.testing.assert_allclose(m_2["loss_cross"], m_1["loss_cross"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()) + 1e-8),
               g_2, g_1)
  # A wrong normalization (the mean over all M view segments, empty ones counted) would differ by O(1).
  assert abs(float(l_2) * 6 / 8 - float(l_1)) > 1e-2
