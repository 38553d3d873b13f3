r"""DOS vs random-init on the real ScanNet scans at CPU scale (a Pointcept folder tree of a few rooms).

  python -c "from dos_jax.data import sources; \
      sources.scannet_demo_tree('../shared/data/scannet_votenet50k', '/tmp/scannet_tree')"
  python -m launch.sweep --config configs/scannet_tiny.py:root=/tmp/scannet_tree --workdir /tmp/dos_scan \
      --seeds 0,1,2 --groups chain
  # or by hand:
  python -m launch.train --config configs/scannet_tiny.py:root=/tmp/scannet_tree --workdir /tmp/scan_dos
  python -m launch.probe --config configs/scannet_tiny.py:root=/tmp/scannet_tree --workdir /tmp/scan_dos

Pretraining uses the room-level 'train' split of the tree (~70% of the rooms; re-scans of a room stay together),
the probe trains on the same rooms and is evaluated on every original point of the held-out rooms (ScanNet-20
labels). Same encoder/head sizes and the same ablation plan (`get_sweep`) as configs/ablation_tiny.py; only the
data differ.

Args: root (the Pointcept tree, required), steps (pretraining steps), recipe (`sonata`, default, or `v1`: the
earlier recipe, `configs/common.py:apply_recipe`).
"""

from configs import ablation_tiny
from configs import common

get_sweep = ablation_tiny.get_sweep


def get_config(arg=None):
  arg = common.parse_arg(arg, root="", steps=120, recipe="sonata")
  c = ablation_tiny.get_config(f"steps={int(arg.steps)}")  # its recipe is applied below, once data.kind is set
  c.data.format = "pointcept"
  c.data.root = arg.root
  c.data.dataset = "scannet"
  c.data.kind = "indoor"
  c.probe.num_classes = 20
  return common.apply_recipe(c, arg.recipe)
