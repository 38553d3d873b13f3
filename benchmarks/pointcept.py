r"""dos_jax encoder forward vs upstream Pointcept PTv3 (torch + spconv, CPU, one torch thread) on the same cloud
and weights, in one run: `python benchmarks/pointcept.py [--scene DIR] [--grid-size 0.1] [--repeats 5]`.

The cloud is a whole ScanNet scan (default ../shared/data/scannet_votenet50k/scene0000_00 at 0.1 m: 16,489
points). Models (PT-v3m2, encoder mode, random weights drawn upstream and loaded into dos_jax): `tiny` (channels
16-32-64, depths 1-1-1, patch 64) and `tiny x4` (4 blocks per stage). Timed: upstream's forward (model + up-cast,
`torch.no_grad`, torch.set_num_threads(1): spconv's CPU SubMConv3d is wrong with more threads) vs dos_jax's jitted
forward of the same features on an already built point set (host-side serialization is timed separately:
`host_s`); min of --repeats after one warm-up each. Outputs are checked equal (<= 1e-4 relative) before timing.
Upstream cannot train on CPU (spconv's SubMConv3d backward asks for CUDA), so forward+backward is compared only on
a GPU (benchmarks/gpu.sh). Writes benchmarks/pointcept.json (atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from benchmarks import timing  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax.interop import pointcept_parity  # noqa: E402
from dos_jax.interop import pointcept_upstream  # noqa: E402

MODELS = {
    "tiny": dict(channels=(16, 32, 64), depths=(1, 1, 1), heads=(1, 2, 4), patch=64),
    "tiny x4": dict(channels=(16, 32, 64), depths=(4, 4, 4), heads=(1, 2, 4), patch=64),
}


def _best(fn, repeats: int) -> float:
  return min(timing.call_times(fn, repeats, warmup=1)[0])


def _upstream_train_step(model, coord, feat, grid, g, device):
  """Upstream forward + backward of sum(features * g) w.r.t. its params on `device` (GPU: spconv needs CUDA)."""
  torch, _, _ = pointcept_upstream.modules()
  model = model.to(device)
  cot = torch.from_numpy(g).to(device)

  def step():
    model.zero_grad(set_to_none=True)
    out = pointcept_upstream.upcast(model(pointcept_upstream.inputs(coord, feat, grid, device)))
    (out * cot).sum().backward()
    if device != "cpu":
      torch.cuda.synchronize()
  return step


def run(scene: str, grid_size: float, repeats: int, train: bool = False, device: str = "cpu"):
  import jax  # pylint: disable=g-import-not-at-top
  from dos_jax.batching import patches  # pylint: disable=g-import-not-at-top
  from dos_jax.interop import pointcept  # pylint: disable=g-import-not-at-top
  from dos_jax.models import encoder  # pylint: disable=g-import-not-at-top
  coord, feat, grid = pointcept_upstream.scan(scene, grid_size)
  rows = []
  for name, m in MODELS.items():
    model = pointcept_upstream.build_random("PT-v3m2", m["channels"], m["depths"], m["heads"], m["patch"], seed=0)
    params, cfg = pointcept.from_state_dict(pointcept_upstream.state_dict(model), enc_num_head=m["heads"],
                                            enc_patch_size=m["patch"])
    want = pointcept_upstream.forward(model, coord, feat, grid)[1]
    got = pointcept.point_features(params, cfg, coord, feat, grid)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    assert rel <= pointcept_parity.TOLERANCE, (name, rel)
    num_stages = len(m["channels"])
    t = time.perf_counter()
    caps = pointcept.bucket_capacities(patches.stage_counts(grid, num_stages))  # as point_features
    ps = patches.stack_point_sets([patches.build_point_set(coord, feat, np.arange(len(coord)), grid_size, caps[0],
                                                           num_stages, 1, grid=grid, capacities=caps)])
    host_s = time.perf_counter() - t
    net = encoder.build(dataclasses.replace(pointcept.model_spec(cfg), up_cast_level=0, upcast_projection=False))
    fwd = jax.jit(lambda p, pts: net.apply({"params": p}, pts, train=False)[0])
    pts = jax.device_put(ps)
    what = "forward+backward" if train else "forward"
    if train:
      g = np.random.default_rng(0).standard_normal(want.shape).astype(np.float32)
      pad = np.zeros((caps[0],) + g.shape[1:], np.float32)
      pad[:len(g)] = g
      grad = jax.jit(jax.grad(lambda p, pts, c: (net.apply({"params": p}, pts, train=False)[0][0] * c).sum()))
      dos_s = _best(lambda: jax.block_until_ready(grad(params, pts, pad)), repeats)
      try:
        up_s = _best(_upstream_train_step(model, coord, feat, grid, g, device), repeats)
      except (RuntimeError, AssertionError) as e:  # CPU: spconv's SubMConv3d backward asks for CUDA
        up_s = float("nan")
        print(f"upstream {what} unavailable on {device}: {str(e).splitlines()[0][:120]}")
    else:
      dos_s = _best(lambda: fwd(params, pts).block_until_ready(), repeats)
      up_s = _best(lambda: pointcept_upstream.forward(model, coord, feat, grid), repeats)
    rows.append(dict(model=name, points=len(coord), rel_diff=rel, timed=what, dos_jax_s=dos_s, upstream_s=up_s,
                     speedup=up_s / dos_s, dos_jax_host_s=host_s))
    print(f"{name:8s} {len(coord)} points, {what}: dos_jax {dos_s * 1e3:.1f} ms, upstream {up_s * 1e3:.1f} ms, "
          f"x{up_s / dos_s:.2f} (host-side point set {host_s * 1e3:.0f} ms; rel diff {rel:.1e})")
  return dict(scene=scene, grid_size=grid_size, repeats=repeats, jax=jax.__version__, cpu_count=os.cpu_count(),
              device=str(jax.devices()[0].device_kind), torch_device=device, rows=rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scene", default=pointcept_parity.DEFAULT_SCENE)
  parser.add_argument("--grid-size", type=float, default=0.1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--train", action="store_true", help="time forward+backward (upstream: GPU only)")
  parser.add_argument("--device", default="cpu", help="torch device of upstream (cuda on a GPU machine)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "pointcept.json"))
  args = parser.parse_args(argv)
  result = run(args.scene, args.grid_size, args.repeats, args.train, args.device)
  fileio.write_json(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
