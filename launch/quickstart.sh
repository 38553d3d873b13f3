#!/usr/bin/env bash
# The embedded default end to end: short DOS pretraining on synthetic rooms, then a linear probe (prints mIoU).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-/tmp/dos_jax_quickstart}
python -m launch.train --config configs/synthetic_tiny.py --workdir "$WORKDIR" "$@"
python -m launch.probe --config configs/synthetic_tiny.py --workdir "$WORKDIR"
