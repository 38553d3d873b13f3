"""dos_jax.compile_only: the environment for compiling for a TPU on a machine without one."""

import ast
import os

from dos_jax import compile_only


def test_sets_defaults_keeps_user_values_and_drops_worker_hostnames(monkeypatch):
  for key in compile_only.ENVIRONMENT:
    monkeypatch.delenv(key, raising=False)
  monkeypatch.setenv("TPU_MIN_LOG_LEVEL", "0")  # a user's own value wins
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
  compile_only.use_compile_only_tpu()
  assert os.environ["JAX_PLATFORMS"] == "cpu" and os.environ["TPU_SKIP_MDS_QUERY"] == "1"
  assert os.environ["ALLOW_MULTIPLE_LIBTPU_LOAD"] == "1"
  assert os.environ["TPU_MIN_LOG_LEVEL"] == "0"
  assert "TPU_WORKER_HOSTNAMES" not in os.environ


def test_imports_nothing_that_could_start_jax():
  """It must run before JAX is imported, so it may import only the standard library's os."""
  tree = ast.parse(open(compile_only.__file__).read())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert imported == {"os"}


def test_every_compile_only_entry_point_uses_it():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for path in (
      "launch/compile.py", "benchmarks/tpu_breakdown.py", "benchmarks/tpu_attention.py", "benchmarks/tpu_block.py",
      "benchmarks/tpu_gather_cost.py"):
    text = open(os.path.join(root, path)).read()
    assert text.index("compile_only.use_compile_only_tpu()") < text.index("from absl"), path
    assert "TPU_SKIP_MDS_QUERY" not in text, path  # one place sets the environment
