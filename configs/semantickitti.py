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
  # Packs filled by budget (dos_jax.batching.packing): each device's pack takes the frames of its window of 16
  # examples that fill these per-stage budgets best; calibrated to hold ~6 frames like the shared sequence-01
  # frames: `benchmarks/padding.py --config configs/semantickitti.py --calibrate --fill_scenes 6 --scenes 1
  # --split calib --sequence_margin 1.1 --tighten` (measured on the held-out frame of another sequence:
  # benchmarks/RESULTS.md).
  # The sequence margin 1.1 (default 1.25) was chosen on the calibration frames only (simulated fill, margins
  # 1.0-1.25: 1.05-1.1 best); on the held-out frame it gave 80.9% useful work against 79.2% at 1.25 (first-fit in
  # window order; the best-of-17-passes fill of round 10 gives 89-90% with the same budgets).
  c.batch_size = 128           # examples a step draws: 8 packs (one per GPU) x data.pack_scenes windows
  c.data.pack_scenes = 16
  common.set_packed_sizes(c, capacity=(298144, 135880, 52232, 17536, 5464),
                          student_capacity=(89504, 47112, 24040, 11424, 4392),
                          sequence=(337920, 161792, 67584, 26624, 8192),
                          student_sequence=(107520, 62464, 35840, 18432, 6144))
  c.probe.num_classes = 19
  if parsed.smoke:
    common.apply_smoke(c)
  return c
