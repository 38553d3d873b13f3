r"""DOS pretraining on nuScenes lidar sweeps (outdoor), paper defaults, PTv3-base encoder.

  python -m launch.train --config configs/nuscenes.py --workdir /ckpt/dos_nuscenes --config.data.root=/data/nuscenes
  python -m launch.probe --config configs/nuscenes.py --workdir /ckpt/dos_nuscenes --data /data/nuscenes/val

Outdoor defaults: grid 0.2 m, masking cells 1 m at ratio 0.7 (`:det` gives 0.6 for detection pretraining),
K=1024, Zipf alpha 1.3; no colour: features are coordinates + LiDAR strength (intensity), as Pointcept feeds them.

Runtime: not measured here (no accelerator on the project's CI machines); expect on the order of a day on 8
A100/H100-class GPUs. Expected result: linear-probe mIoU on the 16 nuScenes lidarseg classes in the paper's range.
Smoke: `--config configs/nuscenes.py:smoke` (synthetic outdoor scenes, tiny encoder, a few steps).
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, det=False)
  c = common.base_config()
  c.total_steps = 100_000
  c.batch_size = 32
  c.log_every = 50
  c.checkpoint_every = 2_000
  c.keep_checkpoints = 3

  c.num_prototypes = 1024
  c.zipf_alpha = 1.3
  c.mask_ratio = 0.6 if arg.det else 0.7

  c.data.format = "pointcept"
  c.data.root = "data/nuscenes"  # placeholder: override with --config.data.root=PATH
  c.data.dataset = "nuscenes"
  c.data.kind = "outdoor"
  c.data.grid_size = 0.2
  c.data.cross_radius = 0.4        # metres: 2 grid cells
  c.data.mask_cell = 1.0
  c.data.feat_keys = ("coord", "strength")  # Pointcept feeds coord + LiDAR strength
  c.data.capacity = 32768
  c.data.student_capacity = 16384
  c.data.num_workers = 8
  # Packed batches (dos_jax.batching.packing): 4 scenes x 2 views per device in one point set per stage.
  # NOT calibrated on nuScenes (no nuScenes scans beside the checkout): the SemanticKITTI calibration scaled
  # by this config's per-view capacities (x0.5). Before a real run: `python benchmarks/padding.py --config
  # configs/nuscenes.py --config.data.root=/data/nuscenes --calibrate --fill_scenes 3` and pass the
  # printed overrides. These budgets hold ~4 scenes: the window is 4 (batch_size 32 = 8 packs of 4).
  c.data.pack_scenes = 4       # a device's window: at most 4 scenes per pack
  common.set_packed_sizes(c, capacity=(91264, 41576, 16192, 5608, 1752),
                          student_capacity=(27920, 14784, 7392, 3584, 1400),
                          sequence=(94208, 45056, 19456, 9216, 2048),
                          student_sequence=(30720, 18432, 10240, 6144, 2048))

  c.model.variant = "base"
  c.model.head_hidden = 2048
  c.model.head_dim = 256
  c.model.shuffle_orders = True      # upstream PTv3 / Sonata: shuffle the block orders per stage in training
  c.probe.num_classes = 16
  if arg.smoke:
    common.apply_smoke(c)
  return c
