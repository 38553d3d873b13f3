"""Print a run folder's result: `python -m launch.summary --workdir DIR` (see `dos_jax.eval.report.run_summary`):
the probes' table (DOS, random init, supervised: whichever DIR holds), pretraining steps and time, and the paths of
results, figures and TensorBoard logs. Read from DIR's files only, so it prints the same table every time. Exit 2
with one line when DIR is not a directory."""

from __future__ import annotations

import argparse
import sys

from dos_jax.errors import ConfigError
from dos_jax.eval import report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  args = p.parse_args(argv)
  try:
    print(report.run_summary(args.workdir), end="")
  except ConfigError as e:
    print(f"ConfigError: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
