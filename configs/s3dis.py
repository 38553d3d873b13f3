r"""DOS pretraining on S3DIS (indoor, 6 areas; probe on Area 5 as usual), paper defaults, PTv3-base encoder.

  python -m launch.train --config configs/s3dis.py --workdir /ckpt/dos_s3dis --config.data.root=/data/s3dis
  python -m launch.probe --config configs/s3dis.py --workdir /ckpt/dos_s3dis --data /data/s3dis/train \
      --eval-data /data/s3dis/Area_5

Runtime: not measured here (S3DIS has ~270 rooms, much less than ScanNet: expect hours on 8 GPUs). Expected result:
linear-probe mIoU on Area 5 (13 classes) in the paper's range for DOS.
Smoke: `--config configs/s3dis.py:smoke` (synthetic indoor data, tiny encoder, a few steps).
"""

from configs import common
from configs import scannet


def get_config(arg=None):
  parsed = common.parse_arg(arg, smoke=False, det=False)
  c = scannet.get_config(f"det={parsed.det}")
  c.total_steps = 30_000       # a much smaller dataset than ScanNet
  c.data.root = "data/s3dis"   # placeholder: override with --config.data.root=PATH
  c.data.dataset = "s3dis"
  c.data.capacity = 32768      # S3DIS rooms are denser/larger than ScanNet scans at the same grid
  c.data.student_capacity = 16384
  # Packed sizes NOT calibrated on S3DIS (no S3DIS rooms beside the checkout): the ScanNet calibration scaled by
  # the per-view capacities (x2). Recalibrate before a real run: `python benchmarks/padding.py --config
  # configs/s3dis.py --config.data.root=/data/s3dis --scenes 16 --margin 1.1 --calibrate`.
  common.set_packed_sizes(c, capacity=(153344, 46096, 11536, 2864, 688),
                          student_capacity=(45088, 17840, 6416, 2240, 624),
                          sequence=(161792, 57344, 16384, 4096, 688),
                          student_sequence=(55296, 24576, 8192, 4096, 624))
  c.probe.num_classes = 13
  if parsed.smoke:
    common.apply_smoke(c)
  return c
