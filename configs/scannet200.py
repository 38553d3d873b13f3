r"""DOS pretraining on ScanNet v2 with the ScanNet200 label set for probing (the pretraining itself is the same as
`configs/scannet.py`; only the probe's classes and head/common/tail splits differ).

  python -m launch.train --config configs/scannet200.py --workdir /ckpt/dos_scannet200 \
      --config.data.root=/data/scannet
  python -m launch.probe --config configs/scannet200.py --workdir /ckpt/dos_scannet200 --data /data/scannet/val

Runtime: as `configs/scannet.py` (not measured here). Expected result: a linear-probe mIoU with head/common/tail
breakdown; Zipf targets are meant to help the tail classes (see the paper's ScanNet200 table).
Smoke: `--config configs/scannet200.py:smoke` (synthetic indoor data, tiny encoder, a few steps).
"""

from configs import common
from configs import scannet


def get_config(arg=None):
  parsed = common.parse_arg(arg, smoke=False, det=False)
  c = scannet.get_config(f"det={parsed.det}")
  c.data.dataset = "scannet200"
  c.probe.num_classes = 200
  if parsed.smoke:
    common.apply_smoke(c)
  return c
