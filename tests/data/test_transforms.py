"""Grid sampling with its inverse map, and augmentation ops (geometry incl. normals, colour, composition)."""

import numpy as np
import pytest

from dos_jax.data import transforms


def _cloud(n=2000, seed=0):
  rng = np.random.default_rng(seed)
  return {"coord": (rng.uniform(-1, 1, (n, 3)) * [3, 2, 1]).astype(np.float32),
          "color": rng.random((n, 3)).astype(np.float32),
          "normal": _unit(rng.standard_normal((n, 3))),
          "segment": rng.integers(0, 5, n).astype(np.int32),
          "point_index": np.arange(n, dtype=np.int32), "name": "cloud"}


def _unit(x):
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("random", [False, True])
def test_grid_sample_and_inverse(random):
  data = _cloud()
  grid = 0.25
  keep, inverse = transforms.grid_sample(data["coord"], grid, np.random.default_rng(1) if random else None)
  assert keep.dtype == np.int32 and inverse.dtype == np.int32 and inverse.shape == (2000,)
  voxel = np.floor(data["coord"].astype(np.float64) / grid).astype(int)
  # One representative per occupied voxel, all distinct voxels.
  assert len(keep) == len(np.unique(voxel, axis=0))
  assert len(np.unique(voxel[keep], axis=0)) == len(keep)
  # Every original point's voxel equals its representative's voxel.
  np.testing.assert_array_equal(voxel[keep[inverse]], voxel)
  if not random:
    # Deterministic: the smallest index of each voxel.
    first = {}
    for i, v in enumerate(map(tuple, voxel)):
      first.setdefault(v, i)
    assert sorted(first.values()) == sorted(keep.tolist())


def test_grid_sample_random_representatives_vary():
  data = _cloud()
  a, _ = transforms.grid_sample(data["coord"], 0.5, np.random.default_rng(1))
  b, _ = transforms.grid_sample(data["coord"], 0.5, np.random.default_rng(2))
  c, _ = transforms.grid_sample(data["coord"], 0.5, np.random.default_rng(1))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, c)


def test_normals_follow_geometry():
  # Points on a tilted plane with its normal: after any rotation/flip/anisotropic scale, the transformed normal
  # must stay perpendicular to in-plane vectors (an independent check of the inverse-transpose rule).
  rng = np.random.default_rng(3)
  n_true = _unit(np.array([[0.3, -0.5, 0.8]]))[0]
  u = np.cross(n_true, [1.0, 0, 0]); u /= np.linalg.norm(u)
  w = np.cross(n_true, u)
  ab = rng.uniform(-1, 1, (200, 2))
  coord = (ab[:, :1] * u + ab[:, 1:] * w + [1.0, 2.0, 0.5]).astype(np.float32)
  data = {"coord": coord, "normal": np.tile(n_true, (200, 1)).astype(np.float32), "point_index": np.arange(200)}
  op = transforms.compose([transforms.random_rotate((-180, 180), "z"), transforms.random_rotate((-30, 30), "x"),
                           transforms.random_flip(p=1.0), transforms.random_scale((0.5, 2.0), anisotropic=True)])
  for seed in range(5):
    out = op(data, np.random.default_rng(seed))
    normal = out["normal"]
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1, atol=1e-5)
    edges = out["coord"][1:] - out["coord"][:1]
    assert np.abs(edges @ normal[0]).max() < 1e-4
  np.testing.assert_array_equal(data["coord"], coord)  # input untouched


def test_geometric_ops():
  data = _cloud()
  rng = np.random.default_rng(0)
  rot = transforms.random_rotate((10, 80), "z")(data, rng)
  # Rigid about z: z and pairwise distances preserved, xy changed.
  np.testing.assert_allclose(rot["coord"][:, 2], data["coord"][:, 2], atol=1e-6)
  d0 = np.linalg.norm(data["coord"][1:] - data["coord"][0], axis=1)
  d1 = np.linalg.norm(rot["coord"][1:] - rot["coord"][0], axis=1)
  np.testing.assert_allclose(d0, d1, atol=1e-4)
  assert np.abs(rot["coord"][:, :2] - data["coord"][:, :2]).max() > 0.1
  sc = transforms.random_scale((0.9, 1.1))(data, rng)
  ratio = sc["coord"] / data["coord"]
  assert 0.9 <= ratio.mean() <= 1.1 and np.allclose(ratio, ratio.mean(), atol=1e-4)
  fl = transforms.random_flip(p=1.0)(data, rng)
  c = (data["coord"].min(0) + data["coord"].max(0)) / 2
  np.testing.assert_allclose(fl["coord"][:, :2], 2 * c[:2] - data["coord"][:, :2], atol=1e-5)
  np.testing.assert_allclose(fl["normal"][:, :2], -data["normal"][:, :2], atol=1e-5)
  jit = transforms.random_jitter(sigma=0.01, clip=0.02)(data, rng)
  delta = jit["coord"] - data["coord"]
  assert np.abs(delta).max() <= 0.02 + 1e-6 and delta.std() > 0.005
  cs = transforms.center_shift(apply_z=True)(data, rng)
  np.testing.assert_allclose(cs["coord"].min(0)[2], 0, atol=1e-6)
  np.testing.assert_allclose(cs["coord"].min(0)[:2], -cs["coord"].max(0)[:2], atol=1e-5)


def test_colour_ops():
  data = _cloud()
  rng = np.random.default_rng(0)
  ac = transforms.chromatic_auto_contrast(p=1.0, blend_factor=1.0)({**data, "color": data["color"] * 0.5 + 0.2}, rng)
  np.testing.assert_allclose(ac["color"].min(0), 0, atol=1e-5)
  np.testing.assert_allclose(ac["color"].max(0), 1, atol=1e-5)
  mid = {**data, "color": np.full_like(data["color"], 0.5)}
  tr = transforms.chromatic_translation(p=1.0, ratio=0.05)(mid, rng)["color"]
  assert np.allclose(tr, tr[:1]) and np.abs(tr - 0.5).max() <= 0.05
  cj = transforms.chromatic_jitter(p=1.0, std=0.01)(mid, rng)["color"]
  assert 0.005 < (cj - 0.5).std() < 0.02 and cj.min() >= 0 and cj.max() <= 1


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_default_augmentations(kind):
  data = _cloud()
  op = transforms.build(transforms.default_augmentations(kind))
  out = op(data, np.random.default_rng(0))
  assert out["coord"].shape == data["coord"].shape and out["coord"].dtype == np.float32
  np.testing.assert_array_equal(out["point_index"], data["point_index"])
  np.testing.assert_array_equal(out["segment"], data["segment"])
  assert not np.allclose(out["coord"], data["coord"])
  # Same Generator state -> same output.
  again = op(data, np.random.default_rng(0))
  np.testing.assert_array_equal(out["coord"], again["coord"])


def test_build_errors():
  with pytest.raises(ValueError, match="unknown op"):
    transforms.build([("random_spin", {})])
  with pytest.raises(ValueError, match="bad parameters"):
    transforms.build([("random_scale", {"factor": 2})])
  with pytest.raises(ValueError, match="kind='underwater'"):
    transforms.default_augmentations("underwater")
