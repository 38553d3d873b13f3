"""Every config file passes the gate (full, smoke and det variants) and holds the paper's defaults.

The gate itself (bad values, cross-key rules, the effective config) is tested in tests/test_schema.py. No JAX
here: validation runs on the host before anything compiles, so these tests take a second.
"""

import importlib

import pytest

from dos_jax import schema

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
    schema.validate(config, num_devices=1)
  # big_vision style: the module docstring holds the exact launch command.
  assert "python -m launch." in module.__doc__


@pytest.mark.parametrize("name", ["scannet", "scannet200", "s3dis"])
def test_indoor_paper_defaults(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert (c.data.grid_size, c.data.mask_cell, c.mask_ratio) == (0.08, 0.4, 0.7)
  assert c.data.cross_radius == 0.16  # metres: 2 grid cells
  assert (c.num_prototypes, c.zipf_alpha, c.model.variant, c.data.format) == (1024, 1.3, "base", "pointcept")
  assert c.data.kind == "indoor"
  assert importlib.import_module(f"configs.{name}").get_config("det").mask_ratio == 0.6


@pytest.mark.parametrize("name", ["nuscenes", "semantickitti"])
def test_outdoor_paper_defaults(name):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert (c.data.grid_size, c.data.mask_cell, c.mask_ratio) == (0.2, 1.0, 0.7)
  assert c.data.cross_radius == 0.4
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


@pytest.mark.parametrize("name,arg", [("synthetic_tiny", "recipe=v1"), ("ablation_tiny", "kind=longtail,recipe=v1"),
                                      ("scannet_tiny", "root=/data/tree,recipe=v1")])
def test_recipe_v1_restores_the_earlier_values(name, arg):
  from dos_jax.data import transforms  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"configs.{name}")
  v1, sonata = module.get_config(arg), module.get_config(arg.replace("recipe=v1", "recipe=sonata"))
  schema.validate(v1, num_devices=1)
  # The earlier recipe: no masking warm-up, a fixed 0.6 crop, the v1 augmentation list, colours in [0, 1].
  assert (v1.mask_ratio_warmup_frac, v1.data.mask_cell_warmup_frac) == (0.0, 0.0)
  assert (v1.data.crop_ratio, v1.data.crop_ratio_max, v1.data.color_range) == (0.6, 0.6, "unit")
  assert list(v1.data.augmentations) == transforms.default_augmentations(v1.data.kind, "v1")
  assert (v1.optim.schedule, v1.optim.layer_decay) == ("warmup_cosine", 1.0)
  assert (sonata.optim.schedule, sonata.optim.layer_decay) == ("onecycle", 0.9)
  # Sonata's (the schema defaults): warm-up 0.3 -> 0.7 and 0.25 x cell over 5%, crops of 0.4-1.0 of a scene.
  assert (sonata.mask_ratio_start, sonata.mask_ratio_warmup_frac, sonata.data.mask_cell_start_ratio) == (0.3, 0.05,
                                                                                                          0.25)
  assert (sonata.data.crop_ratio, sonata.data.crop_ratio_max, sonata.data.augmentations) == (0.4, 1.0, ())
  assert v1.mask_ratio == sonata.mask_ratio == 0.7 and v1.data.mask_cell == sonata.data.mask_cell == 0.4
