"""Upstream PT-v3m2 (Sonata's backbone) checkpoints in dos_jax: load, compare with upstream on whole natural
ScanNet scans, export back.

Tolerance 1e-4 relative (max |dos - upstream| / max |upstream| over all rows and channels): both sides compute in
float32 (eps 6e-8); the features pass through ~10-20 float32 layers whose sums run over <= 27 x C (CPE) or P
(attention) terms, so rounding grows to ~1e-6 (measured 4e-7 .. 1e-6); 1e-4 leaves room for other BLAS orders,
while a wrong patch, order, depth or layout gives errors of order 1 (e.g. 0.33 relative at stage 2 before the
fixes).
"""

import numpy as np
import pytest

from dos_jax.interop import pointcept
from tests.interop import upstream

pytestmark = pytest.mark.system

TOL = 1e-4


@pytest.fixture(scope="module")
def torch():
  return upstream.modules()[0]


def test_trainer_layout_checkpoint_matches_upstream_and_round_trips(torch, tmp_path):
  """3 stages, patch 48, 4 blocks at stage 2 (all four orders), whole scans at 0.1 m and 0.08 m (scene0003_00 at
  0.08 m has largest grid coordinate 15 = 2^4 - 1 at stage 2, where the serialization depth rule matters)."""
  channels, depths, heads, patch = (8, 16, 16), (1, 1, 4), (1, 2, 2), 48
  student = upstream.build("PT-v3m2", channels, depths, heads, patch, seed=1)
  teacher = upstream.build("PT-v3m2", channels, depths, heads, patch, seed=2)
  sd = {f"module.student.backbone.{k}": v for k, v in upstream.state_dict(student).items()}
  sd.update({f"module.teacher.backbone.{k}": v for k, v in upstream.state_dict(teacher).items()})
  sd["module.student.head.weight"] = torch.zeros(4, 8)  # heads beside the backbone are not the encoder's
  path = str(tmp_path / "sonata_like.pth")
  torch.save({"state_dict": sd, "epoch": 3}, path)
  params, cfg = pointcept.load_checkpoint(path, enc_num_head=heads, enc_patch_size=patch)
  t_params, _ = pointcept.load_checkpoint(path, branch="teacher", enc_num_head=heads, enc_patch_size=patch)
  assert cfg["type"] == "PT-v3m2" and cfg["enc_depths"] == depths and cfg["mask_token"]
  assert np.abs(params["enc0"]["block0"]["attn"]["qkv"]["kernel"]
                - t_params["enc0"]["block0"]["attn"]["qkv"]["kernel"]).max() > 0.1
  for name, grid in (("scene0000_00", 0.1), ("scene0003_00", 0.08)):
    coord, feat, gc = upstream.scan(name, grid)
    want = upstream.features(student, coord, feat, gc)
    got = pointcept.point_features(params, cfg, coord, feat, gc)
    assert got.shape == want.shape == (len(coord), sum(channels))
    err = upstream.rel(got, want)
    print(f"{name} @ {grid} m: {len(coord)} points, rel {err:.2e}")
    assert err <= TOL, (name, grid, err)
  # Round trip: to_state_dict -> upstream load_state_dict(strict=True) -> identical outputs; and back exactly.
  exported = pointcept.to_state_dict(params, cfg)
  fresh = upstream.build("PT-v3m2", channels, depths, heads, patch, seed=9)
  fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in exported.items()}, strict=True)
  np.testing.assert_array_equal(upstream.features(upstream.prepare(fresh), coord, feat, gc), want)
  again, _ = pointcept.from_state_dict(exported, enc_num_head=heads, enc_patch_size=patch)
  for a, b in zip(jax_leaves(again), jax_leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_plain_layout_five_stages_non_power_of_two_patch(torch, tmp_path):
  """5 stages, patch 100, two orders (upstream's constructor default), LayerScale, a whole scan at 0.04 m
  (largest grid coordinates 15 and 7 = 2^k - 1 at stages 3 and 4)."""
  channels, depths, heads, patch, order = (8, 8, 16, 16, 16), (1, 1, 1, 2, 1), (1, 1, 2, 2, 2), 100, ("z", "hilbert")
  model = upstream.build("PT-v3m2", channels, depths, heads, patch, order=order, seed=3, layer_scale=True)
  path = str(tmp_path / "plain.pth")
  torch.save(upstream.state_dict(model), path)
  params, cfg = pointcept.load_checkpoint(path, enc_num_head=heads, enc_patch_size=patch, order=order)
  assert cfg["layer_scale"] and np.abs(params["enc3"]["block1"]["ls2"]).max() > 0.05
  coord, feat, gc = upstream.scan("scene0003_00", 0.04)
  err = upstream.rel(pointcept.point_features(params, cfg, coord, feat, gc), upstream.features(model, coord, feat, gc))
  print(f"scene0003_00 @ 0.04 m: {len(coord)} points, rel {err:.2e}")
  assert err <= TOL


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
