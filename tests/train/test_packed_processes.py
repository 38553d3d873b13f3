"""Packs with drop path: the loss does not depend on how the step's scenes are grouped into packs or processes.

The same global examples are grouped one scene per pack (windows of 1) and two scenes per pack (windows of 2, the
budgets holding both), and the two-scene layout is built by 1 and by 2 processes (bit-identical: packs are a
function of the global pack index). The loss is a mean over views, and each view's drop-path masks are keyed by
its global index and the point's rank in the view (`PointSet.view_id`), so the groupings must give the same loss
up to summation order: a mean of 8 per-view KLs (values ~1-5), each over <= 256 points x 16 prototypes, reduced in
another grouping: rtol 1e-5 (~100 float32 eps). Slot-keyed masks (one draw over a pack's slots) give a relative
difference of ~1e-3 here.
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


def test_packed_loss_with_drop_path_is_independent_of_the_grouping():
  cfg = synthetic_tiny.get_config("smoke")
  cfg.batch_size, cfg.data.capacity, cfg.data.student_capacity = 4, 512, 256
  cfg.num_prototypes, cfg.model.head_hidden, cfg.model.head_dim = 16, 16, 8
  cfg.model.drop_path = 0.5
  source = catalog.scene_source(cfg.data, "train")
  step = 1
  singles = pipeline.process_batches(spec_lib.pipeline_spec(cfg), source)[step]
  cfg.data.pack_scenes = 2
  data = spec_lib.pipeline_spec(cfg)
  pairs = pipeline.process_batches(data, source, 0, 1)[step]
  halves = patches.stack_tree([pipeline.process_batches(data, source, p, 2)[step] for p in range(2)])
  halves = jax.tree.map(lambda x: np.concatenate(list(x)), halves)  # [2 processes, 1 pack] -> [2 packs]
  jax.tree.map(np.testing.assert_array_equal, halves, pairs)
  ids = lambda b: sorted(b.student.view_id[b.view_valid].tolist())
  assert singles.view_valid.shape == (4, 2) and pairs.view_valid.shape == (2, 4) and pairs.view_valid.all()
  assert ids(singles) == ids(pairs) == list(range(8, 16))
  spec = specs.step_spec(cfg)
  net = network.init_params(jax.random.key(0), singles, spec.model)
  teacher = jax.tree.map(lambda x: x * 1.01, net)
  # Jitted: op by op, the two losses took ~9 s more on CPU (the values are the same functions).
  loss_fn = jax.jit(lambda b: step_lib.compute_loss(net, teacher, b, jax.random.key(1), np.int32(3), spec)[0])
  loss = lambda b: float(loss_fn(b))
  np.testing.assert_allclose(loss(pairs), loss(singles), rtol=1e-5)
