"""Upstream PT-v3m1 (supervised PTv3: 5x5x5 SubMConv3d stem + BatchNorm, BatchNorm in pooling) in dos_jax: eval
BatchNorm from the checkpoint's running statistics, compared with upstream on a whole natural ScanNet scan.
Tolerance 1e-4 relative, as in test_pointcept_sonata.py (float32 rounding ~1e-6 measured)."""

import numpy as np
import pytest

from dos_jax.interop import pointcept
from tests.interop import upstream

pytestmark = pytest.mark.system

TOL = 1e-4


def test_m1_plain_and_trainer_layouts_match_upstream(tmp_path):
  torch = upstream.modules()[0]
  channels, depths, heads, patch = (8, 16, 16, 16), (1, 1, 4, 1), (1, 2, 2, 2), 37
  model = upstream.build("PT-v3m1", channels, depths, heads, patch, seed=4)
  sd = upstream.state_dict(model)
  plain, trainer = str(tmp_path / "m1.pth"), str(tmp_path / "m1_trainer.pth")
  torch.save(sd, plain)
  torch.save({"state_dict": {f"module.backbone.{k}": v for k, v in sd.items()}, "epoch": 1}, trainer)
  params, cfg = pointcept.load_checkpoint(plain, enc_num_head=heads, enc_patch_size=patch)
  params_t, cfg_t = pointcept.load_checkpoint(trainer, enc_num_head=heads, enc_patch_size=patch)
  assert cfg == cfg_t and cfg["type"] == "PT-v3m1" and not cfg["mask_token"]
  # BatchNorm weights land in BatchNorm modules (their names upstream are those of the LayerNorms of PT-v3m2).
  assert set(params["embedding"]) == {"kernel", "batch_norm"}
  assert set(params["enc1"]["down"]) == {"proj", "batch_norm"}
  np.testing.assert_array_equal(params["enc1"]["down"]["batch_norm"]["var"],
                                sd["enc.enc1.down.norm.0.running_var"].numpy())
  coord, feat, gc = upstream.scan("scene0004_00", 0.02)
  want = upstream.features(model, coord, feat, gc)
  got = pointcept.point_features(params_t, cfg_t, coord, feat, gc)
  err = upstream.rel(got, want)
  print(f"scene0004_00 @ 0.02 m: {len(coord)} points, rel {err:.2e}")
  assert err <= TOL
  exported = pointcept.to_state_dict(params, cfg)
  fresh = upstream.build("PT-v3m1", channels, depths, heads, patch, seed=8)
  fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in exported.items()}, strict=True)
  np.testing.assert_array_equal(upstream.features(upstream.prepare(fresh), coord, feat, gc), want)


def test_m1_is_evaluation_only():
  from dos_jax import variants  # pylint: disable=g-import-not-at-top
  from dos_jax.models import encoder  # pylint: disable=g-import-not-at-top
  from dos_jax.models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
  model = encoder.build(ModelSpec(architecture=variants.Architecture(
      type="PT-v3m1", channels=(8,), depths=(1,), heads=(1,), patch_sizes=(8,), orders=variants.ORDERS,
      mask_token=False, layer_scale=False)))
  points = pointcept._dummy_points(dict(enc_channels=(8,), in_channels=6, type="PT-v3m1"))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="evaluation mode only"):
    model.init({"params": __import__("jax").random.key(0)}, points, train=True)
