r"""Numerics parity reports: flags and a call.

  python -m launch.parity [--dtype float32|float64|both] [--components objective,encoder] [--json PATH]
      JAX vs the eager PyTorch reference of dos_jax, per component, forward and gradients
      (`dos_jax.torch_ref.parity`: inputs, tolerances and measured numbers in its docstring).
  python -m launch.parity --against pointcept [--checkpoint PATH] [--scene DIR] [--grid-size M] [--json PATH]
      dos_jax vs upstream Pointcept PTv3 on one real scene, per stage (`dos_jax.interop.pointcept_parity`).

Prints a one-line-per-check summary on stderr and the JSON report on stdout (also written atomically to --json);
exit code 0 when every difference is within its tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python launch/parity.py` as well as `python -m launch.parity`
  sys.path.insert(0, ROOT)

from dos_jax import io as fileio  # noqa: E402

COMPONENTS = ("objective", "encoder")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
  parser.add_argument("--components", default=",".join(COMPONENTS), help="comma-separated: objective,encoder")
  parser.add_argument("--json", default=None, help="also write the JSON report here (atomically)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--against", default="torch_ref", choices=["torch_ref", "pointcept"],
                      help="torch_ref: the PyTorch reference of dos_jax (components, gradients); pointcept: upstream "
                           "Pointcept PTv3 on a real scene, per stage")
  parser.add_argument("--checkpoint", default=None, help="--against pointcept: an upstream PTv3 / Sonata checkpoint")
  parser.add_argument("--scene", default=None, help="--against pointcept: a scene folder (default: a shared scan)")
  parser.add_argument("--grid-size", type=float, default=0.05, help="--against pointcept: voxel size in metres")
  parser.add_argument("--enc-num-head", default=None, help="--against pointcept: comma-separated heads per stage")
  parser.add_argument("--enc-patch-size", type=int, default=None, help="--against pointcept: attention patch size")
  return parser


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.against == "pointcept":
    from dos_jax.interop import pointcept_parity  # pylint: disable=g-import-not-at-top  (loads torch + upstream)
    overrides = {}
    if args.enc_num_head:
      overrides["enc_num_head"] = tuple(int(h) for h in args.enc_num_head.split(","))
    if args.enc_patch_size:
      overrides["enc_patch_size"] = args.enc_patch_size
    report = pointcept_parity.run(args.checkpoint, args.scene, args.grid_size, overrides, seed=args.seed)
    lines = pointcept_parity.summary_lines(report)
  else:
    from dos_jax.torch_ref import parity  # pylint: disable=g-import-not-at-top  (loads torch)
    components = tuple(c for c in args.components.split(",") if c)
    for c in components:
      if c not in COMPONENTS:
        parser.error(f"--components: unknown component {c!r} (expected {', '.join(COMPONENTS)})")
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    report = parity.run_parity(dtypes, components=components, seed=args.seed)
    lines = parity.summary_lines(report)
  text = json.dumps(report, indent=1, sort_keys=True)
  if args.json:
    fileio.write_text(args.json, text + "\n")
  print("\n".join(lines), file=sys.stderr)
  print(text)
  return 0 if report["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
