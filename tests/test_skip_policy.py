"""tests/conftest.py's policy for optional material: skip with a reason in a bare clone, fail under CI=true."""

import sys

import pytest

from tests import conftest


def test_missing_shared_skips_with_a_reason(monkeypatch, tmp_path):
  monkeypatch.delenv("CI", raising=False)
  monkeypatch.setattr(conftest, "SHARED", str(tmp_path / "no_shared"))
  with pytest.raises(pytest.skip.Exception, match="no_shared/data/scans not found"):
    conftest.require_shared("data", "scans")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_shared_fails_under_ci(monkeypatch, tmp_path, value):
  monkeypatch.setenv("CI", value)
  monkeypatch.setattr(conftest, "SHARED", str(tmp_path / "no_shared"))
  with pytest.raises(pytest.fail.Exception, match="CI=true but .*no_shared/data not found"):
    conftest.require_shared("data")


def test_present_shared_is_returned(monkeypatch, tmp_path):
  (tmp_path / "data").mkdir()
  monkeypatch.setattr(conftest, "SHARED", str(tmp_path))
  assert conftest.require_shared("data") == str(tmp_path / "data")


def test_missing_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="torch is not installed"):
    conftest.require_torch()
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match="CI=true but torch is not installed"):
    conftest.require_torch()


def test_missing_libtpu(monkeypatch, tmp_path):
  import importlib.util
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  monkeypatch.setenv("DOS_TPU_PYTHON", str(tmp_path / "no_python"))
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="libtpu is not installed"):
    conftest.require_tpu_python()
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match="CI=true but libtpu is not installed"):
    conftest.require_tpu_python()
  monkeypatch.setenv("DOS_TPU_PYTHON", sys.executable)
  assert conftest.require_tpu_python() == sys.executable
