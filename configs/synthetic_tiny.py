r"""The embedded default: DOS pretraining of a tiny encoder on synthetic indoor rooms, on 2 CPU cores.

  python -m launch.train --config configs/synthetic_tiny.py --workdir /tmp/dos_tiny
  python -m launch.probe --config configs/synthetic_tiny.py --workdir /tmp/dos_tiny

Runtime: a few minutes on 2 CPU cores. Expected: loss decreases, effective prototypes well above 1, and the
linear probe on DOS features beats the random-init encoder.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.total_steps = 300
  c.batch_size = 2
  c.log_every = 10
  c.checkpoint_every = 100
  c.num_prototypes = 256
  c.zipf_alpha = 1.3
  c.optim.lr = 2e-3
  c.data.num_scenes = 32
  c.data.grid_size = 0.1
  c.data.cross_radius = 0.2        # metres: 2 grid cells
  c.data.mask_cell = 0.4
  c.data.capacity = 2048
  c.data.student_capacity = 1024
  # Packed sizes (used only with --config.data.packing=True, both scenes in one pack): `benchmarks/padding.py
  # --config configs/synthetic_tiny.py --scenes 16 --margin 1.1 --calibrate`. Packing stays off here.
  common.set_packed_sizes(c, capacity=(8192, 2808, 792),
                          student_capacity=(2888, 1216, 480),
                          sequence=(8192, 3008, 960),
                          student_sequence=(3136, 1408, 640))
  c.model.variant = "tiny"
  # No stochastic depth at this size (2 blocks per stage, a few hundred steps); paper configs use 0.3.
  c.model.drop_path = 0.0
  c.model.head_hidden = 128
  c.model.head_dim = 32
  c.probe.steps = 200
  c.probe.num_classes = 20
  if arg.smoke:
    c.total_steps = 6
    c.log_every = 2
    c.checkpoint_every = 3
    c.num_prototypes = 64
    c.data.num_scenes = 4
    c.data.capacity = 1024
    c.data.student_capacity = 512
    c.probe.steps = 20
  return c
