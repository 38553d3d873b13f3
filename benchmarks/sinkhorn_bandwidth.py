r"""Zipf-Sinkhorn (+ softmap KL) memory bandwidth on the default JAX device, and the same in eager torch.

  python benchmarks/sinkhorn_bandwidth.py OUT.json [--sizes 65536x1024,262144x1024] [--repeats 10]

Per size N x K: seconds (median of `--repeats` after one warm-up), XLA's compiled "bytes accessed" and the
achieved GB/s, the minimum bytes (every N x K float32 operand read once), and, where torch sees a CUDA device (or
`--torch-device cpu`), the eager torch time of the same loss and the JAX/torch speed-up. `benchmarks/gpu.sh` runs
it (tiny sizes on CPU in its dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks import timing  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax import objective  # noqa: E402


def _timed(fn, repeats):
  return statistics.median(timing.call_times(fn, repeats, warmup=1)[0])


def _cost(compiled):
  cost = compiled.cost_analysis()
  # A list of per-module dicts on older JAX, a dict on newer ones.
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def measure(n: int, k: int, repeats: int, torch_device: str) -> dict:
  r = np.random.default_rng(0)
  s = jnp.asarray(r.uniform(-1, 1, (n, k)) / 0.07, jnp.float32)
  st = jnp.asarray(r.uniform(-1, 1, (n, k)) / 0.1, jnp.float32)
  v = jnp.asarray(r.random(n) < 0.9)
  sink = jax.jit(lambda s, v: objective.zipf_sinkhorn(s, v, 1.3, 3))
  loss = jax.jit(lambda st, s, v: objective.softmap_kl(
      jax.lax.stop_gradient(objective.zipf_sinkhorn(s, v, 1.3, 3)), st, v))
  row = {}
  for name, fn, args in (("sinkhorn", sink, (s, v)), ("sinkhorn_kl", loss, (st, s, v))):
    compiled = fn.lower(*args).compile()
    sec = _timed(lambda c=compiled, a=args: jax.block_until_ready(c(*a)), repeats)
    accessed = float(_cost(compiled).get("bytes accessed", float("nan")))
    row[name] = {"s": sec, "bytes_accessed": accessed, "GBps": accessed / sec / 1e9,
                 "min_bytes": 4.0 * n * k * (2 if name == "sinkhorn" else 3)}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from dos_jax.torch_ref import objective as tobj  # pylint: disable=g-import-not-at-top
    device = torch_device or ("cuda" if torch.cuda.is_available() else None)
    if device:
      ts, tst, tv = (torch.as_tensor(np.asarray(a)).to(device) for a in (s, st, v))
      sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

      def torch_loss():
        with torch.no_grad():
          tobj.softmap_kl(tobj.zipf_sinkhorn(ts, tv, 1.3, 3), tst, tv)
        sync()

      row["torch_device"] = device
      row["torch_sinkhorn_kl_s"] = _timed(torch_loss, max(1, repeats // 2))
      row["speedup_jax_over_torch"] = row["torch_sinkhorn_kl_s"] / row["sinkhorn_kl"]["s"]
  except Exception as e:  # pylint: disable=broad-except  (torch missing or out of memory: keep the JAX numbers)
    row["torch_error"] = repr(e)[:300]
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out")
  parser.add_argument("--sizes", default="65536x1024,262144x1024", help="comma-separated NxK")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--torch-device", default="", help="torch device (default: cuda when available, else none)")
  args = parser.parse_args(argv)
  result = {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform}
  for size in args.sizes.split(","):
    n, k = (int(x) for x in size.lower().split("x"))
    result[f"{n}x{k}"] = measure(n, k, args.repeats, args.torch_device)
    print(json.dumps({f"{n}x{k}": result[f"{n}x{k}"]}), flush=True)
  fileio.write_json(args.out, result, indent=1)
  return result


if __name__ == "__main__":
  main()
