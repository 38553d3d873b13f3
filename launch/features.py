r"""A picture of an encoder's features: `python -m launch.features --checkpoint PATH --scene DIR --out DIR`.

Loads an upstream Pointcept PTv3 / Sonata checkpoint (`dos_jax.interop.pointcept.load_checkpoint`), runs the
eval-mode encoder on the whole scene (grid-sampled at --grid-size), maps the per-point features (every stage up-cast
to the input points: sum(enc_channels) wide) to RGB by PCA, and writes `features.png` (top-down and side views),
plus `features.json` (points, width, paths) into --out. --scene: a Pointcept scene folder (coord.npy, color.npy
[, normal.npy]) or a VoteNet ScanNet scan folder (../shared/data/scannet_votenet50k/scene*). Needs torch to read
the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from dos_jax import io as fileio  # noqa: E402
from dos_jax.eval import plots  # noqa: E402
from dos_jax.interop import pointcept  # noqa: E402
from dos_jax.interop import pointcept_upstream  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="upstream PTv3 / Sonata checkpoint (torch.save file)")
  parser.add_argument("--scene", required=True, help="scene folder")
  parser.add_argument("--out", required=True, help="output folder (features.png, features.json)")
  parser.add_argument("--grid-size", type=float, default=0.02, help="voxel size in metres (Sonata: 0.02)")
  parser.add_argument("--branch", default="student", choices=["student", "teacher"])
  parser.add_argument("--enc-num-head", default=None, help="comma-separated heads per stage (default C // 16)")
  parser.add_argument("--enc-patch-size", type=int, default=None, help="attention patch size (default 1024)")
  args = parser.parse_args(argv)
  overrides = {}
  if args.enc_num_head:
    overrides["enc_num_head"] = tuple(int(h) for h in args.enc_num_head.split(","))
  if args.enc_patch_size:
    overrides["enc_patch_size"] = args.enc_patch_size
  params, cfg = pointcept.load_checkpoint(args.checkpoint, branch=args.branch, **overrides)
  coord, feat, grid = pointcept_upstream.scan(args.scene, args.grid_size, int(cfg["in_channels"]))
  features = pointcept.point_features(params, cfg, coord, feat, grid)
  os.makedirs(args.out, exist_ok=True)
  png = plots.plot_feature_views(coord, plots.pca_rgb(features), os.path.join(args.out, "features.png"),
                                 title=f"{os.path.basename(os.path.normpath(args.scene))}: {cfg['type']} features "
                                       f"({features.shape[1]} ch) PCA to RGB")
  summary = {"checkpoint": args.checkpoint, "scene": args.scene, "grid_size": args.grid_size,
             "points": int(features.shape[0]), "width": int(features.shape[1]), "png": png, "type": cfg["type"]}
  fileio.write_json(os.path.join(args.out, "features.json"), summary)
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
