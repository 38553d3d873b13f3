"""The two test tiers stay split: every test that starts another process is marked `system`.

Fast tier: `python -m pytest -m "not system"` (in-process, seconds each). System tier: `-m system` (subprocess
launches, multi-process jobs, the gpu.sh dry run, fuzzing, upstream parity, slow compiles). A test starts a process
when its body, a fixture it uses, or a helper it calls (module-level functions of its own file or of a `tests`
helper module, followed transitively) touches `subprocess`, `multiprocessing`, `os.fork` / `os.system` /
`os.spawn*` / `os.exec*` / `os.popen` or a process pool. Static (AST) reading: a second, no JAX.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
_PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "pexpect"}
_OS_PROCESS_CALLS = ("fork", "forkpty", "system", "popen", "spawn", "exec", "posix_spawn")
_POOL_NAMES = {"ProcessPoolExecutor", "Popen"}
# The fast tier keeps one end-to-end training run with a resume (in-process): the tier must not lose it.
FAST_END_TO_END = [("tests/train/test_loop.py", "test_straight_run_writes_metrics_checkpoints_and_config"),
                   ("tests/train/test_loop.py", "test_resume_equals_straight_run")]


def _is_system_mark(node) -> bool:
  """`pytest.mark.system` (possibly called, e.g. `pytest.mark.system(...)`)."""
  if isinstance(node, ast.Call):
    node = node.func
  return isinstance(node, ast.Attribute) and node.attr == "system" and ast.unparse(node.value) == "pytest.mark"


def _module_marked(tree) -> bool:
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
      values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
      if any(_is_system_mark(v) for v in values):
        return True
  return False


class _Module:
  """One parsed test or helper file: its process-module aliases, functions and imported `tests` helpers."""

  def __init__(self, path):
    self.path = path
    self.tree = ast.parse(open(path).read(), path)
    self.process_names = set()   # local names bound to a process module or a process-starting callable
    self.helpers = {}            # local name -> (tests module path, attribute or None)
    for node in ast.walk(self.tree):
      if isinstance(node, ast.Import):
        for a in node.names:
          if a.name.split(".")[0] in _PROCESS_MODULES:
            self.process_names.add((a.asname or a.name).split(".")[0])
          elif a.name.startswith("tests."):
            self.helpers[a.asname or a.name] = (_module_path(a.name), None)
      elif isinstance(node, ast.ImportFrom) and node.module:
        top = node.module.split(".")[0]
        for a in node.names:
          local = a.asname or a.name
          if top in _PROCESS_MODULES or (node.module == "os" and a.name.startswith(_OS_PROCESS_CALLS)):
            self.process_names.add(local)
          elif a.name in _POOL_NAMES and top == "concurrent":
            self.process_names.add(local)
          elif top == "tests":
            sub = _module_path(f"{node.module}.{a.name}")
            self.helpers[local] = (sub, None) if os.path.exists(sub) else (_module_path(node.module), a.name)
    self.functions = {}
    for node in self.tree.body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        self.functions[node.name] = node
      elif isinstance(node, ast.ClassDef):
        for item in node.body:
          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions[f"{node.name}.{item.name}"] = item

  def starts_process_directly(self, fn) -> bool:
    for node in ast.walk(fn):
      if isinstance(node, ast.Name) and node.id in self.process_names:
        return True
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "os" and node.attr.startswith(_OS_PROCESS_CALLS):
          return True
        if node.attr in _POOL_NAMES:
          return True
    return False

  def references(self, fn):
    """(local function names, (helper path, function name) pairs, fixture names) that `fn` refers to."""
    local, foreign = set(), set()
    for node in ast.walk(fn):
      if isinstance(node, ast.Name):
        if node.id in self.functions:
          local.add(node.id)
        elif node.id in self.helpers and self.helpers[node.id][1]:
          foreign.add(self.helpers[node.id])
      elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in self.helpers:
        path, attr = self.helpers[node.value.id]
        if attr is None:
          foreign.add((path, node.attr))
    fixtures = {a.arg for a in fn.args.args}
    for dec in fn.decorator_list:
      if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.usefixtures":
        fixtures |= {a.value for a in dec.args if isinstance(a, ast.Constant)}
    return local, foreign, fixtures


def _module_path(dotted):
  path = os.path.join(ROOT, *dotted.split("."))
  return os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"


_CACHE = {}


def _parsed(path):
  if path not in _CACHE:
    _CACHE[path] = _Module(path) if os.path.exists(path) else None
  return _CACHE[path]


def _conftests(path):
  """The conftest.py files whose fixtures a test in `path` sees (its folder and every folder above, to tests/)."""
  d, out = os.path.dirname(path), []
  while d.startswith(TESTS):
    if os.path.exists(os.path.join(d, "conftest.py")):
      out.append(os.path.join(d, "conftest.py"))
    d = os.path.dirname(d)
  return out


def _starts_process(path, name, seen=None) -> bool:
  """Whether function `name` of file `path` (or anything it reaches) starts a process."""
  seen = set() if seen is None else seen
  if (path, name) in seen:
    return False
  seen.add((path, name))
  module = _parsed(path)
  if module is None or name not in module.functions:
    return False
  fn = module.functions[name]
  if module.starts_process_directly(fn):
    return True
  local, foreign, fixtures = module.references(fn)
  targets = {(path, n) for n in local} | foreign
  for fixture in fixtures:
    for where in [path] + _conftests(path):
      found = _parsed(where)
      if found is not None and fixture in found.functions:
        targets.add((where, fixture))
        break
  return any(_starts_process(p, n, seen) for p, n in targets)


def _test_files():
  for d, _, files in os.walk(TESTS):
    for f in sorted(files):
      if f.startswith("test_") and f.endswith(".py"):
        yield os.path.join(d, f)


def _tests(path):
  """(name, marked system) for every test function of a file."""
  module = _parsed(path)
  file_marked = _module_marked(module.tree)
  for name, fn in module.functions.items():
    if name.split(".")[-1].startswith("test"):
      yield name, file_marked or any(_is_system_mark(d) for d in fn.decorator_list)


def test_every_test_that_starts_a_process_is_marked_system():
  unmarked = [f"{os.path.relpath(path, ROOT)}::{name}" for path in _test_files() for name, marked in _tests(path)
              if not marked and _starts_process(path, name)]
  assert not unmarked, ("these tests start a process but are not marked `system` (add `@pytest.mark.system`, or "
                        "`pytestmark = pytest.mark.system` for the whole file): " + ", ".join(unmarked))


def test_the_detector_sees_direct_helper_and_fixture_launches(tmp_path):
  """The scanner itself: a launch through a helper, a fixture and a `tests` helper module is found; a marked test
  and a test that only mentions a process in a string are not reported."""
  src = tmp_path / "test_probe.py"
  src.write_text(
      "import subprocess\nimport pytest\nfrom tests.test_tiers import ROOT\n"
      "def _helper():\n  return subprocess.run(['true'])\n"
      "@pytest.fixture\ndef launched():\n  return _helper()\n"
      "def test_direct():\n  subprocess.run(['true'])\n"
      "def test_via_helper():\n  _helper()\n"
      "def test_via_fixture(launched):\n  pass\n"
      "@pytest.mark.system\ndef test_marked():\n  _helper()\n"
      "def test_string_only():\n  assert 'subprocess' in ROOT + 'subprocess'\n")
  found = {name: _starts_process(str(src), name) for name, _ in _tests(str(src))}
  assert found == {"test_direct": True, "test_via_helper": True, "test_via_fixture": True, "test_marked": True,
                   "test_string_only": False}
  assert dict(_tests(str(src)))["test_marked"] and not dict(_tests(str(src)))["test_direct"]
  fork = tmp_path / "test_fork.py"
  fork.write_text("import os\nimport multiprocessing as mp\npytestmark = [pytest.mark.system]\n"
                  "def test_fork():\n  os.fork()\ndef test_pool():\n  mp.Pool(2)\n")
  assert all(_starts_process(str(fork), n) for n in ("test_fork", "test_pool"))
  assert all(marked for _, marked in _tests(str(fork)))


@pytest.mark.parametrize("path,name", FAST_END_TO_END)
def test_the_fast_tier_keeps_an_end_to_end_run_and_a_resume(path, name):
  marked = dict(_tests(os.path.join(ROOT, path)))
  assert name in marked, f"{path}::{name} is gone: name the fast tier's end-to-end test here instead"
  assert not marked[name], f"{path}::{name} is the fast tier's end-to-end check; keep it out of `system`"


def test_the_system_marker_is_registered_and_strict(pytestconfig):
  """pyproject.toml registers `system` and turns on --strict-markers, so a misspelt tier mark is an error."""
  assert any(m.startswith("system:") for m in pytestconfig.getini("markers"))
  assert pytestconfig.getoption("strict_markers")
