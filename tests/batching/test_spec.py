"""Config decoding of the batching: `batch_spec` reads the validated config's values as they are (the gate,
tests/test_schema.py, checks them; nothing is defaulted or re-checked here)."""

from dos_jax.batching import spec
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
  assert p.batch == spec.batch_spec(cfg) and p.pack is None      # packing off
  cfg.data.packing, cfg.data.pack_scenes, cfg.data.packed_sequence = True, 2, ()
  pack = spec.pipeline_spec(cfg).pack
  assert (pack.teacher, pack.student_sequence) == (tuple(cfg.data.packed_capacity),
                                                   tuple(cfg.data.packed_student_sequence))
  assert pack.teacher_sequence == pack.teacher                   # () = the slot capacities
  assert (pack.pack_scenes, pack.num_views, pack.patch_size) == (2, 2, (64, 64, 64))
