"""Reading upstream checkpoints safely and strictly, and the host-side serialization against upstream's (no
compiles: shapes are abstract)."""

import os

import numpy as np
import pytest

from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.errors import ConfigError, DataError
from dos_jax.interop import pointcept
from tests.interop import upstream

SMALL = dict(channels=(8, 16, 16), depths=(1, 2, 1), heads=(1, 2, 2), patch=16)


class _RunsCode:
  """Unpickling this object calls os.system (what an attacker's checkpoint would do)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
  torch = upstream.modules()[0]
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  torch.save({"state_dict": {"embedding.stem.linear.weight": torch.zeros(8, 6)}, "hook": _RunsCode(marker)}, path)
  with pytest.raises(DataError, match="evil.pth: refused") as info:
    pointcept.load_checkpoint(str(path))
  assert "weights_only" in str(info.value)
  assert not marker.exists()  # nothing in the file ran
  with pytest.raises(DataError, match="no such checkpoint"):
    pointcept.load_checkpoint(str(tmp_path / "missing.pth"))
  (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(DataError, match="junk.pth"):
    pointcept.load_checkpoint(str(tmp_path / "junk.pth"))


@pytest.mark.parametrize("kind", ["PT-v3m2", "PT-v3m1"])
def test_from_state_dict_is_strict_and_round_trips_exactly(kind):
  model = upstream.build(kind, SMALL["channels"], SMALL["depths"], SMALL["heads"], SMALL["patch"], seed=5)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  kw = dict(enc_num_head=SMALL["heads"], enc_patch_size=SMALL["patch"])
  params, cfg = pointcept.from_state_dict(sd, **kw)
  assert cfg["enc_channels"] == SMALL["channels"] and cfg["enc_depths"] == SMALL["depths"]
  assert cfg["in_channels"] == 6 and cfg["mlp_ratio"] == 4.0 and cfg["type"] == kind
  exported = pointcept.to_state_dict(params, cfg)
  assert set(exported) == set(sd)
  for k, v in sd.items():
    assert exported[k].shape == v.shape, k
    if not k.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(exported[k], v)
  back, cfg2 = pointcept.from_state_dict(exported, **kw)
  assert cfg2 == cfg
  flat = lambda t: {"/".join(p): np.asarray(x) for p, x in __import__("flax").traverse_util.flatten_dict(t).items()}
  a, b = flat(back), flat(params)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  # Strictness: a missing weight, an unexpected one, a wrong shape each get a clear error.
  missing = {k: v for k, v in sd.items() if k != "enc.enc1.block1.attn.proj.bias"}
  with pytest.raises(DataError, match="missing weight 'enc.enc1.block1.attn.proj.bias'"):
    pointcept.from_state_dict(missing, **kw)
  with pytest.raises(DataError, match="unexpected weights.*seg_head"):
    pointcept.from_state_dict(dict(sd, **{"seg_head.weight": np.zeros((3, 8))}), **kw)
  bad = dict(sd, **{"enc.enc0.block0.mlp.0.fc2.weight": np.zeros((8, 31), np.float32)})
  with pytest.raises(DataError, match="fc2.weight: shape"):
    pointcept.from_state_dict(bad, **kw)


def test_config_inference_and_overrides():
  model = upstream.build("PT-v3m2", (16, 32), (1, 1), (1, 2), 16, seed=6)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  _, cfg = pointcept.from_state_dict(sd)
  assert cfg["enc_num_head"] == (1, 2) and cfg["enc_patch_size"] == (1024, 1024)  # C // 16, Sonata's 1024
  assert cfg["order"] == structs.ORDERS and not cfg["upcast_projection"]
  with pytest.raises(ConfigError, match="unknown override"):
    pointcept.from_state_dict(sd, enc_heads=(1, 2))
  with pytest.raises(ConfigError, match="stride"):
    pointcept.from_state_dict(sd, stride=(4,))
  with pytest.raises(DataError, match="not a PTv3 encoder"):
    pointcept.from_state_dict({"fc.weight": np.zeros((2, 2))})
  with pytest.raises(ConfigError, match="enc_num_head=.*divide"):
    pointcept.from_state_dict(sd, enc_num_head=(3, 2))
  with pytest.raises(ConfigError, match="order=.*expected names"):
    pointcept.from_state_dict(sd, order=("z", "peano"))
  # Sonata's student/teacher prefixes in memory too; the teacher branch is selectable only via load_checkpoint.
  params, _ = pointcept.from_state_dict({f"module.student.backbone.{k}": v for k, v in sd.items()})
  assert params["enc1"]["block0"]["norm1"]["scale"].shape == (32,)


@pytest.mark.parametrize("name,grid", [("scene0003_00", 0.08), ("scene0005_00", 0.02)])
def test_serialization_orders_equal_upstream_on_every_stage(name, grid):
  """Our host-side orders vs upstream's Point.serialization (its own encoders, depth (max + 1).bit_length() per
  stage) on a whole scan; scene0003_00 at 0.08 m reaches max = 15 = 2^4 - 1 at stage 2."""
  torch = upstream.modules()[0]
  from pointcept.models.utils.structure import Point  # pylint: disable=g-import-not-at-top
  coord, feat, gc = upstream.scan(name, grid)
  ps = patches.build_point_set(coord, feat, np.arange(len(coord)), grid, len(coord), 4, 1, grid=gc,
                               capacities=patches.stage_counts(gc, 4))
  for s, stage in enumerate(ps.stages):
    g = stage.grid[stage.valid].astype(np.int64)
    point = Point(grid_coord=torch.from_numpy(g), feat=torch.zeros(len(g), 1), offset=torch.tensor([len(g)]))
    point.serialization(order=structs.ORDERS, shuffle_orders=False)
    np.testing.assert_array_equal(stage.order[:, :len(g)], point.serialized_order.numpy(), err_msg=f"stage {s}")


@pytest.mark.parametrize("kind", ["PT-v3m2", "PT-v3m1"])
def test_one_architecture_from_the_model_config_and_from_config_model(kind):
  """pointcept.model_spec(model_cfg) and, after `--init-from` merged model_cfg into config.model,
  specs.model_spec(config) decode the same Architecture (the variant is not used), and batch_spec lays the
  batches out by it (per-stage patch sizes; PT-v3m1's inherited depth and stem neighbours)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax import schema, specs  # pylint: disable=g-import-not-at-top
  from dos_jax.batching import spec as batch_spec_lib  # pylint: disable=g-import-not-at-top
  model = upstream.build(kind, SMALL["channels"], SMALL["depths"], SMALL["heads"], SMALL["patch"], seed=5)
  _, cfg = pointcept.from_state_dict({k: v.numpy() for k, v in model.state_dict().items()},
                                     enc_num_head=SMALL["heads"], enc_patch_size=(16, 32, 64), up_cast_level=2)
  spec = pointcept.model_spec(cfg)
  arch = spec.architecture
  assert (arch.type, arch.channels, arch.depths, arch.heads) == (kind, (8, 16, 16), (1, 2, 1), (1, 2, 2))
  assert arch.patch_sizes == (16, 32, 64) and arch.orders == structs.ORDERS and arch.mask_token == (kind == "PT-v3m2")
  assert (spec.up_cast_level, spec.upcast_projection, spec.drop_path) == (2, False, 0.0)
  config = schema.validate(synthetic_tiny.get_config("smoke"))
  with config.unlocked():
    config.model = ml_collections.ConfigDict({**config.model.to_dict(), **cfg})
  merged = specs.model_spec(config)
  assert merged.architecture == arch and (merged.up_cast_level, merged.mlp_ratio) == (2, 4.0)
  layout = batch_spec_lib.batch_spec(config)
  assert (layout.num_stages, layout.patch_sizes, layout.patch_size) == (3, (16, 32, 64), 64)
  assert (layout.depth_rule, layout.stem_neighbors) == (("inherit", True) if kind == "PT-v3m1" else ("recompute", False))
  assert specs.model_spec(schema.validate(synthetic_tiny.get_config("smoke"))).architecture is None
  with pytest.raises(ConfigError, match="not an upstream model config"):
    pointcept.model_spec(dict(variant="tiny"))
