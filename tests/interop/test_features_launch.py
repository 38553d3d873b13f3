"""`python -m launch.features`: an upstream checkpoint's features on a real scan as a PCA-to-RGB picture; and the
PCA colouring itself on features of known structure."""

import json

import numpy as np
import pytest

from dos_jax.eval import plots
from launch import features
from tests import conftest
from tests.interop import upstream


def test_pca_rgb_recovers_the_dominant_directions():
  """Features = 3 latent signals of decreasing variance mixed into 32 channels + noise: each PCA colour channel
  is (up to sign) the latent of its rank, so |correlation| ~ 1, and colours lie in [0, 1]."""
  r = np.random.default_rng(0)
  latent = r.standard_normal((5000, 3)) * np.array([5.0, 3.0, 1.5])
  mix = np.linalg.qr(r.standard_normal((32, 3)))[0].T  # orthonormal rows
  feat = latent @ mix + 0.05 * r.standard_normal((5000, 32))
  rgb = plots.pca_rgb(feat, max_fit_rows=2000)
  assert rgb.shape == (5000, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
  for k in range(3):
    assert abs(np.corrcoef(rgb[:, k], latent[:, k])[0, 1]) > 0.95, k


@pytest.mark.system
def test_features_picture_of_a_checkpoint(tmp_path):
  torch = upstream.modules()[0]
  model = upstream.build("PT-v3m2", (8, 16), (1, 1), (1, 1), 64, seed=2)
  path = str(tmp_path / "ckpt.pth")
  torch.save({"state_dict": {f"module.student.backbone.{k}": v for k, v in upstream.state_dict(model).items()}},
             path)
  scene = conftest.require_shared("data", "scannet_votenet50k", "scene0001_00")
  out = tmp_path / "pics"
  assert features.main(["--checkpoint", path, "--scene", scene, "--out", str(out), "--grid-size", "0.1",
                        "--enc-num-head", "1,1", "--enc-patch-size", "64"]) == 0
  summary = json.loads((out / "features.json").read_text())
  assert summary["width"] == 24 and summary["points"] > 5000 and summary["type"] == "PT-v3m2"
  png = (out / "features.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000  # a real picture, not an empty canvas
