#!/usr/bin/env bash
# One prepared GPU benchmark run (< 8 min on one GPU), and its CPU dry run (same code path, tiny sizes; CI runs it).
#
#   bash benchmarks/gpu.sh [OUT_DIR]              # on a GPU machine; default OUT_DIR=benchmarks/gpu_results
#   DRY_RUN=1 bash benchmarks/gpu.sh OUT_DIR      # anywhere: tiny sizes on CPU, same steps, same summary.json fields
#
# Nothing is installed from a package index (a lent GPU machine reaches none). Packages its Python lacks travel as
# wheels: `bash benchmarks/fetch_device_wheels.sh` (here, with network) fills .whl/; this script installs them
# offline into a private folder when .whl/ (or DOS_WHEELS) holds any. INSTALL=1 instead pip-installs
# requirements-cuda12.txt from the index (your own GPU machine with network).
#
# Steps (each writes JSON into OUT_DIR; a failing step is reported, the next one still runs, and summary.json lists
# it under "failed"):
#   1. `base` encoder forward+backward in bfloat16 (benchmarks/encoder.py, cuDNN attention if available): step time,
#      FLOPs from the compiled cost analysis, achieved TFLOP/s and MFU = achieved / PEAK_TFLOPS.
#   2. Zipf-Sinkhorn (+ softmap KL) memory bandwidth (benchmarks/sinkhorn_bandwidth.py): bytes accessed from the
#      compiled cost analysis / time, vs PEAK_GBPS; and the same computation in eager torch on the GPU.
#   3. synthetic_tiny train step, JAX vs torch reference (benchmarks/train_step.py --torch-device cuda).
#   4. PTv3 encoder forward+backward, dos_jax vs upstream Pointcept (torch + spconv-cu126 on the GPU; same ScanNet
#      scan and weights; benchmarks/pointcept.py --train --device cuda; needs ../shared beside the checkout and
#      spconv-cu126 + addict: INSTALL=1 or carried wheels). Not in the dry run (the upstream comparison on CPU is
#      tests/interop's); its summary field is then null.
#   5. summary.json (benchmarks/gpu_summary.py). Peaks default to the detected device (H100/H200 SXM: 989 dense bf16
#      TFLOP/s; A100: 312; L4: 121) and can be overridden: PEAK_TFLOPS=... PEAK_GBPS=... bash benchmarks/gpu.sh.
# Paste the printed summary into benchmarks/RESULTS.md (GPU section).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu_results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# The interpreter: $PYTHON when set (a venv that is not activated: PYTHON=/path/venv/bin/python), else python3.
PY=${PYTHON:-python3}
step() { echo "=== $* ($(date -u +%H:%M:%S))"; }

if [ "${DRY_RUN:-0}" = "1" ]; then
  # Tiny sizes on CPU: every step's code runs, in minutes, on a 2-core machine.
  export JAX_PLATFORMS=cpu
  VARIANT=tiny DTYPE=float32 POINTS=1024 BATCH=1 REPEATS=1 SIZES=2048x64 TS_STEPS=1 TORCH_DEVICE=cpu
  TS_ARGS=(--config-arg smoke --pipeline-seconds 0) LIMIT=600
else
  VARIANT=base DTYPE=bfloat16 POINTS=32768,65536,131072 BATCH=2 REPEATS=5 SIZES=65536x1024,262144x1024 TS_STEPS=10
  TORCH_DEVICE=cuda TS_ARGS=(--pipeline-seconds 2) LIMIT=240
fi

WHEELS=${DOS_WHEELS:-.whl}
if [ "${INSTALL:-0}" = "1" ]; then
  step "install (from the package index)"
  "$PY" -m pip install -q -r requirements-cuda12.txt || echo "install failed (continuing)"
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
  step "install carried wheels from $WHEELS (offline)"
  SITE=${DOS_SITE:-/tmp/dos_jax_site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$SITE" || echo "installing the carried wheels failed (continuing)"
fi
"$PY" - "${DRY_RUN:-0}" <<'EOF' || { echo "no GPU visible to JAX: stop (DRY_RUN=1 runs the same steps on CPU)"; exit 1; }
import sys
import jax
d = jax.devices()[0]
print("jax", jax.__version__, d.platform, d.device_kind, "x", jax.device_count())
assert d.platform == "gpu" or sys.argv[1] == "1"
EOF

step "$VARIANT encoder $DTYPE fwd+bwd"
ATTN=xla
if [ "${DRY_RUN:-0}" != "1" ]; then
  "$PY" -c "import jax, jax.numpy as jnp; q=jnp.ones((1,128,2,64),jnp.bfloat16); jax.nn.dot_product_attention(q,q,q,implementation='cudnn')" \
    >/dev/null 2>&1 && ATTN=cudnn
fi
timeout "$LIMIT" "$PY" benchmarks/encoder.py --variant "$VARIANT" --dtype "$DTYPE" --attention "$ATTN" \
  --points "$POINTS" --batch "$BATCH" --repeats "$REPEATS" --out "$OUT/encoder_base_bf16.json" \
  || echo "encoder benchmark failed"

step "sinkhorn bandwidth + torch objective"
timeout "$LIMIT" "$PY" benchmarks/sinkhorn_bandwidth.py "$OUT/sinkhorn_gpu.json" --sizes "$SIZES" \
  --repeats "$REPEATS" --torch-device "$TORCH_DEVICE" || echo "sinkhorn benchmark failed"

step "train step synthetic_tiny, JAX vs torch (the same views, per-view padded for torch)"
timeout "$LIMIT" "$PY" -m benchmarks.train_step --steps "$TS_STEPS" "${TS_ARGS[@]}" --torch-device "$TORCH_DEVICE" \
  --out "$OUT/train_step_gpu.json" >/dev/null || echo "train step benchmark failed"

if [ "${DRY_RUN:-0}" != "1" ]; then
  step "PTv3 fwd+bwd, dos_jax vs upstream Pointcept on GPU"
  if [ "${INSTALL:-0}" = "1" ]; then
    "$PY" -m pip install -q spconv-cu126==2.3.8 addict==2.4.0 || echo "spconv-cu126 install failed (continuing)"
  fi
  timeout "$LIMIT" "$PY" benchmarks/pointcept.py --train --device cuda --repeats 5 --out "$OUT/pointcept_gpu.json" \
    || echo "pointcept benchmark failed"
fi

step "summary"
"$PY" benchmarks/gpu_summary.py "$OUT"
