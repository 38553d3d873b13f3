r"""A picture of an encoder's features (PCA of the per-point features to RGB, top-down and side views).

  python -m launch.features --workdir DIR [--scene SCENE] [--out OUT] [--branch teacher]   # a dos_jax run
  python -m launch.features --checkpoint sonata.pth --scene SCENE --out OUT                 # upstream (torch)

`--workdir`: a `launch.train` run folder, read without torch: its recorded config (DIR/config.json) and latest
checkpoint (`dos_jax.eval.features.workdir_features`); the scene defaults to the first validation scene of the
run's data source, the output folder to DIR. `--checkpoint`: an upstream Pointcept PTv3 / Sonata checkpoint
(`dos_jax.interop.pointcept.load_checkpoint`, needs torch) run on the whole scene grid-sampled at --grid-size.
Writes `features.png` and `features.json` (points, width, paths). --scene: a Pointcept scene folder (coord.npy,
color.npy[, normal.npy]), or for --checkpoint also a VoteNet ScanNet scan folder. Exit 2 with one line on bad input.
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
from dos_jax.errors import ConfigError, DataError  # noqa: E402


def _upstream(args):
  """(coord, features, summary) of an upstream checkpoint; torch is imported here only."""
  from dos_jax.interop import pointcept  # pylint: disable=g-import-not-at-top
  from dos_jax.interop import pointcept_upstream  # pylint: disable=g-import-not-at-top
  overrides = {}
  if args.enc_num_head:
    overrides["enc_num_head"] = tuple(int(h) for h in args.enc_num_head.split(","))
  if args.enc_patch_size:
    overrides["enc_patch_size"] = args.enc_patch_size
  params, cfg = pointcept.load_checkpoint(args.checkpoint, branch=args.branch, **overrides)
  coord, feat, grid = pointcept_upstream.scan(args.scene, args.grid_size, int(cfg["in_channels"]))
  features = pointcept.point_features(params, cfg, coord, feat, grid)
  return coord, features, {"checkpoint": args.checkpoint, "scene": args.scene, "grid_size": args.grid_size,
                           "type": cfg["type"]}


def _recorded_config(workdir: str):
  """The validated config a `launch.train` run recorded in DIR/config.json (ConfigError when absent/unreadable)."""
  from dos_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from dos_jax import schema  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, checkpoint.CONFIG_FILE)
  try:
    with open(path) as f:
      stored = json.load(f)["config"]
  except FileNotFoundError:
    raise ConfigError(f"{path}: not found; --workdir must be a folder that launch.train wrote") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{path}: unreadable ({e})") from None
  return schema.from_record(stored)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="a launch.train run folder (its latest checkpoint; no torch needed)")
  source.add_argument("--checkpoint", help="upstream PTv3 / Sonata checkpoint (torch.save file; needs torch)")
  parser.add_argument("--scene", help="scene folder (default with --workdir: the run's first validation scene)")
  parser.add_argument("--out", help="output folder for features.png, features.json (default with --workdir: DIR)")
  parser.add_argument("--grid-size", type=float, default=0.02, help="--checkpoint: voxel size in m (Sonata: 0.02)")
  parser.add_argument("--branch", default="student", choices=["student", "teacher"])
  parser.add_argument("--enc-num-head", default=None, help="--checkpoint: heads per stage (default C // 16)")
  parser.add_argument("--enc-patch-size", type=int, default=None, help="--checkpoint: patch size (default 1024)")
  args = parser.parse_args(argv)
  out = args.out or args.workdir
  if not out or (args.checkpoint and not args.scene):
    parser.error("--checkpoint needs --scene and --out")
  try:
    if args.workdir:
      from dos_jax.eval import features as features_lib  # pylint: disable=g-import-not-at-top
      config = _recorded_config(args.workdir)
      coord, features, summary = features_lib.workdir_features(config, args.workdir, args.scene,
                                                               args.branch == "teacher")
      summary["workdir"] = args.workdir
      what = f"dos_jax {summary['variant']} step {summary['step']} ({args.branch})"
    else:
      coord, features, summary = _upstream(args)
      what = summary["type"]
  except (ConfigError, DataError) as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 2
  from dos_jax.eval import plots  # pylint: disable=g-import-not-at-top  (matplotlib: only once there is a picture)
  os.makedirs(out, exist_ok=True)
  scene_name = os.path.basename(os.path.normpath(str(summary["scene"])))
  png = plots.plot_feature_views(coord, plots.pca_rgb(features), os.path.join(out, "features.png"),
                                 title=f"{scene_name}: {what} features ({features.shape[1]} ch) PCA to RGB")
  summary.update(points=int(features.shape[0]), width=int(features.shape[1]), png=png)
  fileio.write_json(os.path.join(out, "features.json"), summary)
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
