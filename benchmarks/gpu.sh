#!/usr/bin/env bash
# One prepared GPU benchmark run (< 8 min on one GPU). Run from the repository root on a machine with an NVIDIA GPU:
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default OUT_DIR=benchmarks/gpu_results
#
# Steps (each writes JSON into OUT_DIR; a failing step is reported and the next one still runs):
#   1. pip install -r requirements-cuda12.txt and torch==2.13.0 (PyPI's Linux default wheel is the CUDA build);
#      skip with SKIP_INSTALL=1.
#   2. `base` encoder forward+backward in bfloat16 (benchmarks/encoder.py, cuDNN attention if available):
#      step time, FLOPs from the compiled cost analysis, achieved TFLOP/s and MFU = achieved / PEAK_TFLOPS.
#   3. Zipf-Sinkhorn (+ softmap KL) memory bandwidth: bytes accessed from the compiled cost analysis / time,
#      vs PEAK_GBPS; and the same computation in eager torch on the GPU (JAX/torch speed-up).
#   4. synthetic_tiny train step, JAX vs torch reference (benchmarks/train_step.py --torch-device cuda).
#   5. PTv3 encoder forward+backward, dos_jax vs upstream Pointcept (torch + spconv-cu126 on the GPU; same ScanNet
#      scan and weights; benchmarks/pointcept.py --train --device cuda; needs ../shared beside the checkout).
# Peaks default to the detected device (H100/H200 SXM: 989 dense bf16 TFLOP/s; A100: 312; L4: 121) and can be
# overridden: PEAK_TFLOPS=... PEAK_GBPS=... bash benchmarks/gpu.sh.
# Paste the printed summary into benchmarks/RESULTS.md (GPU section).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu_results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
step() { echo "=== $* ($(date -u +%H:%M:%S))"; }

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  step "install"
  python -m pip install -q -r requirements-cuda12.txt torch==2.13.0 || echo "install failed (continuing)"
fi
python - <<'EOF' || { echo "no GPU visible to JAX: stop"; exit 1; }
import jax
d = jax.devices()[0]
print("jax", jax.__version__, d.platform, d.device_kind)
assert d.platform == "gpu"
EOF

step "base encoder bf16 fwd+bwd"
ATTN=cudnn
python -c "import jax, jax.numpy as jnp; q=jnp.ones((1,128,2,64),jnp.bfloat16); jax.nn.dot_product_attention(q,q,q,implementation='cudnn')" \
  >/dev/null 2>&1 || ATTN=xla
timeout 240 python benchmarks/encoder.py --variant base --dtype bfloat16 --attention "$ATTN" \
  --points 32768,65536,131072 --batch 2 --repeats 5 --out "$OUT/encoder_base_bf16.json" \
  || echo "encoder benchmark failed"

step "sinkhorn bandwidth + torch objective on GPU"
timeout 150 python - "$OUT" <<'EOF' || echo "sinkhorn benchmark failed"
import json, os, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from dos_jax import objective
out_dir = sys.argv[1]
res = {"device": jax.devices()[0].device_kind}
def timed(fn, repeats=10):
  fn(); ts = []
  for _ in range(repeats):
    t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
  return statistics.median(ts)
for n, k in ((65536, 1024), (262144, 1024)):
  r = np.random.default_rng(0)
  s = jnp.asarray(r.uniform(-1, 1, (n, k)) / 0.07, jnp.float32)
  st = jnp.asarray(r.uniform(-1, 1, (n, k)) / 0.1, jnp.float32)
  v = jnp.asarray(r.random(n) < 0.9)
  sink = jax.jit(lambda s, v: objective.zipf_sinkhorn(s, v, 1.3, 3))
  loss = jax.jit(lambda st, s, v: objective.softmap_kl(jax.lax.stop_gradient(objective.zipf_sinkhorn(s, v, 1.3, 3)), st, v))
  row = {}
  for name, fn, args in (("sinkhorn", sink, (s, v)), ("sinkhorn_kl", loss, (st, s, v))):
    c = fn.lower(*args).compile()
    cost = c.cost_analysis(); cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    sec = timed(lambda: jax.block_until_ready(c(*args)))
    b = float(cost.get("bytes accessed", float("nan")))
    row[name] = {"s": sec, "bytes_accessed": b, "GBps": b / sec / 1e9, "min_bytes": 4.0 * n * k * (2 if name == "sinkhorn" else 3)}
  try:
    import torch
    from dos_jax.torch_ref import objective as tobj
    if torch.cuda.is_available():
      ts, tst, tv = (torch.as_tensor(np.asarray(a)).cuda() for a in (s, st, v))
      def tl():
        with torch.no_grad():
          tobj.softmap_kl(tobj.zipf_sinkhorn(ts, tv, 1.3, 3), tst, tv); torch.cuda.synchronize()
      row["torch_sinkhorn_kl_s"] = timed(tl, 5)
      row["speedup_jax_over_torch"] = row["torch_sinkhorn_kl_s"] / row["sinkhorn_kl"]["s"]
  except Exception as e:  # torch missing or out of memory: report, keep the JAX numbers
    row["torch_error"] = repr(e)[:300]
  res[f"{n}x{k}"] = row
  print(json.dumps({f"{n}x{k}": row}))
json.dump(res, open(os.path.join(out_dir, "sinkhorn_gpu.json"), "w"), indent=1)
EOF

step "train step synthetic_tiny, JAX vs torch on GPU"
timeout 150 python -m benchmarks.train_step --steps 10 --pipeline-seconds 2 --torch-device cuda \
  --out "$OUT/train_step_gpu.json" >/dev/null || echo "train step benchmark failed"

step "PTv3 fwd+bwd, dos_jax vs upstream Pointcept on GPU"
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  python -m pip install -q spconv-cu126==2.3.8 addict==2.4.0 || echo "spconv-cu126 install failed (continuing)"
fi
timeout 240 python benchmarks/pointcept.py --train --device cuda --repeats 5 --out "$OUT/pointcept_gpu.json" \
  || echo "pointcept benchmark failed"

step "summary"
python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
peaks = {"H200": (989, 4800), "H100": (989, 3350), "A100": (312, 2039), "L4": (121, 300), "A10": (125, 600)}
def load(name):
  p = os.path.join(out, name)
  return json.load(open(p)) if os.path.exists(p) else None
enc, sk, ts = load("encoder_base_bf16.json"), load("sinkhorn_gpu.json"), load("train_step_gpu.json")
pc = load("pointcept_gpu.json")
kind = (enc or sk or {}).get("device_kind") or (sk or {}).get("device", "")
peak_t, peak_b = next((v for k, v in peaks.items() if k in str(kind)), (float("nan"), float("nan")))
peak_t = float(os.environ.get("PEAK_TFLOPS", peak_t)); peak_b = float(os.environ.get("PEAK_GBPS", peak_b))
summary = {"device": kind, "peak_tflops_bf16": peak_t, "peak_GBps": peak_b}
if enc:
  summary["encoder_base_bf16"] = [dict(points=r["points"], batch=r["batch"], step_s=r["step_s"],
                                       achieved_tflops=r.get("achieved_tflops"),
                                       mfu=(r["achieved_tflops"] / peak_t) if r.get("achieved_tflops") else None)
                                  for r in enc["rows"]]
if sk:
  summary["sinkhorn"] = {k: {"GBps": v["sinkhorn"]["GBps"], "fraction_of_peak": v["sinkhorn"]["GBps"] / peak_b,
                             "speedup_jax_over_torch": v.get("speedup_jax_over_torch")}
                         for k, v in sk.items() if isinstance(v, dict)}
if ts:
  summary["train_step"] = {k: ts.get(k) for k in ("jax_step_s", "torch_step_s", "speedup_jax_over_torch",
                                                  "jax_compile_s", "torch_device")}
if pc:
  summary["pointcept_fwd_bwd"] = [{k: r[k] for k in ("model", "points", "dos_jax_s", "upstream_s", "speedup")}
                                  for r in pc["rows"]]
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
