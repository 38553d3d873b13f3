#!/usr/bin/env bash
# The embedded default end to end: short DOS pretraining on synthetic rooms, a linear probe of it and of a
# random-init encoder, then a short table of the result and where the files are.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-/tmp/dos_jax_quickstart}
# The interpreter: $PYTHON when set (e.g. a venv that is not activated), else `python` from PATH.
PY=${PYTHON:-python}
"$PY" -m launch.train --config configs/synthetic_tiny.py --workdir "$WORKDIR" "$@"
# The probes' one-line JSON results go to probe*.json; the console keeps the progress bars and the table.
"$PY" -m launch.probe --config configs/synthetic_tiny.py --workdir "$WORKDIR" "$@" > /dev/null
"$PY" -m launch.probe --config configs/synthetic_tiny.py --workdir "$WORKDIR" "$@" --random-init --noplots > /dev/null
echo
"$PY" -m launch.summary --workdir "$WORKDIR"   # the same table as a later reprint (read from the workdir)
