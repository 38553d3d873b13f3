"""Sonata's view transforms, each against an independent computation: elastic distortion (lattice, bound, exact
constant and linear fields), colour jitter (brightness/contrast/saturation formulas, hue vs colorsys), colour
ranges, random view scale of the crop, flips about the origin, and the recipe's values vs the reference config."""

import colorsys

import numpy as np
import pytest

from dos_jax.batching import spec as spec_lib
from dos_jax.batching import train_views
from dos_jax.data import color
from dos_jax.data import elastic
from dos_jax.data import transforms
from dos_jax.data import views
from tests import batching as helpers


def _box(n=4000, seed=0, size=(3.0, 2.0, 1.5)):
  rng = np.random.default_rng(seed)
  return (rng.uniform(0, 1, (n, 3)) * size).astype(np.float32)


def test_elastic_constant_lattice_moves_interior_points_by_exactly_the_constant():
  coord = _box()
  g = 0.2
  shape = elastic.noise_shape(coord, g)
  # Independent: floor(extent / g) + 3 nodes per axis (Pointcept's noise_dim).
  extent = coord.max(0).astype(np.float64) - coord.min(0)
  assert shape == tuple(int(x) for x in np.floor(extent / g) + 3) + (3,)
  c = np.array([0.3, -0.7, 1.1], np.float32)
  disp = elastic.elastic_displacement(coord, g, np.broadcast_to(c, shape))
  # The blur (zero outside the lattice) reaches 2 nodes in: points whose trilinear cell lies >= 2 nodes inside
  # every face see untouched constant nodes.
  lo = coord.min(0) - g
  node = (coord - lo) / g
  inner = np.all((node >= 2) & (node <= np.array(shape[:3]) - 3), axis=1)
  assert inner.sum() > 500
  np.testing.assert_allclose(disp[inner], np.broadcast_to(c, disp[inner].shape), rtol=0, atol=1e-5)
  # Convex combinations: never more than the constant anywhere (edge points see less).
  assert np.all(np.abs(disp) <= np.abs(c) + 1e-6)


def test_elastic_linear_lattice_gives_the_linear_field_at_interior_points():
  # noise[i, j, k] = (i, 2j, -k): a box blur keeps a linear function away from the lattice's edges, and trilinear
  # interpolation reproduces it exactly, so the displacement is the point's lattice coordinate, computed here from
  # the lattice geometry alone (node i sits at min(coord) - g + i g).
  coord = _box(seed=1)
  g = 0.25
  shape = elastic.noise_shape(coord, g)
  i, j, k = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape[:3]], indexing="ij")
  noise = np.stack([i, 2 * j, -k], axis=-1)
  disp = elastic.elastic_displacement(coord, g, noise)
  node = (coord.astype(np.float64) - (coord.min(0) - g)) / g
  inner = np.all((node >= 2) & (node <= np.array(shape[:3]) - 3), axis=1)
  assert inner.sum() > 300
  expected = node[inner] * [1.0, 2.0, -1.0]
  np.testing.assert_allclose(disp[inner], expected, rtol=0, atol=2e-4)


def test_elastic_displacement_is_bounded_by_the_noise_and_the_op_scales_it_by_the_magnitude():
  coord = _box(seed=2)
  rng = np.random.default_rng(0)
  noise = rng.standard_normal(elastic.noise_shape(coord, 0.2)).astype(np.float32)
  disp = elastic.elastic_displacement(coord, 0.2, noise)
  assert np.all(np.abs(disp) <= np.abs(noise).max(axis=(0, 1, 2)) + 1e-6)
  # Smoothed N(0, 1): per axis the two passes weigh 5 nodes by (1, 2, 3, 2, 1) / 9, so a lattice value has std
  # sqrt(19/81)^3 = 0.114 and interpolation only averages further: the field is much smaller than the raw noise.
  assert 0.02 < disp.std() < 0.114
  data = {"coord": coord, "point_index": np.arange(len(coord), dtype=np.int32)}
  op = transforms.elastic_distortion(((0.2, 0.4),), p=1.0)
  out = op(data, np.random.default_rng(5))
  # Same draws by hand: the op's p-draw, then the lattice.
  r = np.random.default_rng(5)
  r.random()
  lattice = r.standard_normal(elastic.noise_shape(coord, 0.2), dtype=np.float32)
  np.testing.assert_allclose(out["coord"], coord + 0.4 * elastic.elastic_displacement(coord, 0.2, lattice),
                             rtol=0, atol=1e-6)
  assert transforms.elastic_distortion(p=0.0)(data, rng)["coord"] is coord
  with pytest.raises(ValueError, match="distortion_params"):
    transforms.elastic_distortion(((0.0, 0.4),))


def test_elastic_distortion_of_a_cloud_kilometres_wide_stays_bounded():
  # Two clusters 200 km apart: one dense lattice would need ~1e15 nodes; per-tile lattices keep it small, and each
  # cluster still moves by a bounded smooth field.
  rng = np.random.default_rng(0)
  coord = np.concatenate([_box(500, seed=3), _box(500, seed=4) + 2e5]).astype(np.float32)
  assert np.prod(elastic.noise_shape(coord, 0.2)[:3], dtype=np.float64) > elastic.MAX_LATTICE_NODES
  disp = elastic.random_displacement(coord, 0.2, rng)
  assert disp.shape == (1000, 3) and np.all(np.isfinite(disp)) and np.abs(disp).max() < 5.0
  assert disp[:500].std() > 0.01 and disp[500:].std() > 0.01


def _colors(n=500, seed=0):
  return np.random.default_rng(seed).random((n, 3)).astype(np.float32)


def _jitter_only(**kw):
  """A colour jitter that applies exactly one adjustment with a fixed factor."""
  params = dict(brightness=0, contrast=0, saturation=0, hue=0, p=1.0)
  params.update(kw)
  return transforms.random_color_jitter(**params)


def test_color_jitter_brightness_contrast_saturation_formulas():
  c = _colors()
  data = {"color": c}
  rng = np.random.default_rng(0)
  out = _jitter_only(brightness=(1.3, 1.3))(data, rng)["color"]
  np.testing.assert_allclose(out, np.clip(c * 1.3, 0, 1), rtol=0, atol=1e-6)
  luma = 0.2989 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
  out = _jitter_only(contrast=(0.6, 0.6))(data, rng)["color"]
  np.testing.assert_allclose(out, np.clip(0.6 * c + 0.4 * luma.mean(), 0, 1), rtol=0, atol=1e-6)
  out = _jitter_only(saturation=(0.0, 0.0))(data, rng)["color"]   # factor 0 = greyscale
  np.testing.assert_allclose(out, np.repeat(luma[:, None], 3, 1), rtol=0, atol=1e-6)
  assert _jitter_only(brightness=(1.3, 1.3), p=0.0)(data, rng)["color"] is not None
  np.testing.assert_array_equal(_jitter_only(brightness=(1.3, 1.3), p=0.0)(data, rng)["color"], c)


def test_color_jitter_hue_matches_colorsys():
  c = _colors(200, seed=1)
  out = _jitter_only(hue=(0.1, 0.1))({"color": c}, np.random.default_rng(0))["color"]
  expected = []
  for r, g, b in c.astype(np.float64):
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    expected.append(colorsys.hsv_to_rgb((h + 0.1) % 1.0, s, v))
  np.testing.assert_allclose(out, np.array(expected), rtol=0, atol=1e-5)


def test_color_jitter_factor_ranges_follow_torchvision():
  with pytest.raises(ValueError, match="hue"):
    transforms.random_color_jitter(hue=0.7)
  with pytest.raises(ValueError, match="brightness"):
    transforms.random_color_jitter(brightness=-0.1)
  # Sonata's values: factors in [0.6, 1.4] / [0.6, 1.4] / [0.8, 1.2], hue [-0.02, 0.02]; colours stay in [0, 1].
  c = _colors(2000)
  rng = np.random.default_rng(3)
  op = transforms.random_color_jitter()
  outs = [op({"color": c}, rng)["color"] for _ in range(20)]
  assert all(o.min() >= 0 and o.max() <= 1 and o.dtype == np.float32 for o in outs)
  assert sum(not np.array_equal(o, c) for o in outs) >= 15


def test_color_ranges_are_affine_maps_of_unit_colours():
  c = _colors()
  np.testing.assert_array_equal(color.normalize_color(c, "unit"), c)
  signed = color.normalize_color(c, "signed")
  np.testing.assert_allclose(signed, 2.0 * c - 1.0, rtol=0, atol=1e-6)
  ends = color.normalize_color(np.array([[0.0, 1.0, 0.5]], np.float32), "signed")
  np.testing.assert_array_equal(ends, [[-1.0, 1.0, 0.0]])
  # The batch features use it for training views and evaluation batches alike (one feature function).
  spec = spec_lib.batch_spec(helpers.cfg(**{"data.color_range": "signed"}))
  view = {"coord": np.zeros((len(c), 3), np.float32), "color": c, "normal": np.zeros((len(c), 3), np.float32)}
  feat = train_views.features(view, spec.feat_keys, spec.color_range)
  np.testing.assert_allclose(feat[:, 3:6], 2.0 * c - 1.0, rtol=0, atol=1e-6)
  assert feat[:, 3:6].min() >= -1 and feat[:, 3:6].max() <= 1


def test_random_view_scale_draws_each_crop_fraction_uniformly():
  n = 1000
  data = {"coord": _box(n), "point_index": np.arange(n, dtype=np.int32)}
  identity = transforms.build([])
  sizes = []
  for seed in range(40):
    # grid 1 mm: every point keeps its own voxel, so a view's size is the crop's.
    vs = views.make_views(data, 2, (0.4, 1.0), 0.001, identity, np.random.default_rng(seed))
    assert len(vs[0]["coord"]) == len(vs[1]["coord"])           # 'duplicate': one crop for both views
    sizes.append(len(vs[0]["coord"]))
  sizes = np.array(sizes) / n
  assert sizes.min() >= 0.4 and sizes.max() <= 1.0
  assert sizes.min() < 0.55 and sizes.max() > 0.85 and len(set(sizes)) > 30
  # A fixed fraction draws nothing for the crop size (the previous recipe's random stream is unchanged).
  a = views.make_views(data, 2, (0.6, 0.6), 0.001, identity, np.random.default_rng(0))
  b = views.make_views(data, 2, 0.6, 0.001, identity, np.random.default_rng(0))
  np.testing.assert_array_equal(a[0]["point_index"], b[0]["point_index"])


def test_flip_about_the_origin_negates_x_and_y():
  coord = _box(100) + 5.0
  data = {"coord": coord, "normal": np.tile(np.float32([[0.6, 0.8, 0.0]]), (100, 1))}
  out = transforms.random_flip(p=1.0, center=(0.0, 0.0, 0.0))(data, np.random.default_rng(0))
  np.testing.assert_allclose(out["coord"], coord * [-1, -1, 1], rtol=0, atol=1e-5)
  np.testing.assert_allclose(out["normal"], data["normal"] * [-1, -1, 1], atol=1e-6)


def test_sonata_recipe_values_are_the_reference_configs():
  # pretrain-sonata-v1m1-0-base.py, global_transform (angles in units of pi there, degrees here).
  ops = transforms.default_augmentations("indoor")
  names = [n for n, _ in ops]
  assert names == ["center_shift", "random_scale", "random_rotate", "random_rotate", "random_rotate", "random_flip",
                   "random_jitter", "elastic_distortion", "random_color_jitter", "chromatic_translation"]
  rot = [kw for n, kw in ops if n == "random_rotate"]
  assert [(r["axis"], r["p"]) for r in rot] == [("z", 0.8), ("x", 0.8), ("y", 0.8)]
  assert rot[0]["angle"] == (-180.0, 180.0) and rot[1]["angle"] == (-180.0 / 64, 180.0 / 64)
  kw = dict(ops)
  assert kw["elastic_distortion"]["distortion_params"] == ((0.2, 0.4), (0.8, 1.6))
  assert (kw["random_color_jitter"]["brightness"], kw["random_color_jitter"]["hue"],
          kw["random_color_jitter"]["p"]) == (0.4, 0.02, 0.8)
  # The previous list stays reachable.
  v1 = dict((n, kw) for n, kw in transforms.default_augmentations("indoor", "v1") if n != "random_rotate")
  assert "elastic_distortion" not in v1 and v1["chromatic_jitter"] == {"p": 0.95, "std": 0.005}
  out = transforms.build(ops)({"coord": _box(3000), "color": _colors(3000),
                               "point_index": np.arange(3000, dtype=np.int32)}, np.random.default_rng(0))
  assert out["coord"].dtype == np.float32 and out["color"].min() >= 0 and out["color"].max() <= 1
