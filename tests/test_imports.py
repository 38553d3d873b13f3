"""Imports point one way: no import cycle between dos_jax modules, dos_jax never imports configs/ or launch/, and
the packages respect the data flow (data -> batching -> models -> objective -> eval -> schema -> train).

Static (AST) reading of every file of the package, imports inside functions and `importlib.import_module("...")`
string literals included, so it runs on a bare clone in a second and fails on a lazy import that hides a cycle.
"""

import ast
import os
import re
import sys

ROOT = _REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Rank of each top-level part of dos_jax: a module may import only parts of lower or equal rank.
# Rank 0 holds what several layers share and that imports nothing above it: errors, io, the choice lists, the
# encoder size table (`variants`: the batching needs its stage count and patch sizes, the model its widths) and
# the run directory's checkpoints (`checkpoint`: the trainer writes them, the probe reads them). `specs` (the typed
# specs decoded from a validated config) imports only models.spec, so eval and train may both take specs.
RANKS = {"errors": 0, "io": 0, "compile_report": 0, "hlo_costs": 0, "compile_only": 0, "choices": 0, "variants": 0, "checkpoint": 0, "data": 1, "batching": 2,
         "models": 3, "objective": 4, "segments": 4, "sinkhorn_matmul": 4, "specs": 4, "torch_ref": 4, "eval": 5, "schema": 6,
         "train": 7, "interop": 7}
# Wrong-way imports that exist, named so that none is added silently (an entry that no longer exists fails too).
KNOWN_WRONG_WAY = set()


def _modules():
  mods = {}
  for d, _, files in os.walk(os.path.join(ROOT, "dos_jax")):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(d, f)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
  return mods


def _imports(path):
  src = open(path).read()
  names = []
  for node in ast.walk(ast.parse(src)):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
  return names + re.findall(r"import_module\(\s*['\"]([\w.]+)['\"]", src)


def _graph():
  mods = _modules()
  edges = {m: {t for t in _imports(p) if t in mods and t != m} for m, p in mods.items()}
  return mods, edges


def _part(module):
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def test_dos_jax_never_imports_configs_or_launch():
  bad = [f"{m} imports {t}" for m, p in _modules().items() for t in _imports(p)
         if t.split(".")[0] in ("configs", "launch")]
  assert not bad, bad


def test_no_import_cycles():
  _, edges = _graph()

  def real(a, b):  # a package and its own submodules (re-exports) are not a cycle
    return not (b.startswith(a + ".") or a.startswith(b + "."))

  state, stack, cycles = {}, [], []

  def visit(u):
    state[u] = 1
    stack.append(u)
    for v in sorted(edges[u]):
      if not real(u, v):
        continue
      if state.get(v) == 1:
        cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
      elif not state.get(v):
        visit(v)
    stack.pop()
    state[u] = 2

  for m in sorted(edges):
    if not state.get(m):
      visit(m)
  assert not cycles, cycles


def test_packages_follow_the_data_flow():
  mods, edges = _graph()
  unknown = sorted({_part(m) for m in mods if _part(m) and _part(m) not in RANKS})
  assert not unknown, f"new top-level part(s) {unknown}: give them a rank in RANKS"
  wrong = {f"{m} imports {t}" for m, ts in edges.items() for t in ts
           if _part(m) and _part(t) and RANKS[_part(t)] > RANKS[_part(m)]}
  known = KNOWN_WRONG_WAY if ROOT == _REPO else set()
  assert wrong - known == set(), sorted(wrong - known)
  assert known - wrong == set(), f"fixed, remove from KNOWN_WRONG_WAY: {sorted(known - wrong)}"


def test_the_checker_sees_cycles_and_wrong_way_imports(tmp_path, monkeypatch):
  """The checks above are not vacuous: a two-module cycle through importlib and a wrong-way import are found."""
  pkg = tmp_path / "dos_jax"
  (pkg / "data").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "data" / "__init__.py").write_text("")
  (pkg / "data" / "a.py").write_text("from dos_jax.data import b\nfrom dos_jax.train import loop\n")
  (pkg / "data" / "b.py").write_text("import importlib\nX = importlib.import_module('dos_jax.data.a')\n")
  (pkg / "train").mkdir()
  (pkg / "train" / "__init__.py").write_text("")
  (pkg / "train" / "loop.py").write_text("import configs.common\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
  for check in (test_no_import_cycles, test_packages_follow_the_data_flow, test_dos_jax_never_imports_configs_or_launch):
    try:
      check()
    except AssertionError:
      continue
    raise AssertionError(f"{check.__name__} missed the planted violation")
