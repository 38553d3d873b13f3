"""The process environment for compiling for a TPU on a machine without one (libtpu in compile-only mode).

Call `use_compile_only_tpu()` before JAX is imported: JAX reads JAX_PLATFORMS when it is imported, and libtpu reads
the TPU_* variables when it loads. This module imports nothing from JAX so that it can run first. Existing values
win (setdefault), so a user can still override any of them.
"""

import os

ENVIRONMENT = {
    # JAX itself computes on the CPU; the TPU devices come from a topology description only.
    "JAX_PLATFORMS": "cpu",
    # No GCE metadata server to ask which TPU this is.
    "TPU_SKIP_MDS_QUERY": "1",
    # libtpu takes a machine-wide lock file (/tmp/libtpu_lockfile) so that two processes do not drive one TPU; a
    # compile-only process drives none, and two compiles at once (a user's, a test's) must not refuse each other.
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    # libtpu's warnings about the absent TPU are not actionable.
    "TPU_STDERR_LOG_LEVEL": "3",
    "TPU_MIN_LOG_LEVEL": "3",
}


def use_compile_only_tpu() -> None:
  """Sets the compile-only defaults in os.environ; drops TPU_WORKER_HOSTNAMES (with it set the process tries to
  join a real slice and stalls)."""
  for key, value in ENVIRONMENT.items():
    os.environ.setdefault(key, value)
  os.environ.pop("TPU_WORKER_HOSTNAMES", None)
