r"""Small-scale ablations of DOS on 2 CPU cores (synthetic indoor rooms): the base of `launch/ablate.py`.

  python -m launch.ablate --workdir /tmp/dos_ablate --seeds 0,1 --steps 120
  python -m launch.train --config configs/ablation_tiny.py --workdir /tmp/abl_one --config.zipf_alpha=0.0
  python -m launch.probe --config configs/ablation_tiny.py --workdir /tmp/abl_one

Smaller than `synthetic_tiny` (fewer prototypes, half the view capacity, 16 training scenes) so that ~20
pretrain+probe runs fit in about an hour of a shared 2-core machine. `launch.ablate` overrides the method switches
(supervision, normalization, zipf_alpha), the seed and total_steps per run; everything else is fixed here.

Args (`configs/ablation_tiny.py:steps=200,smoke`): steps (total pretraining steps), smoke (a few steps, CI).
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, steps=120, smoke=False)
  c = common.base_config()
  c.total_steps = int(arg.steps)
  c.batch_size = 2
  c.log_every = 5
  c.checkpoint_every = 100_000     # only the final checkpoint (the loop saves at the end)
  c.keep_checkpoints = 1
  c.num_prototypes = 128
  c.zipf_alpha = 1.3
  c.optim.lr = 2e-3
  c.data.num_scenes = 16
  c.data.grid_size = 0.1
  c.data.mask_cell = 0.4
  c.data.capacity = 1024
  c.data.student_capacity = 512
  c.data.num_workers = 1
  c.model.variant = "tiny"
  # No stochastic depth at this size (2 blocks per stage, a few hundred steps); paper configs use 0.3.
  c.model.drop_path = 0.0
  c.model.head_hidden = 128
  c.model.head_dim = 32
  c.probe.steps = 150
  c.probe.num_classes = 20
  if arg.smoke:
    c.total_steps = 4
    c.log_every = 2
    c.data.num_scenes = 4
    c.probe.steps = 10
  return c
