"""Flax <-> torch state_dict converter: names, layouts, exact round trip, errors."""

import flax.traverse_util
import jax
import numpy as np
import pytest

from tests import conftest

torch = conftest.require_torch()

from dos_jax import variants  # pylint: disable=g-import-not-at-top
from dos_jax.models import ptv3  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import blocks as tblocks  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import convert  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import encoder as tenc  # pylint: disable=g-import-not-at-top
from dos_jax.torch_ref import parity  # pylint: disable=g-import-not-at-top

SPEC = variants.decode_variant("tiny")


@pytest.fixture(scope="module")
def params():
  """Random f32 params of the tiny encoder (shapes from an abstract init: nothing is compiled)."""
  points = parity.make_points(sizes=(100,), capacity=128)
  model = ptv3.PointTransformerV3(channels=SPEC["channels"], depths=(1, 2, 1), heads=SPEC["heads"],
                                  patch_size=SPEC["patch_size"])
  shapes = jax.eval_shape(lambda k: model.init(k, points, train=False), jax.random.key(0))
  return parity.random_params(shapes["params"], seed=3)


def _torch_model():
  return tenc.PointTransformerV3(9, SPEC["channels"], (1, 2, 1), SPEC["heads"], SPEC["patch_size"])


def test_names_and_shapes_match_the_torch_module(params):
  sd = convert.flax_to_torch_state_dict(params)
  ref = _torch_model().state_dict()
  assert set(sd) == set(ref)
  for name, tensor in ref.items():
    assert tuple(sd[name].shape) == tuple(tensor.shape), name
  # Pointcept-style names and torch layouts.
  c0, c1 = SPEC["channels"][:2]
  assert sd["enc.enc0.block0.attn.qkv.weight"].shape == (3 * c0, c0)
  assert sd["enc.enc0.block0.cpe.0.weight"].shape == (c0, 3, 3, 3, c0)
  assert sd["enc.enc1.down.proj.weight"].shape == (c1, c0)
  assert "enc.enc1.block1.mlp.0.fc2.weight" in sd and "enc.enc1.down.norm.0.weight" in sd
  assert "embedding.stem.linear.weight" in sd and "embedding.mask_token" in sd and "upcast.norm.bias" in sd
  _torch_model().load_state_dict(sd, strict=True)


def test_layouts(params):
  sd = convert.flax_to_torch_state_dict(params)
  qkv = params["enc0"]["block0"]["attn"]["qkv"]["kernel"]
  np.testing.assert_array_equal(sd["enc.enc0.block0.attn.qkv.weight"].numpy(), np.asarray(qkv).T)
  kernel = np.asarray(params["enc0"]["block0"]["cpe"]["conv"]["kernel"])   # [27, C_in, C_out]
  weight = sd["enc.enc0.block0.cpe.0.weight"].numpy()                       # [C_out, 3, 3, 3, C_in]
  offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(27, 3)
  for k, (dx, dy, dz) in enumerate(offsets):
    np.testing.assert_array_equal(weight[:, dx + 1, dy + 1, dz + 1, :], kernel[k].T)
  np.testing.assert_array_equal(sd["enc.enc0.block0.norm1.0.weight"].numpy(),
                                np.asarray(params["enc0"]["block0"]["norm1"]["scale"]))


def test_round_trip_is_exact(params):
  sd = convert.flax_to_torch_state_dict(params)
  back = convert.torch_state_dict_to_flax(sd, like=params)
  flat, flat_back = flax.traverse_util.flatten_dict(params), flax.traverse_util.flatten_dict(back)
  assert set(flat) == set(flat_back)
  for path, value in flat.items():
    assert flat_back[path].dtype == np.asarray(value).dtype
    np.testing.assert_array_equal(flat_back[path], value)
  # torch -> flax -> torch, starting from a torch module's own (float64) weights.
  model = _torch_model().double()
  sd_t = model.state_dict()
  like64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  again = convert.flax_to_torch_state_dict(convert.torch_state_dict_to_flax(sd_t, like=like64))
  for name, tensor in sd_t.items():
    assert torch.equal(again[name], tensor), name


def test_subtree_prefix(params):
  block = params["enc1"]["block1"]
  sd = convert.flax_to_torch_state_dict(block, prefix="enc1/block1")
  module = tblocks.Block(SPEC["channels"][1], SPEC["heads"][1], SPEC["patch_size"], order_index=1)
  assert set(sd) == set(module.state_dict())
  module.load_state_dict(sd, strict=True)
  pool = convert.flax_to_torch_state_dict(params["enc1"]["down"], prefix="enc1/down")
  assert set(pool) == {"proj.weight", "proj.bias", "norm.0.weight", "norm.0.bias"}
  back = convert.torch_state_dict_to_flax(sd, like=block, prefix="enc1/block1")
  np.testing.assert_array_equal(back["cpe"]["conv"]["kernel"], block["cpe"]["conv"]["kernel"])


def test_errors_name_the_parameter(params):
  sd = convert.flax_to_torch_state_dict(params)
  missing = dict(sd)
  del missing["enc.enc0.block0.attn.proj.bias"]
  with pytest.raises(KeyError, match="enc.enc0.block0.attn.proj.bias"):
    convert.torch_state_dict_to_flax(missing, like=params)
  extra = dict(sd, **{"enc.enc0.block0.attn.rel_pos": torch.zeros(3)})
  with pytest.raises(KeyError, match="rel_pos"):
    convert.torch_state_dict_to_flax(extra, like=params)
  bad = dict(sd, **{"upcast.proj.weight": torch.zeros(3, 4)})
  with pytest.raises(ValueError, match="upcast.proj.weight"):
    convert.torch_state_dict_to_flax(bad, like=params)
