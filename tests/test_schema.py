"""The gate (`dos_jax.schema.validate`): every bad value names its key and range, cross-key rules, the effective
config it returns, and the schema <-> code agreement (every key read is in the schema, every schema key is read).

No JAX here: the gate runs on the host before anything compiles (it must not even import JAX).
"""

import ast
import importlib
import os
import subprocess
import sys

import pytest

from dos_jax import schema
from dos_jax import variants
from dos_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke():
  return importlib.import_module("configs.synthetic_tiny").get_config("smoke")


# (dotted key, bad value, words the message must contain besides the key)
BAD_VALUES = [
    ("mask_ratio", 1.0, "[0.0, 1.0)"),
    ("mask_ratio", -0.1, "[0.0, 1.0)"),
    ("zipf_alpha", -0.5, "[0.0, inf)"),
    ("zipf_alpha", float("nan"), "finite"),
    ("num_prototypes", 0, "[1, inf)"),
    ("num_prototypes", 64.0, "integer"),
    ("supervision", "masked", "observable"),
    ("normalization", "sinkhorn", "clustering"),
    ("nonfinite", "ignore", "skip"),
    ("cross_view", 1, "bool"),
    ("total_steps", 0, "[1, inf)"),
    ("total_steps", "100", "integer"),
    ("log_every", 0, "[1, inf)"),
    ("student_temp", 0.0, "(0.0, inf)"),
    ("optim.lr", -1e-3, "(0.0, inf)"),
    ("optim.b2", 1.0, "[0.0, 1.0)"),
    ("data.format", "ply", "pointcept"),
    ("data.grid_size", 0.0, "(0.0, inf)"),
    ("data.feat_keys", ("coord", "rgb"), "color"),
    ("data.crop_ratio", 1.5, "(0.0, 1.0]"),
    ("model.variant", "huge", "tiny"),
    ("model.dtype", "float16", "bfloat16"),
    ("probe.train_fraction", 1.0, "(0.0, 1.0)"),
    ("probe.capacity", -1, "None or an integer in [1, inf)"),
    ("data.num_val_scenes", 0, "None or an integer in [1, inf)"),
    ("data.seed", -1, "None or an integer in [0, 2147483647]"),
    ("data.segment_key", 20, "None or a string"),
    ("data.cross_radius", 0.0, "(0.0, inf)"),
    ("data.packed_capacity", (0,), "positive integers"),
]


@pytest.mark.parametrize("key,value,words", BAD_VALUES)
def test_bad_value_raises_config_error_naming_key_and_range(key, value, words):
  c = _smoke()
  *groups, leaf = key.split(".")
  node = c
  for g in groups:
    node = node[g]
  with node.ignore_type():  # the config file (not the command line) could hold any type
    node[leaf] = value
  with pytest.raises(ConfigError) as e:
    schema.validate(c, num_devices=1)
  assert f"config.{key}" in str(e.value)
  assert words in str(e.value)


def test_capacity_must_be_whole_patches():
  c = _smoke()
  c.data.capacity = 1000  # tiny variant: patch 64
  with pytest.raises(ConfigError, match=r"config\.data\.capacity=1000.*patch size 64.*960 or 1024"):
    schema.validate(c)
  c = _smoke()
  c.model.variant = "base"  # patch 1024 does not divide 1536 (> one patch)
  c.data.capacity = 1536
  with pytest.raises(ConfigError, match=r"config\.data\.capacity=1536"):
    schema.validate(c)
  c.data.capacity = 512  # at most one patch is fine: the stage is a single patch
  c.data.student_capacity = 256
  schema.validate(c)


def test_student_capacity_at_most_teacher_capacity():
  c = _smoke()
  c.data.student_capacity = 2 * c.data.capacity
  with pytest.raises(ConfigError, match=r"config\.data\.student_capacity"):
    schema.validate(c)


def test_batch_size_must_split_over_devices():
  c = _smoke()
  c.batch_size = 6
  schema.validate(c, num_devices=3)
  with pytest.raises(ConfigError, match=r"config\.batch_size=6.*4 devices.*e\.g\. 4 or 8"):
    schema.validate(c, num_devices=4)


def test_disk_formats_need_a_root():
  c = _smoke()
  c.data.format = "pointcept"
  with pytest.raises(ConfigError, match=r"config\.data\.root is empty"):
    schema.validate(c)
  c.data.root = "/some/where"
  schema.validate(c)


def test_a_data_root_with_the_synthetic_format_stops_at_the_gate():
  """`--config.data.root=PATH` without `--config.data.format=pointcept` would train on synthetic scenes for the
  whole run: the gate names the key instead."""
  c = _smoke()
  c.data.root = "/data/scannet"
  with pytest.raises(ConfigError, match=r"config\.data\.root='/data/scannet' is set but data\.format='synthetic'"):
    schema.validate(c)


def test_cross_view_needs_two_views():
  c = _smoke()
  c.data.num_views = 3
  with pytest.raises(ConfigError, match=r"config\.data\.num_views=3"):
    schema.validate(c)
  c.cross_view = False
  schema.validate(c)


def test_unknown_keys_are_named_with_a_suggestion():
  c = _smoke()
  c.zipf_alpah = 1.6
  with pytest.raises(ConfigError, match=r"config\.zipf_alpah: unknown key\. Did you mean 'zipf_alpha'"):
    schema.validate(c)
  c = _smoke()
  c.data.grid = 0.1
  with pytest.raises(ConfigError, match=r"config\.data\.grid: unknown key\. Did you mean 'data\.grid_size'"):
    schema.validate(c)


def test_missing_key_is_named():
  c = _smoke()
  del c.optim["clip_norm"]
  with pytest.raises(ConfigError, match=r"config\.optim\.clip_norm: missing"):
    schema.validate(c)


def test_ema_momentum_must_rise():
  c = _smoke()
  c.ema_momentum_start, c.ema_momentum_end = 0.999, 0.99
  with pytest.raises(ConfigError, match=r"config\.ema_momentum_start"):
    schema.validate(c)


def test_data_parallel_devices():
  c = _smoke()  # batch_size 2
  assert schema.data_parallel_devices(c, available=2) == 2
  c.num_devices = 1
  assert schema.data_parallel_devices(c, available=8) == 1
  c.num_devices = 4
  with pytest.raises(ConfigError, match=r"config\.num_devices=4: only 2 devices"):
    schema.data_parallel_devices(c, available=2)
  c.num_devices = 0
  with pytest.raises(ConfigError, match=r"config\.batch_size=2: must be a multiple of the 8 devices"):
    schema.data_parallel_devices(c, available=8)


@pytest.mark.parametrize("key,value,words", [
    ("supervision", "everything", "token_jitter"),
    ("data.views", "triplicate", "independent"),
    ("data.worker_backend", "fibers", "process"),
    ("data.kind", "forest", "longtail"),
    ("data.overflow", "grow", "downsample"),
    ("data.dataset", "kitti", "semantickitti"),
    ("data.num_val_scenes", 0, "[1, inf)"),
    ("data.num_points", 0, "None or"),
    ("model.attention", "flash", "cudnn"),
    ("probe.capacity", -1, "None or"),
])
def test_choices_and_optional_keys(key, value, words):
  test_bad_value_raises_config_error_naming_key_and_range(key, value, words)


def test_cudnn_needs_bfloat16_and_augmentations_are_built_at_the_gate():
  c = _smoke()
  c.model.attention = "cudnn"
  with pytest.raises(ConfigError, match=r"attention='cudnn' needs config\.model\.dtype='bfloat16'"):
    schema.validate(c)
  c.model.dtype = "bfloat16"
  with pytest.raises(ConfigError, match=r"training batches are packs"):
    schema.validate(c)
  c = _smoke()
  c.data.augmentations = (("random_spin", {}),)
  with pytest.raises(ConfigError, match=r"config\.data\.augmentations: unknown op 'random_spin'"):
    schema.validate(c)


def test_effective_config_fills_the_resolvable_optionals_and_leaves_the_input_alone():
  c = importlib.import_module("configs.scannet").get_config()
  assert (c.data.segment_key, c.data.num_classes, c.data.num_val_scenes) == (None, None, None)
  effective = schema.validate(c)
  assert (effective.data.segment_key, effective.data.num_classes) == ("segment20", 20)
  assert effective.data.num_val_scenes == 64 // 4                      # max(1, num_scenes // 4)
  assert c.data.segment_key is None                                     # the caller's config is not modified
  assert schema.validate(effective).to_dict() == effective.to_dict()   # idempotent
  synthetic = schema.validate(_smoke())  # a synthetic source has its own classes: nothing to fill
  assert (synthetic.data.segment_key, synthetic.data.num_classes, synthetic.data.num_val_scenes) == (None, None, 1)
  given = _smoke()
  given.data.num_val_scenes = 3
  assert schema.validate(given).data.num_val_scenes == 3


def test_effective_optionals_are_what_the_sources_resolve(tmp_path):
  """The values the gate writes are the ones the layers would have used with None (same scenes, same labels)."""
  from dos_jax.data import catalog  # pylint: disable=g-import-not-at-top
  raw = _smoke()
  raw.data.num_scenes = 9
  effective = schema.validate(raw)
  assert catalog.scene_source(effective.data, "val").items == catalog.scene_source(raw.data, "val").items


def test_effective_config_is_what_config_json_records(tmp_path):
  from dos_jax.io import read_json  # pylint: disable=g-import-not-at-top
  from dos_jax import checkpoint  # pylint: disable=g-import-not-at-top
  effective = schema.validate(importlib.import_module("configs.scannet").get_config())
  checkpoint.prepare_workdir(str(tmp_path / "run"), effective)
  stored = read_json(str(tmp_path / "run" / "config.json"))["config"]
  assert stored["data"]["segment_key"] == "segment20" and stored["data"]["num_classes"] == 20
  assert stored["data"]["cross_radius"] == 0.16     # metres, explicit: no "0 = 2 grid cells" sentinel
  assert {k for k, _ in schema.flatten(effective)} == set(schema.SCHEMA)


def test_default_config_holds_exactly_the_schema():
  assert {k for k, _ in schema.flatten(schema.default_config())} == set(schema.SCHEMA)
  assert all(k.doc for k in schema.KEYS)
  schema.validate(schema.default_config())


@pytest.mark.system
def test_the_gate_does_not_import_jax():
  code = ("import sys; from configs import synthetic_tiny; from dos_jax import schema; "
          "schema.validate(synthetic_tiny.get_config('smoke')); print(sorted(m for m in ('jax', 'flax') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------------ schema <-> code agreement

# Names that hold a config (or one of its groups) where the code reads keys: config.x, cfg.data.x, data_cfg.x ...;
# a name assigned from one of them (`d = cfg.data`) holds that group.
_CONFIG_NAMES = {"config": "", "cfg": "", "data_cfg": "data.", "model_cfg": "model."}
_CONFIG_METHODS = {"get", "to_dict", "to_json_best_effort", "keys", "items", "values", "update", "ignore_type",
                   "lock", "unlock", "unlocked", "copy_and_resolve_references", "value", "update_from_flattened_dict"}
# Every group of keys, nested ones too ('data', 'evals', 'evals.linear_probe').
_GROUPS = {".".join(k.name.split(".")[:i]) for k in schema.KEYS for i in range(1, k.name.count(".") + 1)}
# Files whose config-rooted names are not experiment configs (tfds BuilderConfig).
_SKIP = {os.path.join("dos_jax", "data", "tfds_builder.py")}
# `model_cfg` may also hold upstream Pointcept's model config (`dos_jax.interop.pointcept`; config.model after
# `launch.probe --init-from` merged one in): upstream's constructor names are its keys, not experiment config keys.
_UPSTREAM_MODEL_KEYS = {"model." + k for k in variants.UPSTREAM_KEYS}
# {file: reason} of files allowed a hidden default (`.get("key", default)` on a config). Empty, and kept so that
# none is added silently: a new entry must say why the schema's default is not the one that applies.
KNOWN_HIDDEN_DEFAULTS: dict = {}


def _chain(node):
  """`a.b.c` -> ('a', ['b', 'c']); None when the chain is not rooted in a plain name."""
  attrs = []
  while isinstance(node, ast.Attribute):
    attrs.append(node.attr)
    node = node.value
  return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


def _key(prefix, chain):
  """The dotted key of `chain` read on a name holding `prefix` ('' = a whole config, 'data.' = its data group)."""
  if not chain:
    return None
  if not prefix and chain[0] in _GROUPS:
    # Down the nested groups to the first name that is not a group: the key (a chain ending on a group reads none).
    path = chain[0]
    for part in chain[1:]:
      if part in _CONFIG_METHODS:
        return None
      path = f"{path}.{part}"
      if path not in _GROUPS:
        return path
    return None
  return None if chain[0] in _CONFIG_METHODS else prefix + chain[0]


def _names(tree):
  """Config names of a file: the roots above, plus names assigned a group of one (`d = cfg.data`)."""
  names = dict(_CONFIG_NAMES)
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
      c = _chain(node.value)
      if c and c[0] in names and not names[c[0]] and len(c[1]) == 1 and c[1][0] in _GROUPS:
        names[node.targets[0].id] = c[1][0] + "."
      elif c and c[0] in names and not c[1]:  # `d = data_cfg`
        names[node.targets[0].id] = names[c[0]]
  return names


def _string_reads(tree, names):
  """(key, has a default, line) of `X.get("key", ...)` and `_get(X, "key", ...)` on config names."""
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call) or not node.args:
      continue
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr == "get":
      holder, rest = f.value, node.args
    elif isinstance(f, ast.Name) and f.id == "_get" and len(node.args) >= 2:
      holder, rest = node.args[0], node.args[1:]
    else:
      continue
    c = _chain(holder)
    if not c or c[0] not in names or not isinstance(rest[0], ast.Constant) or not isinstance(rest[0].value, str):
      continue
    key = _key(names[c[0]], c[1] + [rest[0].value])
    if key:
      yield key, len(rest) > 1 or bool(node.keywords), node.lineno


def _reads(path):
  """Dotted config keys read in `path`: attribute chains on config names (config.data.grid_size -> ...) and
  string reads (`.get`, `_get`)."""
  tree = ast.parse(open(path).read())
  names = _names(tree)
  found = set()
  for node in ast.walk(tree):
    c = _chain(node) if isinstance(node, ast.Attribute) else None
    if c and c[0] in names:
      key = _key(names[c[0]], c[1])
      if key:
        found.add(key)
  found |= {k for k, _, _ in _string_reads(tree, names)}
  return found


def _code_files():
  for top in ("dos_jax", "launch"):
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        rel = os.path.relpath(os.path.join(d, f), ROOT)
        if f.endswith(".py") and rel not in _SKIP:
          yield rel


def test_every_key_the_code_reads_is_in_the_schema():
  unknown = {f"{rel}: config.{k}" for rel in _code_files() for k in _reads(os.path.join(ROOT, rel))
             if k not in schema.SCHEMA and k not in _UPSTREAM_MODEL_KEYS}
  assert not unknown, sorted(unknown)


def test_every_schema_key_is_read_somewhere():
  read = set()
  for rel in _code_files():
    read |= _reads(os.path.join(ROOT, rel))
  unread = sorted(set(schema.SCHEMA) - read)
  assert not unread, f"schema keys nothing reads (implement or remove them): {unread}"


def test_no_hidden_defaults_in_the_layers():
  """`.get("key", default)` on a config inside dos_jax/ would be a second default next to the schema's."""
  hidden, files = [], set()
  for rel in _code_files():
    if rel.startswith("dos_jax"):
      tree = ast.parse(open(os.path.join(ROOT, rel)).read())
      found = [f"{rel}:{line} config.{key}" for key, default, line in _string_reads(tree, _names(tree)) if default]
      files |= {rel} if found else set()
      hidden += found if rel not in KNOWN_HIDDEN_DEFAULTS else []
  assert not hidden, hidden
  gone = set(KNOWN_HIDDEN_DEFAULTS) - files
  assert not gone, f"gone, remove from KNOWN_HIDDEN_DEFAULTS: {gone}"


def test_the_scanner_sees_reads_and_hidden_defaults():
  """The agreement checks above are not vacuous: a planted read and a planted default are found."""
  tree = ast.parse("def f(cfg):\n  d = cfg.data\n  return d.grid_size, cfg.model.variant, d.get('views', 'x')\n")
  names = _names(tree)
  assert names["d"] == "data."
  reads = {k for n in ast.walk(tree) if isinstance(n, ast.Attribute) and (c := _chain(n)) and c[0] in names
           and (k := _key(names[c[0]], c[1]))}
  assert reads == {"data.grid_size", "model.variant"}
  assert list(_string_reads(tree, names)) == [("data.views", True, 3)]


def test_pack_budgets_need_one_entry_per_stage_and_any_recipe_packs():
  c = importlib.import_module("configs.synthetic_tiny").get_config()
  schema.validate(c)                                # synthetic_tiny: () budgets (3 stages when given)
  c.data.packed_student_capacity = (2960, 1408)
  with pytest.raises(ConfigError, match=r"config\.data\.packed_student_capacity=\(2960, 1408\).*\(3 for"):
    schema.validate(c)
  for overrides in ({"normalization": "clustering"}, {"supervision": "masked_tokens"},
                    {"supervision": "token_jitter"}):  # every recipe runs on packs
    c = importlib.import_module("configs.synthetic_tiny").get_config()
    c.update_from_flattened_dict(overrides)
    schema.validate(c)


# Pack configs the gate refuses (the packing layers do not check them again): (dotted overrides, the key the
# message must name, words it must contain besides the key).
BAD_PACKING = [
    ({"data.packed_capacity": (8192, 0, 792)}, "data.packed_capacity", "positive integers"),
    ({"data.packed_student_sequence": (3136, -1, 640)}, "data.packed_student_sequence", "positive integers"),
    ({"data.packed_sequence": (8192, 3008)}, "data.packed_sequence", "one entry per encoder stage"),
    ({"data.packed_student_sequence": (3136, 1408, 640, 64)}, "data.packed_student_sequence", "or ()"),
    ({"data.pack_scenes": 0}, "data.pack_scenes", "[1, inf)"),
    ({"data.pack_scenes": 3}, "batch_size", "data.pack_scenes=3"),
]


@pytest.mark.parametrize("overrides,key,words", BAD_PACKING)
def test_bad_packing_raises_config_error_naming_key(overrides, key, words):
  c = importlib.import_module("configs.synthetic_tiny").get_config()
  for name, value in overrides.items():
    *groups, leaf = name.split(".")
    node = c
    for g in groups:
      node = node[g]
    with node.ignore_type():
      node[leaf] = value
  with pytest.raises(ConfigError) as e:
    schema.validate(c)
  assert f"config.{key}" in str(e.value) and words in str(e.value), str(e.value)


def test_empty_budgets_are_the_per_view_capacities():
  """() budgets pass the gate and decode to pack_scenes scenes at their per-view stage capacities."""
  from dos_jax.batching import spec as batch_spec_lib  # pylint: disable=g-import-not-at-top
  c = _smoke()
  pack = batch_spec_lib.pipeline_spec(schema.validate(c)).pack
  assert (pack.teacher, pack.student) == ((2048, 1024, 512), (1024, 512, 256)) and pack.pack_scenes == 1


def test_specs_hold_what_the_step_computes_with_and_not_the_run_identity():
  """The specs decode the config's values; two runs that differ only in seed / data location get equal specs
  (equal specs close over the same program: the compile cache hits), a method switch changes them."""
  from dos_jax import specs  # pylint: disable=g-import-not-at-top
  c = schema.validate(_smoke())
  spec = specs.step_spec(c)
  assert (spec.total_steps, spec.zipf_alpha, spec.optim.lr, spec.model.num_prototypes) == (6, 1.3, 2e-3, 64)
  assert (spec.model.variant, spec.model.head_hidden, spec.model.student_mask_token) == ("tiny", 128, False)
  other = _smoke()
  other.seed, other.data.num_scenes = 5, 9
  assert specs.step_spec(schema.validate(other)) == spec
  elsewhere = _smoke()
  elsewhere.data.format, elsewhere.data.root = "pointcept", "/elsewhere"
  assert specs.step_spec(schema.validate(elsewhere)).model == spec.model
  hash(spec)                                     # static under jit: must be hashable
  tokens = _smoke()
  tokens.supervision = "masked_tokens"
  assert specs.model_spec(schema.validate(tokens)).student_mask_token
  alpha = _smoke()
  alpha.zipf_alpha = 1.6
  assert specs.step_spec(schema.validate(alpha)) != spec


def test_a_recorded_config_reads_back_as_the_same_config():
  """schema.from_record: DIR/config.json's dict (tuples as JSON lists) -> the validated config the run used, with
  the same fingerprint (what launch.features --workdir reads); a key the schema does not have is named."""
  import json  # pylint: disable=g-import-not-at-top
  from dos_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from configs import scannet  # pylint: disable=g-import-not-at-top
  c = schema.validate(scannet.get_config())
  stored = json.loads(json.dumps(checkpoint.config_to_dict(c)))
  back = schema.from_record(stored)
  assert checkpoint.config_fingerprint(back) == checkpoint.config_fingerprint(c)
  assert back.data.packed_capacity == c.data.packed_capacity and isinstance(back.data.packed_capacity, tuple)
  stored["model"]["bogus"] = 1
  with pytest.raises(ConfigError, match=r"config\.model\.bogus"):
    schema.from_record(stored)


def test_cudnn_attention_stops_at_the_gate():
  """Training batches are packs, whose attention is masked by view, which cuDNN's kernel cannot: the gate names the
  key instead of a ValueError inside the trace."""
  from configs import scannet  # pylint: disable=g-import-not-at-top
  c = scannet.get_config()
  c.model.dtype, c.model.attention = "bfloat16", "cudnn"
  with pytest.raises(ConfigError, match=r"config\.model\.attention='cudnn': training batches are packs"):
    schema.validate(c)
  c.model.attention = "xla"
  schema.validate(c)
