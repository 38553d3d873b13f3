"""The experiment config schema: every key and its default (`default_config()`; `configs/common.py:base_config`
returns it). The value rules are in `dos_jax.config_validation`, which checks a config against this schema.

It lives in the package, not in configs/, so that the library never imports configs/ or launch/.
"""

from __future__ import annotations

import ml_collections


def _optional(kind):
  """None by default, settable from the command line as `kind` (a fresh placeholder per config)."""
  return ml_collections.config_dict.placeholder(kind)


def default_config() -> ml_collections.ConfigDict:
  """DOS defaults (paper / Sonata values) of every config key; experiment configs override a few fields."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 2            # scenes per step (each gives `data.num_views` views)
  c.log_every = 10
  c.checkpoint_every = 200
  c.keep_checkpoints = 3
  c.num_devices = 0           # devices on the 'data' mesh axis; 0 = all (tests/debugging use fewer)

  # --- method switches (DOS) ---
  c.zipf_alpha = 1.3
  c.num_prototypes = 1024
  c.mask_ratio = 0.7          # 0.7 segmentation pretraining, 0.6 detection
  c.supervision = "observable"        # observable | masked_tokens | token_jitter
  c.normalization = "softmap"         # softmap | clustering
  c.cross_view = True
  c.sinkhorn_iters = 3
  c.teacher_temp_start = 0.04
  c.teacher_temp_end = 0.07
  c.teacher_temp_warmup_frac = 0.05   # fraction of total_steps
  c.student_temp = 0.1
  c.ema_momentum_start = 0.994
  c.ema_momentum_end = 1.0
  c.nonfinite = "skip"                # skip | stop: what the step does on a non-finite loss or gradient

  # --- optimiser ---
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-3
  c.optim.warmup_frac = 0.05
  c.optim.min_lr_ratio = 0.01
  c.optim.weight_decay_start = 0.04
  c.optim.weight_decay_end = 0.2
  c.optim.clip_norm = 3.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999

  # --- data ---
  c.data = ml_collections.ConfigDict()
  c.data.format = "synthetic"         # synthetic | pointcept | tfds
  c.data.root = ""
  c.data.kind = "indoor"              # indoor | outdoor (synthetic generator and augmentation defaults)
  c.data.dataset = "synthetic"        # synthetic | scannet | scannet200 | s3dis | nuscenes | semantickitti
  c.data.num_scenes = 64              # synthetic scenes in the training set
  c.data.grid_size = 0.08             # metres (0.08 indoor, 0.2 outdoor)
  c.data.mask_cell = 0.4              # metres (0.4 indoor, 1.0 outdoor)
  c.data.num_views = 2
  c.data.crop_ratio = 0.6             # fraction of the scene's points each view keeps (random crop & duplicate)
  c.data.views = "duplicate"          # duplicate (one crop, V copies; paper) | independent (one crop per view)
  c.data.capacity = 8192              # stage-0 points per teacher view (padded)
  c.data.student_capacity = 4096      # stage-0 points per student view (visible only, padded)
  c.data.overflow = "downsample"      # downsample | error: a view larger than its capacity
  c.data.feat_keys = ("coord", "color", "normal")
  c.data.num_workers = 2
  c.data.prefetch = 4
  c.data.stage_ratio = 0.5            # capacity of pooled stage s+1 relative to stage s
  c.data.worker_backend = "thread"    # thread | process
  c.data.cross_radius = 0.0           # metres; 0 = 2 grid cells (cross-view nearest-point matching radius)
  c.data.token_jitter_sigma = 0.01    # metres, per axis (supervision=token_jitter; Sonata's value)
  c.data.token_jitter_clip = 0.02     # metres: the jitter is clipped to +-clip per axis
  c.data.packing = False              # views of a pack in one point set per stage (dos_jax.batching.packing)
  c.data.pack_scenes = 0              # scenes per pack (= per device); 0 = the whole host batch
  c.data.packed_capacity = ()         # per-stage teacher capacities of a pack (benchmarks/padding.py --calibrate)
  c.data.packed_student_capacity = () # per-stage student capacities of a pack
  c.data.packed_sequence = ()         # per-stage teacher attention sequence lengths of a pack (() = the capacities)
  c.data.packed_student_sequence = () # per-stage student attention sequence lengths of a pack
  c.data.augmentations = ()           # () = the defaults for data.kind (dos_jax.data.transforms)
  # Optional keys (None = the rule in brackets; placeholders so the command line can set them with a type):
  c.data.seed = _optional(int)              # synthetic scene set's seed [the run's seed for the probe, 0 in training]
  c.data.num_val_scenes = _optional(int)    # synthetic validation scenes [num_scenes // 4, at least 1]
  c.data.num_points = _optional(int)        # points per synthetic scene [the generator's natural count]
  c.data.segment_key = _optional(str)       # Pointcept label file without .npy [data.dataset's, e.g. segment20]
  c.data.num_classes = _optional(int)       # classes of the labels [data.dataset's count]
  c.data.tfds_name = _optional(str)         # which prepared TFDS dataset under data.root [the only one]

  # --- model ---
  c.model = ml_collections.ConfigDict()
  c.model.variant = "tiny"            # tiny | small | base (dos_jax.models.variants)
  c.model.dtype = "float32"           # float32 | bfloat16 (compute dtype; params stay float32)
  c.model.drop_path = 0.3             # student stochastic depth (Sonata); the teacher never drops paths
  c.model.mlp_ratio = 4
  c.model.head_hidden = 256           # projector hidden width
  c.model.head_dim = 64               # projector output (prototype) dimension
  c.model.shuffle_orders = False      # shuffle the serialization orders per stage in training (upstream PTv3)
  c.model.up_cast_level = 0           # levels the up-cast concatenates (0 = all; Sonata's probe head: 2)
  c.model.upcast_projection = True    # Linear + LayerNorm on the up-cast (dos; Sonata-compatible head: False)

  # --- linear probe ---
  c.probe = ml_collections.ConfigDict()
  c.probe.steps = 300
  c.probe.lr = 1e-2
  c.probe.batch_points = 65536
  c.probe.class_balanced = False
  c.probe.num_classes = 20
  c.probe.train_fraction = 0.7
  c.probe.capacity = _optional(int)         # stage-0 slots per probe scene [sized to every voxel of the batch]
  return c
