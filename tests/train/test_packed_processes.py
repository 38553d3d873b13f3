"""Packed batches with drop path: the loss does not depend on how many processes built the step's packs.

Each process balances its own scenes into packs, so 1 process and 2 processes put different scenes together
(checked: the pack compositions differ). The loss is a mean over views, and each view's drop-path masks are keyed
by its global index and the point's rank in the view (`PointSet.view_id`), so the two layouts must give the same
loss up to summation order: a mean of 8 per-view KLs (values ~1-5), each over <= 256 points x 16 prototypes,
reduced in another grouping: rtol 1e-5 (~100 float32 eps). Slot-keyed masks (the first packing design: one draw
over the pack's slots) give 4.4872 vs 4.4811 here, a relative difference of 1.4e-3.
"""

import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from dos_jax import specs
from dos_jax.batching import patches
from dos_jax.batching import pipeline
from dos_jax.batching import spec as spec_lib
from dos_jax.data import catalog
from dos_jax.models import network
from dos_jax.train import step as step_lib

pytestmark = pytest.mark.system


def test_packed_loss_with_drop_path_is_independent_of_the_process_count():
  cfg = synthetic_tiny.get_config("smoke")
  cfg.batch_size, cfg.data.capacity, cfg.data.student_capacity = 4, 512, 256
  cfg.num_prototypes, cfg.model.head_hidden, cfg.model.head_dim = 16, 16, 8
  cfg.model.drop_path = 0.5
  cfg.data.packing, cfg.data.pack_scenes = True, 2
  cfg.data.packed_capacity, cfg.data.packed_student_capacity = (2048, 1024, 512), (1024, 512, 256)
  source = catalog.scene_source(cfg.data, "train")
  data = spec_lib.pipeline_spec(cfg)
  step = 0  # 1 process pairs scenes {0, 3} and {1, 2}; 2 processes pair {0, 1} and {2, 3}
  one = pipeline.process_batches(data, source, 0, 1)[step]
  two = patches.stack_tree([pipeline.process_batches(data, source, p, 2)[step] for p in range(2)])
  two = jax.tree.map(lambda x: np.concatenate(list(x)), two)  # [2 processes, 1 pack] -> [2 packs]
  packs = lambda b: sorted(tuple(sorted(ids.tolist())) for ids in b.student.view_id)
  assert packs(one) != packs(two) and sorted(sum(packs(one), ())) == sorted(sum(packs(two), ()))
  spec = specs.step_spec(cfg)
  net = network.init_params(jax.random.key(0), one, spec.model)
  teacher = jax.tree.map(lambda x: x * 1.01, net)
  loss = jax.jit(lambda b: step_lib.compute_loss(net, teacher, b, jax.random.key(1), np.int32(3), spec)[0])
  l_one, l_two = float(loss(one)), float(loss(two))
  np.testing.assert_allclose(l_two, l_one, rtol=1e-5)
