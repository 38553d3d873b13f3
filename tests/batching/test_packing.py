"""Packed point sets: layout rules, and packed encoder == per-view encoder (features and gradients).

The views are tiny (tiny variant, patch 64): one fills its whole per-view capacity (and exactly two patches),
one fills exactly one patch, one is a single point (a single point at every stage, down to the deepest), one is
a partial multi-patch view. Features must agree to float32 rounding: the packed computation does the same
per-row arithmetic (masked keys contribute exp(-inf) = 0), so only matmul blocking / summation order can differ:
atol 1e-5 on LayerNorm-scaled outputs of magnitude <= ~5 (~100 eps). Parameter gradients are sums of thousands
of signed terms (rows x 27 taps): bounded by 1e-4 x the leaf's largest entry (~800 eps of its scale); a masking
or indexing error shows up as O(1) relative differences.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import variants
from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.models import encoder
from dos_jax.models.spec import ModelSpec

CFG = ModelSpec(variant="tiny")
PATCH = 64


def _view(n, seed, capacity):
  r = np.random.default_rng(seed)
  cells = r.choice(30 * 30, n, replace=False)
  gx, gy = np.divmod(cells, 30)
  gz = (gx // 7 + gy // 5) % 3
  coord = ((np.stack([gx, gy, gz], -1) + 0.5) * 0.1).astype(np.float32)
  feat = np.concatenate([coord, r.random((n, 6))], 1).astype(np.float32)
  return patches.build_point_set(coord, feat, np.arange(n), 0.1, capacity, 3, PATCH, ratio=1.0)


def _views():
  return [_view(128, 1, 128), _view(64, 2, 128), _view(1, 3, 64), _view(150, 4, 192)]


def test_layout_rules():
  offsets, end = packing.layout([150, 10, 64, 60, 1, 3], 64)
  # Long view first on its own 3 patches; then short views first-fit decreasing: [64], [60, 3, 1], [10].
  assert offsets[0] == 0
  assert offsets[2] == 192 and offsets[3] == 256 and offsets[5] == 316 and offsets[4] == 319
  assert offsets[1] == 320 and end == 330
  for off, n in zip(offsets, [150, 10, 64, 60, 1, 3]):  # short views never straddle a patch boundary
    assert n > 64 or off // 64 == (off + n - 1) // 64
  assert packing.layout([64, 64], 64)[1] == 128 and packing.layout([65], 64)[1] == 128
  assert packing.calibrate(np.array([[100, 5], [300, 7], [200, 9]]), 64) == [304, 16]  # max, up to 8 slots


def test_pack_overflow_names_stage():
  sets = _views()
  with pytest.raises(packing.PackOverflowError, match="stage 0.*sequence positions"):
    packing.pack_point_sets(sets, [512, 512, 512], PATCH, sequence=[256, 512, 512])
  with pytest.raises(packing.PackOverflowError, match="stage 1.*slots"):
    packing.pack_point_sets(sets, [512, 64, 512], PATCH, sequence=[512, 512, 512])


def _packed():
  sets = _views()
  counts = np.array([packing.stage_counts(s) for s in sets])
  # Compact slots (real points + 8 spare) and a separate, longer attention sequence (the layout's footprint,
  # whole patches): the partial last patches and the short views' shared patch leave gaps in the sequence.
  caps = [packing.round_capacity(v) + 8 for v in counts.sum(0)]
  seq = [packing.round_sequence(v, PATCH) for v in packing.footprints(counts, PATCH)]
  assert seq[0] > caps[0]  # gaps exist: the sequence is longer than the slots
  packed, starts = packing.pack_point_sets(sets, caps, PATCH, sequence=seq)
  return sets, counts, packed, starts


def _batched(tree):
  return jax.tree.map(lambda x: jnp.asarray(x)[None], tree)


@functools.partial(jax.jit, static_argnames=("train", "spec"))
def _apply(params, points, *, train, spec, rng=None):
  """encoder.apply, jitted: run eagerly, the encoder dispatches (and compiles) every primitive op by op per shape,
  which took minutes for the handful of views here."""
  return encoder.apply(params, points, train=train, rng=rng, spec=spec)


def test_packed_structure():
  sets, counts, packed, starts = _packed()
  assert counts[2].tolist() == [1, 1, 1]  # the single-point view stays one point at the deepest stage
  for s, st in enumerate(packed.stages):
    seg = st.segment
    assert np.array_equal(np.bincount(seg[st.valid], minlength=4), counts[:, s])
    assert np.all(seg[~st.valid] == 4)
    nb = st.neighbors[st.valid]
    hit = nb < st.valid.shape[0]
    assert np.all(seg[nb[hit]] == np.repeat(seg[st.valid], 27).reshape(nb.shape)[hit])  # never across views
    cap, length = st.valid.shape[0], st.order.shape[1]
    for o in range(st.order.shape[0]):
      # Every real slot at exactly one sequence position; gaps read the sentinel; padding slots are read by none.
      used = st.order[o][st.order[o] < cap]
      assert np.array_equal(np.sort(used), np.flatnonzero(st.valid))
      assert np.array_equal(st.inverse[o][used], np.flatnonzero(st.order[o] < cap))
      assert np.all(st.inverse[o][~st.valid] == length)
  for s, parent in enumerate(packed.parent):
    real = packed.stages[s].valid
    assert np.all(packed.stages[s + 1].segment[parent[real]] == packed.stages[s].segment[real])


@pytest.mark.system
def test_packed_features_and_gradients_equal_unpacked():
  sets, counts, packed, starts = _packed()
  params = encoder.init(jax.random.key(0), _batched(sets[0]), CFG)
  weights = [1.0, 2.0, 3.0, 0.5]

  def per_view(p, points, m, lo):
    out = _apply(p, points, train=False, spec=CFG)[0]
    return out[lo:lo + counts[m, 0]]

  def loss_unpacked(p):
    return sum(w * jnp.sum(jnp.sin(per_view(p, _batched(s), m, 0)))
               for m, (w, s) in enumerate(zip(weights, sets)))

  def loss_packed(p):
    pts = _batched(packed)
    return sum(w * jnp.sum(jnp.sin(per_view(p, pts, m, starts[m]))) for m, w in enumerate(weights))

  forward = jax.jit(lambda p, points: _apply(p, points, train=False, spec=CFG)[0])
  out = forward(params, _batched(packed))
  for m, s in enumerate(sets):
    want = forward(params, _batched(s))[:counts[m, 0]]
    np.testing.assert_allclose(out[starts[m]:starts[m] + counts[m, 0]], want, atol=1e-5)
  assert np.all(np.asarray(out)[~packed.valid] == 0)
  g_u = jax.jit(jax.grad(loss_unpacked))(params)
  g_p = jax.jit(jax.grad(loss_packed))(params)
  # Entries are sums of many signed terms (cancellation), so the bound is relative to each leaf's scale.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()) + 1e-7),
               g_p, g_u)


class _Counted:
  """A stand-in SceneExample with given per-view stage counts (what `fill_pack` reads)."""

  def __init__(self, index, teacher, student):
    self.index, self._c = index, {"teacher": np.array(teacher), "student": np.array(student)}

  def counts(self, branch):
    return self._c[branch]


def test_fill_pack_takes_the_fullest_first_fit_pass_over_the_window():
  import itertools
  from dos_jax.batching import spec as spec_lib
  from dos_jax.errors import DataError
  spec = spec_lib.PackSpec(teacher=(100, 40), student=(50, 20), teacher_sequence=(160, 64),
                           student_sequence=(64, 32), pack_scenes=8, patch_size=16, num_views=2)
  # Scene sizes (teacher stage 0 per view; a scene is 2 views): window order first-fit takes 0, 1 (80 slots) and
  # 3 (90); 2 (30 per view) then never fits. 2 with 3, 7 and 0 or 1 holds 98 slots.
  sizes = {0: 20, 1: 20, 2: 30, 3: 5, 4: 40, 5: 40, 6: 60, 7: 1}
  def example(g):
    n = sizes[g % 8]
    return _Counted(g, [[n, n // 4]] * 2, [[n // 2, n // 8]] * 2)
  read = []
  members = packing.fill_pack(lambda g: read.append(g) or example(g), 0, spec)
  assert sorted(read) == list(range(8))  # every example of the window built once
  ids = [m.index for m in members]
  assert ids == sorted(ids)
  cat = lambda ms, b: np.concatenate([m.counts(b) for m in ms])
  assert packing.fits(cat(members, "teacher"), cat(members, "student"), spec)
  value = packing.pack_value(cat(members, "teacher"), cat(members, "student"), spec)
  # Independent: every subset of the window, by brute force.
  window = [example(g) for g in range(8)]
  fitting = [c for r in range(1, 9) for c in itertools.combinations(window, r)
             if packing.fits(cat(c, "teacher"), cat(c, "student"), spec)]
  in_order = packing.first_fit([(e.counts("teacher"), e.counts("student")) for e in window], range(8), spec)
  assert in_order == [0, 1, 3, 7]
  best = max(packing.pack_value(cat(c, "teacher"), cat(c, "student"), spec) for c in fitting)
  order_value = packing.pack_value(cat([window[i] for i in in_order], "teacher"),
                                   cat([window[i] for i in in_order], "student"), spec)
  # Another order found a fuller pack than window order (here: the fullest of all), never an emptier one.
  assert order_value < value <= best + 1e-12
  assert value == pytest.approx(best, rel=1e-12)
  # The same window gives the same pack (a pure function of the examples and the window's start).
  assert [m.index for m in packing.fill_pack(example, 0, spec)] == ids
  # A scene too large for an empty pack is skipped (and counted); a window of only such scenes is an error.
  stats = {}
  members = packing.fill_pack(lambda g: _Counted(g, [[60, 1]] * 2, [[1, 1]] * 2) if g == 6 else example(g), 6,
                              spec, stats)
  assert 6 not in [m.index for m in members] and stats == {"oversize_scenes": 1}
  with pytest.raises(DataError, match="no scene of global examples 6..13 fits"):
    packing.fill_pack(lambda g: _Counted(g, [[60, 1]] * 2, [[1, 1]] * 2), 6, spec)
  # The sequence budget binds too: two views of 17 points need 2 patches each at stage 0 (4 x 16 > 48).
  tight = spec_lib.PackSpec(teacher=(100, 40), student=(50, 20), teacher_sequence=(48, 64),
                            student_sequence=(64, 32), pack_scenes=2, patch_size=16, num_views=2)
  assert not packing.fits(np.array([[17, 1], [17, 1]]), np.array([[1, 1], [1, 1]]), tight)
  assert packing.fits(np.array([[16, 1], [16, 1]]), np.array([[1, 1], [1, 1]]), tight)


def test_pipeline_packs_are_budget_filled_scenes():
  """The training pipeline's packs: whole scenes of each window (`fill_pack`), within the budgets, every view's
  points and indices as the examples built them; targets at the same view's teacher slots, cross-view matches at
  the other view of the same scene; empty segments marked."""
  from configs import synthetic_tiny
  from dos_jax.batching import pipeline
  from dos_jax.batching import spec as spec_lib
  from dos_jax.data import catalog
  cfg = synthetic_tiny.get_config("smoke")
  cfg.batch_size, cfg.data.capacity, cfg.data.student_capacity = 6, 512, 256
  cfg.data.pack_scenes = 3
  cfg.data.packed_capacity, cfg.data.packed_student_capacity = (2048, 1024, 512), (1024, 512, 256)
  source = catalog.scene_source(cfg.data, "train")
  spec = spec_lib.pipeline_spec(cfg)
  batch = pipeline.process_batches(spec, source)[1]
  examples = pipeline.global_examples(spec, source)
  assert batch.teacher.coord.shape == (2, 2048, 3) and batch.view_valid.shape == (2, 6)
  for k, g in enumerate((2, 3)):  # step 1 = packs 2, 3
    members = pipeline.pack_members(spec, examples, g)
    assert 1 <= len(members) < 3  # the smoke views fill their capacities: two scenes per budget
    ids = [m.index for m in members]  # scenes of the pack's own window, in window order
    assert ids == sorted(ids) and set(ids) <= set(range(3 * g, 3 * g + 3))
    views = [p for m in members for p in m.views]
    assert batch.view_valid[k].tolist() == [m < len(views) for m in range(6)]
    seg = batch.teacher.stages[0].segment[k]
    for m, piece in enumerate(views):
      np.testing.assert_array_equal(batch.teacher.coord[k][seg == m], piece.teacher.coord[piece.teacher.valid])
    assert np.all(seg[len(seg) - np.count_nonzero(seg == 6):] == 6)  # padding slots: segment M
    t_seg, s_seg = seg, batch.student.stages[0].segment[k]
    ok = batch.target_valid[k]
    assert ok.any() and np.all(t_seg[batch.target_index[k][ok]] == s_seg[ok])
    ok = batch.cross_valid[k]
    assert ok.any() and np.all(t_seg[batch.cross_index[k][ok]] == s_seg[ok] // 2 * 2 + (1 - s_seg[ok] % 2))


@pytest.mark.system
def test_drop_path_masks_follow_the_view_not_its_place():
  """With drop path on, a view's features depend on its global index (PointSet.view_id), not on where it sits in
  a pack: the same views packed in reverse order (same ids) give each view the same features (float32 rounding,
  as above); changing only the ids changes them (masks at rate 0.5 differ in O(1) of the rows)."""
  sets = _views()
  counts = np.array([packing.stage_counts(s) for s in sets])
  caps = [packing.round_capacity(v) for v in counts.sum(0)]
  seq = [packing.round_sequence(v, PATCH) + PATCH for v in packing.footprints(counts, PATCH)]
  cfg = ModelSpec(variant="tiny", drop_path=0.5)
  order = [3, 1, 0, 2]
  fwd, starts = packing.pack_point_sets(sets, caps, PATCH, sequence=seq, view_ids=[10, 11, 12, 13])
  rev, r_starts = packing.pack_point_sets([sets[m] for m in order], caps, PATCH, sequence=seq,
                                          view_ids=[10 + m for m in order])
  other, _ = packing.pack_point_sets(sets, caps, PATCH, sequence=seq, view_ids=[20, 21, 22, 23])
  params = encoder.init(jax.random.key(0), _batched(sets[0]), cfg)
  run = lambda pts: np.asarray(_apply(params, _batched(pts), train=True, rng=jax.random.key(5), spec=cfg)[0])
  out_f, out_r, out_o = run(fwd), run(rev), run(other)
  for j, m in enumerate(order):
    a = out_f[starts[m]:starts[m] + counts[m, 0]]
    np.testing.assert_allclose(out_r[r_starts[j]:r_starts[j] + counts[m, 0]], a, atol=1e-5)
  big = int(np.argmax(counts[:, 0]))
  rows = slice(starts[big], starts[big] + counts[big, 0])
  assert np.mean(np.any(np.abs(out_o[rows] - out_f[rows]) > 1e-3, axis=1)) > 0.2


@pytest.mark.system
def test_per_stage_patch_sizes_are_read_by_the_packer():
  """An upstream-style model with one patch size per stage (enc_patch_size): the packer lays out each stage with
  its own patch (long views on boundaries of THAT stage's patch), and the packed features equal the per-view ones
  (same tolerance as above). A tuple of the wrong length is a ValueError."""
  sizes = (64, 32, 16)
  cfg = ModelSpec(architecture=variants.Architecture(
      type="PT-v3m2", channels=(16, 32, 64), depths=(1, 1, 1), heads=(1, 2, 4), patch_sizes=sizes,
      orders=variants.ORDERS, mask_token=True, layer_scale=False))
  sets = _views()
  counts = np.array([packing.stage_counts(s) for s in sets])
  seq = [packing.round_sequence(v, p) for v, p in zip(packing.footprints(counts, sizes), sizes)]
  assert seq != [packing.round_sequence(v, PATCH) for v in packing.footprints(counts, PATCH)]
  packed, starts = packing.pack_point_sets(sets, list(counts.sum(0)), sizes, sequence=seq)
  for s, p in enumerate(sizes):
    offsets, _ = packing.layout(counts[:, s], p)
    for m in np.flatnonzero(counts[:, s] > p):  # long views start on a patch boundary of this stage
      first_slot = int(np.sum(counts[:m, s])) + sets[m].stages[s].order[0, 0]  # the view's first point in order 0
      assert offsets[m] % p == 0 and packed.stages[s].order[0, offsets[m]] == first_slot
  params = encoder.init(jax.random.key(0), _batched(sets[0]), cfg)
  out = _apply(params, _batched(packed), train=False, spec=cfg)[0]
  for m, s in enumerate(sets):
    want = _apply(params, _batched(s), train=False, spec=cfg)[0][:counts[m, 0]]
    np.testing.assert_allclose(out[starts[m]:starts[m] + counts[m, 0]], want, atol=1e-5)
  with pytest.raises(ValueError, match="per-stage patch sizes"):
    packing.pack_point_sets(sets, list(counts.sum(0)), (64, 32), sequence=seq)


def test_fill_usage_is_the_most_any_pack_used_and_shrinking_to_it_keeps_the_packs():
  """`calibrate --tighten`: budgets shrunk to fill_usage give the same packs on the same examples."""
  import dataclasses
  from dos_jax.batching import spec as spec_lib
  spec = spec_lib.PackSpec(teacher=(400, 120), student=(200, 60), teacher_sequence=(512, 160),
                           student_sequence=(256, 96), pack_scenes=6, patch_size=32, num_views=2)
  rng = np.random.default_rng(0)
  counts = []
  for _ in range(36):
    t = rng.integers(10, 90, size=(2, 1))
    counts.append({"teacher": np.concatenate([t, t // 3], 1), "student": np.concatenate([t // 2, t // 6], 1)})
  use = packing.fill_usage(counts, spec)
  assert use["packs"] == 6
  members = [[m.index for m in packing.fill_pack(lambda g: packing._Counted(g, counts[g]), k * 6, spec)]
             for k in range(6)]
  # independent: the per-pack totals and footprints recomputed from the member lists
  for name in ("teacher", "student"):
    totals = [sum(counts[g][name] for g in m).sum(0) for m in members]
    assert np.array_equal(use[name], np.max(totals, axis=0))
    fps = [packing.footprints(np.concatenate([counts[g][name] for g in m]), 32) for m in members]
    assert np.array_equal(use[f"{name}_sequence"], np.max(fps, axis=0))
  shrunk = dataclasses.replace(spec, teacher=tuple(int(v) for v in use["teacher"]),
                               student=tuple(int(v) for v in use["student"]),
                               teacher_sequence=tuple(int(v) for v in use["teacher_sequence"]),
                               student_sequence=tuple(int(v) for v in use["student_sequence"]))
  assert tuple(use["teacher"]) != spec.teacher  # the budgets did shrink
  again = [[m.index for m in packing.fill_pack(lambda g: packing._Counted(g, counts[g]), k * 6, shrunk)]
           for k in range(6)]
  assert again == members
