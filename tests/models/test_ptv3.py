"""Tests of the PTv3-style encoder on padded batches built by the real host-side builder (tiny shapes)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import variants
from dos_jax.batching import patches
from dos_jax.models import encoder
from dos_jax.models import ptv3
from dos_jax.models.spec import ModelSpec
from tests.models import reference_np

GRID = 0.1
CFG = ModelSpec(variant="tiny", dtype="float32", drop_path=0.0, mlp_ratio=4.0)
TINY = variants.decode_variant("tiny")


def scene(n, seed):
  """A heightfield-like surface of n points, one per voxel (a surface pools to ~1/4 per stage, like scans)."""
  r = np.random.default_rng(seed)
  side = int(np.ceil(np.sqrt(n * 1.5)))
  cells = r.choice(side * side, size=n, replace=False)
  gx, gy = np.divmod(cells, side)
  gz = np.round(2 * np.sin(gx / 3.0) + np.cos(gy / 4.0)).astype(np.int64)
  coord = ((np.stack([gx, gy, gz], -1) + 0.5) * GRID + r.uniform(-0.04, 0.04, (n, 3))).astype(np.float32)
  feat = np.concatenate([coord, r.random((n, 6))], 1).astype(np.float32)
  return coord, feat


def point_set(coord, feat, capacity, spec=TINY, ratio=0.5):
  return patches.build_point_set(coord, feat, np.arange(len(coord)), GRID, capacity, len(spec["channels"]),
                                 spec["patch_size"], ratio=ratio)


def batch(scenes, capacity):
  return patches.stack_point_sets([point_set(c, f, capacity) for c, f in scenes])


@functools.lru_cache(maxsize=None)
def _apply_fn(train=False):
  return jax.jit(functools.partial(encoder.apply, train=train, spec=CFG))


@pytest.fixture(scope="module")
def scenes():
  return [scene(90, 0), scene(70, 1), scene(100, 2)]


@pytest.fixture(scope="module")
def params(scenes):
  return encoder.init(jax.random.key(0), batch(scenes[:2], 128), CFG)


@pytest.mark.system
def test_matches_independent_numpy_reference():
  # A custom small model: 2 blocks per stage (order cycling), capacity not a multiple of the patch (partial patch).
  spec = dict(channels=(8, 16), depths=(2, 2), heads=(2, 4), patch_size=16)
  coord, feat = scene(30, 7)
  points = point_set(coord, feat, 40, spec=dict(spec, patch_size=8))  # capacities multiple of 8, not of 16
  batched = patches.stack_point_sets([points])
  model = ptv3.PointTransformerV3(**spec)
  mask = np.zeros((1, 40), bool)
  mask[0, [3, 11]] = True
  # Random params of the right shapes (no init compile); non-trivial LayerNorm affines so mistakes in them show.
  shapes = jax.eval_shape(model.init, jax.random.key(3), batched)["params"]
  r = np.random.default_rng(4)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (float(path[-1].key == "scale") + 0.2 * r.normal(size=x.shape)).astype(np.float32), shapes)
  out, aux = jax.jit(model.apply)({"params": params}, batched, mask_token=jnp.asarray(mask))
  ref, ref_feats = reference_np.forward(params, points, mask_token=mask[0], **spec)
  np.testing.assert_allclose(np.asarray(out[0]), ref, atol=2e-5, rtol=1e-4)
  for s, f in enumerate(ref_feats):
    np.testing.assert_allclose(np.asarray(aux[f"enc{s}"][0]), f, atol=2e-5, rtol=1e-4)
  assert out.dtype == jnp.float32 and out.shape == (1, 40, sum(spec["channels"]))


@pytest.mark.system
def test_padding_and_batch_mates_do_not_change_real_outputs(params, scenes):
  apply = _apply_fn()
  a, b, c = scenes
  out_ab = np.asarray(apply(params, batch([a, b], 128)))
  out_ac = np.asarray(apply(params, batch([a, c], 128)))
  out_ab_big = np.asarray(apply(params, batch([a, b], 256)))  # stage capacities [256, 128, 64] vs [128, 64, 32]
  n_a, n_b = len(a[0]), len(b[0])
  np.testing.assert_allclose(out_ac[0, :n_a], out_ab[0, :n_a], atol=1e-5)
  np.testing.assert_allclose(out_ab_big[0, :n_a], out_ab[0, :n_a], atol=1e-5)
  np.testing.assert_allclose(out_ab_big[1, :n_b], out_ab[1, :n_b], atol=1e-5)
  assert np.all(out_ab[0, n_a:] == 0) and np.all(out_ab_big[1, n_b:] == 0)
  assert np.abs(out_ab[0, :n_a]).mean() > 0.1  # real outputs are not trivially zero


@pytest.mark.system
def test_invariant_to_input_point_order(params, scenes):
  apply = _apply_fn()
  (ca, fa), (cb, fb) = scenes[0], scenes[1]
  perm = np.random.default_rng(5).permutation(len(ca))
  out = np.asarray(apply(params, batch([(ca, fa), (cb, fb)], 128)))
  out_perm = np.asarray(apply(params, batch([(ca[perm], fa[perm]), (cb, fb)], 128)))
  # Slot i of the permuted set holds original point perm[i].
  np.testing.assert_allclose(out_perm[0, :len(ca)], out[0, perm], atol=1e-5)


@pytest.mark.system
def test_padded_slots_carry_no_information(params, scenes):
  apply = _apply_fn()
  points = batch(scenes[:2], 128)
  out = np.asarray(apply(params, points))
  r = np.random.default_rng(9)
  pad = ~np.asarray(points.valid)
  feat = np.where(pad[..., None], r.normal(size=points.feat.shape) * 10, points.feat).astype(np.float32)
  coord = np.where(pad[..., None], r.normal(size=points.coord.shape) * 10, points.coord).astype(np.float32)
  noisy = points.replace(feat=feat, coord=coord)
  np.testing.assert_array_equal(np.asarray(apply(params, noisy)), out)


@pytest.mark.system
def test_mask_token_replaces_features(params, scenes):
  apply = jax.jit(functools.partial(encoder.apply, train=False, spec=CFG))
  points = batch(scenes[:2], 128)
  mask = np.zeros(points.valid.shape, bool)
  mask[0, :20] = True
  out = np.asarray(apply(params, points, mask_token=jnp.asarray(mask)))
  feat = np.asarray(points.feat).copy()
  feat[0, :20] += 3.0  # features of masked points never enter
  out2 = np.asarray(apply(params, points.replace(feat=feat), mask_token=jnp.asarray(mask)))
  np.testing.assert_array_equal(out2, out)
  plain = np.asarray(apply(params, points))
  assert np.abs(plain[0, :20] - out[0, :20]).max() > 1e-3


@pytest.mark.system
def test_jit_compiles_once_across_batches(params, scenes):
  traces = []

  def fn(p, pts, key):
    traces.append(1)
    return encoder.apply(p, pts, train=True, rng=key, spec=dataclasses.replace(CFG, drop_path=0.2))

  jitted = jax.jit(fn)
  a, b, c = scenes
  for i, pair in enumerate([(a, b), (b, c), (c, a)]):
    out = jitted(params, batch(list(pair), 128), jax.random.key(i))
  assert len(traces) == 1
  # Drop path is active in training and deterministic given the key.
  points = batch([c, a], 128)
  np.testing.assert_array_equal(jitted(params, points, jax.random.key(2)), out)
  assert np.abs(np.asarray(out) - np.asarray(_apply_fn()(params, points))).max() > 1e-3


@pytest.mark.system
def test_gradients_finite_with_drop_path_and_mask_token_and_remat(params, scenes):
  points = batch(scenes[:2], 128)
  mask = jnp.asarray(np.arange(128)[None, :] % 3 == 0).repeat(2, 0)

  def loss(p, cfg):
    out = encoder.apply(p, points, train=True, rng=jax.random.key(1), mask_token=mask, spec=cfg)
    return jnp.sum(jnp.sin(out) * out)

  cfg = dataclasses.replace(CFG, drop_path=0.3)
  grads = jax.jit(jax.grad(functools.partial(loss, cfg=cfg)))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path  # every parameter is used
  # Rematerialisation: same param tree, same gradients.
  remat_grads = jax.jit(jax.grad(functools.partial(loss, cfg=dataclasses.replace(cfg, remat=True))))(params)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max(), rtol=1e-4)


@pytest.mark.system
def test_bfloat16_compute_keeps_float32_params(params, scenes):
  points = batch(scenes[:2], 128)
  cfg16 = dataclasses.replace(CFG, dtype="bfloat16")
  out16 = jax.jit(functools.partial(encoder.apply, train=False, spec=cfg16))(params, points)
  out32 = _apply_fn()(params, points)
  assert out16.dtype == jnp.float32
  shapes = jax.eval_shape(lambda p: encoder.init(jax.random.key(0), p, cfg16), points)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  n = len(scenes[0][0])
  assert np.all(np.isfinite(np.asarray(out16)))
  rel = np.linalg.norm(out16[0, :n] - out32[0, :n]) / np.linalg.norm(out32[0, :n])
  assert rel < 0.05, rel


@pytest.mark.parametrize("variant", ["tiny", "base"])
def test_param_count_formula(variant):
  spec = variants.decode_variant(variant)
  capacity = spec["patch_size"]
  coord, feat = scene(60, 4)
  points = patches.stack_point_sets([point_set(coord, feat, capacity, spec=spec, ratio=1.0)])
  shapes = jax.eval_shape(lambda p: encoder.init(jax.random.key(0), p, dataclasses.replace(CFG, variant=variant)), points)
  actual = encoder.count_params(shapes)
  formula = encoder.param_count(variant, in_channels=feat.shape[1])
  print(f"{variant}: {actual:,} parameters (formula {formula:,})")
  assert actual == formula
  if variant == "base":
    assert encoder.output_dim(dataclasses.replace(CFG, variant="base")) == 1232


def test_argument_errors(scenes):
  """A batch built for another model raises ValueError naming the stage counts. (The spec's own values are the
  gate's: config.model.dtype / attention / variant are checked by `schema.validate`, tests/test_schema.py.)"""
  points = batch(scenes[:2], 128)
  with pytest.raises(ValueError, match="stages"):
    encoder.init(jax.random.key(0), points, dataclasses.replace(CFG, variant="small"))


@pytest.mark.system
def test_cudnn_length_masking_matches_boolean_key_mask(params, scenes, monkeypatch):
  # The cuDNN path masks keys by per-patch lengths (valid keys are a prefix of each patch because the builder puts
  # real points first in every order). Check it on CPU by routing the same call to the XLA implementation.
  original = jax.nn.dot_product_attention

  def via_xla(*args, implementation=None, **kwargs):
    assert implementation == "cudnn" and "key_value_seq_lengths" in kwargs and kwargs.get("mask") is None
    return original(*args, implementation="xla", **kwargs)

  points = batch(scenes[:2], 128)
  spec = dict(TINY)
  reference = _apply_fn()(params, points)
  monkeypatch.setattr(jax.nn, "dot_product_attention", via_xla)
  lengths = jax.jit(ptv3.PointTransformerV3(**spec, attention="cudnn").apply)({"params": params}, points)[0]
  np.testing.assert_allclose(np.asarray(lengths), np.asarray(reference), atol=1e-6)


@pytest.mark.system
def test_order_shuffling_is_a_per_stage_permutation_of_the_orders():
  """With shuffle_orders, each stage's blocks use a permutation (drawn from the 'orders' key) of the order list:
  the output equals the deterministic output of a model whose order list IS that permutation (one stage, so one
  permutation); the same key gives the same output, no key gives the deterministic orders."""
  coord, feat = scene(100, 11)
  points = patches.stack_point_sets([point_set(coord, feat, 128, spec=dict(TINY, channels=(8,)))])
  spec = dict(channels=(8,), depths=(4,), heads=(2,), patch_size=32)
  model = ptv3.PointTransformerV3(**spec, shuffle_orders=True)
  params = parity_params(model, points)
  key = jax.random.key(3)
  run = jax.jit(lambda p, k: model.apply({"params": p}, points, order_key=k)[0])
  shuffled = np.asarray(run(params, key))
  np.testing.assert_array_equal(np.asarray(run(params, key)), shuffled)
  perm = tuple(int(i) for i in jax.random.permutation(jax.random.fold_in(key, 0), 4))
  assert perm != (0, 1, 2, 3)  # this key does permute (else the test would not test anything)
  fixed = ptv3.PointTransformerV3(**spec, orders=perm)
  want = np.asarray(jax.jit(lambda p: fixed.apply({"params": p}, points)[0])(params))
  np.testing.assert_allclose(shuffled, want, atol=1e-6)
  plain = np.asarray(jax.jit(lambda p: model.apply({"params": p}, points)[0])(params))
  assert np.abs(plain - shuffled).max() > 1e-3


def parity_params(model, points, seed=0):
  """Random non-trivial params of `model`'s shapes (no init compile)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), points)["params"]
  r = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (float(path[-1].key == "scale") + 0.3 * r.normal(size=x.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_blocks_equal_unrolled_blocks(remat):
  """`scan_blocks` (each stage's blocks as one lax.scan over stacked params) is the same function as the unrolled
  blocks: same param tree, same outputs and gradients, with drop path (per-block rates and keys), order
  shuffling, and remat. Both run the same float32 ops, fused differently by XLA, so they agree to rounding: a
  parameter's gradient sums over the N = 128 slots in each of the 5 blocks it flows back through, so the bound is
  N * 5 * eps relative to the largest entry (measured: <= 138 eps)."""
  coord, feat = scene(100, 5)
  arch = dict(TINY, channels=(8, 16), depths=(3, 2), heads=(2, 2), patch_size=32)
  points = patches.stack_point_sets([point_set(coord, feat, 128, spec=arch)])
  spec = dict(channels=(8, 16), depths=(3, 2), heads=(2, 2), patch_size=32, drop_path=0.4, shuffle_orders=True,
              remat=remat)
  scanned = ptv3.PointTransformerV3(**spec, scan_blocks=True)
  unrolled = ptv3.PointTransformerV3(**spec, scan_blocks=False)
  params = parity_params(scanned, points)
  assert set(params["enc0"]) == {"block0", "block1", "block2"}  # the unrolled names, not a stacked tree

  def loss(model, p):
    out = model.apply({"params": p}, points, train=True, order_key=jax.random.key(3),
                      rngs={"dropout": jax.random.key(4)})[0]
    return jnp.sum(jnp.sin(out) * out), out

  (l_s, out_s), g_s = jax.jit(jax.value_and_grad(functools.partial(loss, scanned), has_aux=True))(params)
  (l_u, out_u), g_u = jax.jit(jax.value_and_grad(functools.partial(loss, unrolled), has_aux=True))(params)
  eps = np.finfo(np.float32).eps
  np.testing.assert_allclose(out_s, out_u, rtol=0, atol=64 * eps * np.abs(out_u).max())
  for path, a in jax.tree_util.tree_leaves_with_path(g_s):
    b = functools.reduce(lambda t, k: t[k.key], path, g_u)
    np.testing.assert_allclose(a, b, rtol=0, atol=128 * 5 * eps * np.abs(b).max(), err_msg=str(path))
  # Drop path acted (else the per-block keys and rates would be untested): the eval output differs.
  plain = scanned.apply({"params": params}, points)[0]
  assert np.abs(np.asarray(plain) - np.asarray(out_s)).max() > 1e-3


@pytest.mark.parametrize("up_cast_level, projection", [(0, True), (1, False)])
def test_features_at_rows_equal_the_full_output_gathered(params, scenes, up_cast_level, projection):
  # The teacher's targets are read at the student's slots only, so the train step asks the encoder for those rows
  # (`rows`): the up-cast's last level and its projection then run on them alone. Every op after the stages is
  # row-wise (gathers, concat, Linear, LayerNorm), so each row must be what the full output holds there; only a
  # matmul's summation order may differ, bounded by float32 eps x the reduction length (D = sum of widths).
  spec = dataclasses.replace(CFG, up_cast_level=up_cast_level, upcast_projection=projection)
  points = batch(scenes[:2], 128)
  full = np.asarray(encoder.apply(params, points, train=False, spec=spec))
  r = np.random.default_rng(3)
  n = points.coord.shape[1]
  rows = r.integers(0, n + 1, size=(2, 50)).astype(np.int32)   # real, padded and sentinel slots, repeats
  rows[:, :3] = n                                                # the sentinel reads zeros
  at = np.asarray(jax.jit(functools.partial(encoder.apply, train=False, spec=spec))(params, points, rows=rows))
  assert at.shape == (2, 50, full.shape[-1])
  expected = np.concatenate([full, np.zeros_like(full[:, :1])], axis=1)[np.arange(2)[:, None], rows]
  width = full.shape[-1]
  np.testing.assert_allclose(at, expected, rtol=0, atol=4 * width * np.finfo(np.float32).eps * np.abs(full).max())
  assert np.all(at[:, :3] == 0)
  padded = ~np.asarray(points.valid)[np.arange(2)[:, None], np.minimum(rows, n - 1)] | (rows == n)
  assert np.all(at[padded] == 0) and np.abs(at[~padded]).mean() > 0.1
