"""`python -m launch.parity`: exits 0 with every component within tolerance, 1 when a tolerance is exceeded."""

import json

import pytest

from tests import conftest

conftest.require_torch()

from dos_jax.torch_ref import parity as parity_lib  # pylint: disable=g-import-not-at-top
from launch import parity  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.system

OBJECTIVE = ["objective/zipf_prior", "objective/zipf_sinkhorn", "objective/softmap", "objective/softmap_kl",
             "objective/dos_loss", "objective/dos_loss_clustering"]
ENCODER = ["encoder/layer_norm", "encoder/mlp", "encoder/cpe", "encoder/attention", "encoder/attention_ragged",
           "encoder/grid_pooling", "encoder/embedding", "encoder/block", "encoder/encoder"]


def test_parity_float64_all_components_pass(tmp_path, capsys):
  path = tmp_path / "parity.json"
  code = parity.main(["--dtype", "float64", "--json", str(path)])
  report = json.loads(path.read_text())
  assert code == 0, report["failures"]
  assert report["ok"] and not report["failures"]
  per = report["results"]["float64"]
  assert sorted(per) == sorted(OBJECTIVE + ENCODER)
  for comp in OBJECTIVE + ["encoder/mlp"]:
    for name, check in per[comp].items():
      assert check["max_rel"] <= 1e-10, (comp, name)
  for comp in ENCODER:
    assert set(per[comp]) == {"forward", "grad_input", "grad_params"}
  # stdout holds the same JSON report.
  assert json.loads(capsys.readouterr().out)["ok"]


def test_parity_fails_loudly_when_a_tolerance_is_exceeded(monkeypatch, tmp_path):
  # float64 objective differences are ~1e-15 relative; a 1e-18 tolerance must fail with exit code 1 (float64:
  # the compiled functions of the test above come from the persistent compile cache).
  monkeypatch.setitem(parity_lib.TOLERANCES, "objective", {"float32": 1e-18, "float64": 1e-18})
  path = tmp_path / "parity.json"
  code = parity.main(["--dtype", "float64", "--components", "objective", "--json", str(path)])
  report = json.loads(path.read_text())
  assert code == 1 and not report["ok"]
  assert any("float64:objective/softmap:" in f for f in report["failures"])
