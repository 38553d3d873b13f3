r"""DOS pretraining on SemanticKITTI scans (outdoor), paper defaults, PTv3-base encoder.

  python -m launch.train --config configs/semantickitti.py --workdir /ckpt/dos_kitti \
      --config.data.root=/data/semantickitti
  python -m launch.probe --config configs/semantickitti.py --workdir /ckpt/dos_kitti --data /data/semantickitti/val

Same outdoor recipe as `configs/nuscenes.py` (grid 0.2 m, 1 m masking cells, ratio 0.7, K=1024, alpha 1.3);
KITTI scans are denser (~120k points), hence the larger capacities.

Runtime: not measured here; expect on the order of a day on 8 A100/H100-class GPUs. Expected result: linear-probe
mIoU on the 19 SemanticKITTI classes in the paper's range.
Smoke: `--config configs/semantickitti.py:smoke` (synthetic outdoor scenes, tiny encoder, a few steps).
"""

from configs import common
from configs import nuscenes


def get_config(arg=None):
  parsed = common.parse_arg(arg, smoke=False, det=False)
  c = nuscenes.get_config(f"det={parsed.det}")
  c.data.root = "data/semantickitti"  # placeholder: override with --config.data.root=PATH
  c.data.dataset = "semantickitti"
  c.data.capacity = 65536
  c.data.student_capacity = 32768
  # Packed slots and attention sequence lengths per stage: `benchmarks/padding.py --config
  # configs/semantickitti.py --scenes 8 --margin 1.1 --calibrate` on the shared KITTI frames (max of 64
  # balanced packs x 1.1; data.packing=True and pack_scenes=4 come from nuscenes.py).
  common.set_packed_sizes(c, capacity=(182520, 83152, 32384, 11216, 3496),
                          student_capacity=(55832, 29568, 14784, 7168, 2792),
                          sequence=(187392, 89088, 38912, 17408, 4096),
                          student_sequence=(60416, 35840, 20480, 11264, 3072))
  c.probe.num_classes = 19
  if parsed.smoke:
    common.apply_smoke(c)
  return c
