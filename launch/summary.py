"""Print a run folder's result: `python -m launch.summary --workdir DIR [--train-seconds S]` (see
`dos_jax.eval.report.run_summary`): DOS vs random-init probe table, steps, time, and the paths of results,
figures and TensorBoard logs."""

from __future__ import annotations

import argparse
import sys

from dos_jax.eval import report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--train-seconds", type=float, default=None, help="pretraining wall time, added to DOS's row")
  args = p.parse_args(argv)
  print(report.run_summary(args.workdir, args.train_seconds), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
