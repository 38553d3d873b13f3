"""Every config file validates (full, smoke and det variants) and every bad value names its key.

No JAX computation here: validation runs on the host before anything compiles, so these tests take a second.
"""

import importlib

import pytest

from configs import common
from dos_jax import config_validation
from dos_jax.errors import ConfigError

EXPERIMENTS = ("synthetic_tiny", "scannet", "scannet200", "s3dis", "nuscenes", "semantickitti",
               "sweep_zipf_alpha")


def _variants(name):
  if name in ("synthetic_tiny", "sweep_zipf_alpha"):
    return (None, "smoke")
  return (None, "smoke", "det", "smoke,det")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_config_validates(name):
  module = importlib.import_module(f"configs.{name}")
  for arg in _variants(name):
    config = module.get_config(arg)
    config_validation.validate_config(config, num_devices=1)
  # big_vision style: the module docstring holds the exact launch command.
  assert "python -m launch." in module.__doc__


@pytest.mark.parametrize("name", ["scannet", "scannet200", "s3dis"])
def test_indoor_paper_defaults(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert (c.data.grid_size, c.data.mask_cell, c.mask_ratio) == (0.08, 0.4, 0.7)
  assert (c.num_prototypes, c.zipf_alpha, c.model.variant, c.data.format) == (1024, 1.3, "base", "pointcept")
  assert c.data.kind == "indoor"
  assert importlib.import_module(f"configs.{name}").get_config("det").mask_ratio == 0.6


@pytest.mark.parametrize("name", ["nuscenes", "semantickitti"])
def test_outdoor_paper_defaults(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert (c.data.grid_size, c.data.mask_cell, c.mask_ratio) == (0.2, 1.0, 0.7)
  assert (c.num_prototypes, c.zipf_alpha, c.model.variant, c.data.kind) == (1024, 1.3, "base", "outdoor")


def test_smoke_shrinks_but_keeps_the_recipe():
  from configs import nuscenes
  full, smoke = nuscenes.get_config(), nuscenes.get_config("smoke")
  assert smoke.total_steps < 20 and smoke.model.variant == "tiny" and smoke.data.format == "synthetic"
  assert (smoke.data.grid_size, smoke.data.mask_cell, smoke.zipf_alpha, smoke.data.kind) == (
      full.data.grid_size, full.data.mask_cell, full.zipf_alpha, full.data.kind)


def test_probe_classes():
  classes = {n: importlib.import_module(f"configs.{n}").get_config().probe.num_classes
             for n in ("scannet", "scannet200", "s3dis", "nuscenes", "semantickitti")}
  assert classes == {"scannet": 20, "scannet200": 200, "s3dis": 13, "nuscenes": 16, "semantickitti": 19}


def test_sweep_lists_the_paper_alphas():
  from configs import sweep_zipf_alpha
  assert [o["overrides"]["zipf_alpha"] for o in sweep_zipf_alpha.get_sweep()] == [0.0, 0.6, 1.3, 1.6, 2.0]
  assert sweep_zipf_alpha.get_config("base=scannet").data.dataset == "scannet"


def test_every_schema_key_has_a_value_rule():
  keys = {k for k, _ in config_validation.flatten(common.base_config())}
  assert keys == set(config_validation._RULES)  # pylint: disable=protected-access


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
    config_validation.validate_config(c, num_devices=1)
  assert f"config.{key}" in str(e.value)
  assert words in str(e.value)


def test_capacity_must_be_whole_patches():
  c = _smoke()
  c.data.capacity = 1000  # tiny variant: patch 64
  with pytest.raises(ConfigError, match=r"config\.data\.capacity=1000.*patch size 64.*960 or 1024"):
    config_validation.validate_config(c)
  c = _smoke()
  c.model.variant = "base"  # patch 1024 does not divide 1536 (> one patch)
  c.data.capacity = 1536
  with pytest.raises(ConfigError, match=r"config\.data\.capacity=1536"):
    config_validation.validate_config(c)
  c.data.capacity = 512  # at most one patch is fine: the stage is a single patch
  c.data.student_capacity = 256
  config_validation.validate_config(c)


def test_student_capacity_at_most_teacher_capacity():
  c = _smoke()
  c.data.student_capacity = 2 * c.data.capacity
  with pytest.raises(ConfigError, match=r"config\.data\.student_capacity"):
    config_validation.validate_config(c)


def test_batch_size_must_split_over_devices():
  c = _smoke()
  c.batch_size = 6
  config_validation.validate_config(c, num_devices=3)
  with pytest.raises(ConfigError, match=r"config\.batch_size=6.*4 devices.*e\.g\. 4 or 8"):
    config_validation.validate_config(c, num_devices=4)


def test_disk_formats_need_a_root():
  c = _smoke()
  c.data.format = "pointcept"
  with pytest.raises(ConfigError, match=r"config\.data\.root is empty"):
    config_validation.validate_config(c)
  c.data.root = "/some/where"
  config_validation.validate_config(c)


def test_cross_view_needs_two_views():
  c = _smoke()
  c.data.num_views = 3
  with pytest.raises(ConfigError, match=r"config\.data\.num_views=3"):
    config_validation.validate_config(c)
  c.cross_view = False
  config_validation.validate_config(c)


def test_unknown_keys_are_named_with_a_suggestion():
  c = _smoke()
  c.zipf_alpah = 1.6
  with pytest.raises(ConfigError, match=r"config\.zipf_alpah: unknown key\. Did you mean 'zipf_alpha'"):
    config_validation.validate_config(c)
  c = _smoke()
  c.data.grid = 0.1
  with pytest.raises(ConfigError, match=r"config\.data\.grid: unknown key\. Did you mean 'data\.grid_size'"):
    config_validation.validate_config(c)


def test_missing_key_is_named():
  c = _smoke()
  del c.optim["clip_norm"]
  with pytest.raises(ConfigError, match=r"config\.optim\.clip_norm: missing"):
    config_validation.validate_config(c)


def test_ema_momentum_must_rise():
  c = _smoke()
  c.ema_momentum_start, c.ema_momentum_end = 0.999, 0.99
  with pytest.raises(ConfigError, match=r"config\.ema_momentum_start"):
    config_validation.validate_config(c)


def test_data_parallel_devices():
  c = _smoke()  # batch_size 2
  assert config_validation.data_parallel_devices(c, available=2) == 2
  c.num_devices = 1
  assert config_validation.data_parallel_devices(c, available=8) == 1
  c.num_devices = 4
  with pytest.raises(ConfigError, match=r"config\.num_devices=4: only 2 devices"):
    config_validation.data_parallel_devices(c, available=2)
  c.num_devices = 0
  with pytest.raises(ConfigError, match=r"config\.batch_size=2: must be a multiple of the 8 devices"):
    config_validation.data_parallel_devices(c, available=8)
