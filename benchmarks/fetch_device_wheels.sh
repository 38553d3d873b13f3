#!/usr/bin/env bash
# Downloads, here (with PyPI), the wheels that a lent H200 machine's Python 3.12 lacks, into .whl/ (git-ignored):
#
#   bash benchmarks/fetch_device_wheels.sh [DIR]      # default DIR=.whl
#
# The H200 image already has jax 0.11.2 (CUDA 13 plugin), flax, optax, orbax-checkpoint, torch, numpy, scipy,
# matplotlib, tqdm, absl-py, etils, protobuf, pyarrow, psutil, wrapt, PyYAML, ... (the device tool's KINDS.md lists
# them) but not the packages below. It reaches no package index, so they travel with the run: name DIR in the run's
# `carry`, and benchmarks/gpu.sh installs them offline (`pip install --no-index --no-deps --target`). Versions:
# the project's pins (requirements.txt) and, for their dependencies, versions that install together with them.
# Only py3.12 / manylinux x86-64 wheels are fetched, with --no-deps: every dependency is named here, once (the
# dependencies' own Requires-Dist were read with `unzip -p WHEEL '*/METADATA' | grep ^Requires-Dist`).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
mkdir -p "$DIR"
pin() { grep -iE "^$1==" requirements.txt | head -n 1; }
PROJECT=(ml-collections clu tensorboardX tensorflow-datasets grain array-record laspy)
DEPS=(portpicker==1.6.0 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9
      docstring-parser==0.18.0 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0
      toml==0.10.2)
# Pure-Python packages published only as source: built into a py3-none-any wheel here (nothing to compile).
BUILD=(promise==2.3)
SPECS=()
for name in "${PROJECT[@]}"; do
  spec=$(pin "$name") || { echo "fetch_device_wheels: $name is not pinned in requirements.txt" >&2; exit 2; }
  SPECS+=("$spec")
done
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${SPECS[@]}" "${DEPS[@]}"
python3 -m pip wheel -q --no-deps -w "$DIR" "${BUILD[@]}"
ls -1 "$DIR"
du -sh "$DIR"
