"""`python -m launch.parity --against pointcept --checkpoint PATH`: per-stage report, exit 0 within tolerance and
1 when dos_jax differs (the old partial-patch rule patched back in: masked slots instead of upstream's filling)."""

import json

import pytest

from launch import parity
from tests import conftest
from tests.interop import upstream

pytestmark = pytest.mark.system


def test_parity_against_pointcept_checkpoint_exit_codes(tmp_path, monkeypatch):
  torch = upstream.modules()[0]
  model = upstream.build("PT-v3m2", (8, 16), (1, 2), (1, 2), 40, seed=7)
  path = str(tmp_path / "ckpt.pth")
  torch.save({"model": upstream.state_dict(model)}, path)
  scene = conftest.require_shared("data", "scannet_votenet50k", "scene0001_00")
  report_path = tmp_path / "report.json"
  args = ["--against", "pointcept", "--checkpoint", path, "--scene", scene, "--grid-size", "0.1",
          "--enc-num-head", "1,2", "--json", str(report_path)]
  assert parity.main(args + ["--enc-patch-size", "40"]) == 0
  report = json.loads(report_path.read_text())
  assert set(report["stages"]) == {"stage0", "stage1"} and report["ok"]
  assert report["upcast"]["max_rel"] <= 1e-4 and report["points"] > 5000
  from dos_jax.interop import pointcept  # pylint: disable=g-import-not-at-top
  from dos_jax.models import blocks  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(blocks, "fill_partial_patch", lambda xs, vs, p, ss=None: (xs, vs, ss))
  pointcept._features_fn.cache_clear()  # pylint: disable=protected-access
  assert parity.main(args + ["--enc-patch-size", "40"]) == 1
  report = json.loads(report_path.read_text())
  assert not report["ok"] and report["upcast"]["max_rel"] > 1e-3
  pointcept._features_fn.cache_clear()  # pylint: disable=protected-access
