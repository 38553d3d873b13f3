"""Test set-up: 8 host CPU devices (for sharding tests) and a persistent compile cache, before JAX starts.

Optional material and its skip policy. Three things are beside the checkout in CI but not in a user's bare clone or
a minimal environment: `../shared` (the real scans in `../shared/data`, the upstream code in
`../shared/reference`), torch (the PyTorch parity reference) and libtpu (the TPU compiler of `launch.compile`,
in its own environment: the checkout's .venv-tpu, which the README's test command installs, or $DOS_TPU_PYTHON). A test that needs one asks for it
through `require_shared(...)` / `require_torch()` / `require_tpu_python()` (or the `shared_data` fixture /
`needs_data` marker): when it is absent the test is skipped with a one-line reason, except under CI=true (CI
always has all three), where the absence is a failure, so a broken CI set-up can never hide tests behind skips.
"""

import os
import sys

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
SHARED_DATA = os.path.join(SHARED, "data")


def in_ci() -> bool:
  """CI=true (or 1/yes), as CI services and .ci/run's caller set it."""
  return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _absent(reason: str):
  if in_ci():
    pytest.fail(f"CI=true but {reason}", pytrace=False)
  pytest.skip(reason, allow_module_level=True)


def require_shared(*parts: str) -> str:
  """Absolute path of `../shared/<parts>`; skips (fails under CI=true) when it does not exist.

  Call it inside a test, or at module level to skip a whole file that reads nothing else.
  """
  path = os.path.join(SHARED, *parts)
  if not os.path.exists(path):
    _absent(f"{path} not found (../shared sits beside the checkout in CI, not in a bare clone)")
  return path


def require_torch():
  """The `torch` module; skips (fails under CI=true) when torch is not installed (requirements-dev.txt)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    _absent(f"torch is not installed ({e}); `pip install -r requirements-dev.txt` adds its CPU wheel")
  return torch


def require_tpu_python() -> str:
  """A Python interpreter that has libtpu (the TPU compiler, for `launch.compile`): this one when libtpu is
  importable here, else $DOS_TPU_PYTHON, else the checkout's `.venv-tpu` (the README's test command, which .ci/run
  runs, installs requirements-tpu.txt there). Skips (fails under CI=true) when there is none of them: libtpu is
  optional and lives in its own environment."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("libtpu") is not None:
    return sys.executable
  candidate = os.environ.get("DOS_TPU_PYTHON", "") or os.path.join(ROOT, ".venv-tpu", "bin", "python")
  if os.access(candidate, os.X_OK):
    return candidate
  _absent("libtpu is not installed here and $DOS_TPU_PYTHON names no interpreter "
          f"({candidate or 'unset'}); README 'Before you rent a pod' installs requirements-tpu.txt")


@pytest.fixture
def shared_data() -> str:
  """`../shared/data` (the real scans), or a skip / CI failure when absent."""
  return require_shared("data")


# Marks a test that reads ../shared/data: `@conftest.needs_data`.
needs_data = pytest.mark.usefixtures("shared_data")
