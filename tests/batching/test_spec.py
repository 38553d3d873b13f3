"""Config decoding of the batching: `batch_spec` reads the validated config's values as they are (the gate,
tests/test_schema.py, checks them; nothing is defaulted or re-checked here); `pipeline_spec` decodes the pack
budgets (() = per-view capacities) and checks the one thing the gate cannot compute."""

import numpy as np
import pytest

from dos_jax.batching import packing
from dos_jax.batching import spec
from dos_jax.errors import ConfigError
from dos_jax.data import transforms
from tests import batching as helpers


def test_batch_spec_reads_the_config_values():
  cfg = helpers.cfg(**{"data.cross_radius": 0.35, "data.stage_ratio": 0.25, "data.token_jitter_sigma": 0.0,
                       "data.views": "independent", "supervision": "token_jitter"})
  p = spec.batch_spec(cfg)
  assert (p.cross_radius, p.stage_ratio, p.jitter_sigma, p.jitter_clip) == (0.35, 0.25, 0.0, 0.02)
  assert (p.views, p.supervision, p.capacity, p.student_capacity) == ("independent", "token_jitter", 512, 256)
  assert (p.num_stages, p.patch_size) == (3, 64)                 # the tiny variant
  assert p.student_set_capacity == p.capacity                   # token variants: the full view
  assert p.feat_dim == 9                                         # coord, color, normal


def test_empty_augmentations_are_the_kind_defaults():
  cfg = helpers.cfg()
  assert spec.batch_spec(cfg).augmentations == tuple(transforms.default_augmentations("indoor"))
  cfg.data.augmentations = (("random_flip", {"p": 1.0}),)
  assert spec.batch_spec(cfg).augmentations == (("random_flip", {"p": 1.0}),)


def test_pipeline_spec_reads_the_config_values():
  cfg = helpers.cfg(**{"seed": 7, "batch_size": 4, "data.prefetch": 3, "data.worker_backend": "process"})
  p = spec.pipeline_spec(cfg)
  assert (p.seed, p.batch_size, p.num_workers, p.prefetch, p.worker_backend) == (7, 4, 0, 3, "process")
  assert p.batch == spec.batch_spec(cfg) and p.packs_per_step == 4
  # () budgets: one window (here one scene) at its per-view stage capacities, sequences their worst layout.
  assert p.pack.teacher == (1024, 512, 256) and p.pack.student == (512, 256, 128)
  assert p.pack.teacher_sequence == (1024, 512, 256) and (p.pack.pack_scenes, p.pack.max_views) == (1, 2)
  cfg.data.pack_scenes, cfg.batch_size = 2, 4
  cfg.data.packed_capacity, cfg.data.packed_sequence = (1500, 600, 200), (1536, 640, 256)
  pack = spec.pipeline_spec(cfg).pack
  assert (pack.teacher, pack.teacher_sequence, pack.student) == ((1500, 600, 200), (1536, 640, 256), (1024, 512, 256))
  assert (pack.pack_scenes, pack.num_views, pack.patch_size, pack.max_views) == (2, 2, (64, 64, 64), 4)
  # The teacher's stage 0 must hold one scene at its per-view capacity (2 x 512): the key is named.
  cfg.data.packed_capacity = (1000, 600, 200)
  with pytest.raises(ConfigError, match="data.packed_capacity.*stage 0 holds 1000.*1024"):
    spec.pipeline_spec(cfg)


def test_worst_sequence_bounds_every_layout():
  """`worst_sequence` is at least the layout footprint of any views within the capacity (checked by brute force
  over random view sizes, with the layout the packer uses)."""
  rng = np.random.default_rng(0)
  for patch in (16, 64):
    for cap in (5, 16, 40, 64, 100):
      for views in (1, 2, 3, 7):
        bound = spec.worst_sequence(views, cap, patch)
        for _ in range(40):
          counts = rng.integers(1, cap + 1, views)
          assert packing.layout(counts, min(patch, bound))[1] <= bound, (patch, cap, views, counts)
