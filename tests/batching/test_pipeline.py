"""The input pipeline: the global batch of a step does not depend on the process count; resume by step; workers.

The must-show of multi-host data: for steps t, the slices that 2 and 4 processes build concatenate (in process
order, as `jax.make_array_from_process_local_data` assembles them) to the 1-process batch, array for array and
bit for bit - packs, scenes and every host-side random draw (crop, augmentation, mask) alike. The test config
has one scene per pack at its per-view capacities (batch_size packs per step), and a budget-filled variant.
"""

import numpy as np
import pytest

from dos_jax.batching import packing
from dos_jax.batching import patches
from dos_jax.batching import pipeline
from dos_jax.batching import spec as spec_lib
from dos_jax.data.scene import Scene
from dos_jax.errors import ConfigError, DataError
from tests import batching as helpers


def _spec(batch_size: int, **kw) -> spec_lib.PipelineSpec:
  """The decoded pipeline of the small test config with `batch_size` examples per step."""
  return spec_lib.pipeline_spec(helpers.cfg(batch_size=batch_size, **kw))


# Two scenes' worth of slots at each stage (the test rooms' views fill their 512 / 256 capacities), so a window of
# three scenes holds two of them: budget-filled packs whose scene counts are not the window.
FILLED = {"data.pack_scenes": 3, "data.packed_capacity": (2048, 1024, 512),
          "data.packed_student_capacity": (1024, 512, 256)}


def _assert_same(a, b):
  names_a = [k for k, _ in helpers.leaves(a)]
  assert names_a == [k for k, _ in helpers.leaves(b)]
  for (k, x), (_, y) in zip(helpers.leaves(a), helpers.leaves(b)):
    assert x.dtype == y.dtype, k
    np.testing.assert_array_equal(x, y, err_msg=k)


def _concat(batches):
  """Process batches [B/P, V, ...] -> [B, V, ...] in process order (what the global jax.Array holds)."""
  flat = [list(helpers.leaves(b)) for b in batches]
  return {name: np.concatenate([f[i][1] for f in flat]) for i, (name, _) in enumerate(flat[0])}


@pytest.mark.parametrize("steps,filled", [((0, 2), False), ((1,), True)])
def test_process_slices_concatenate_to_the_one_process_batch(steps, filled):
  spec = _spec(12, **FILLED) if filled else _spec(4)
  one = pipeline.process_batches(spec, helpers.SCENES)
  for t in steps:  # step 2 = examples 8..11: crosses from epoch 2 into epoch 3 of the 3 scenes
    reference = dict(helpers.leaves(one[t]))
    assert reference[".teacher.coord"].shape[0] == 4
    for count in (2, 4):
      parts = [pipeline.process_batches(spec, helpers.SCENES, p, count)[t] for p in range(count)]
      assert all(dict(helpers.leaves(x))[".teacher.coord"].shape[0] == 4 // count for x in parts)
      got = _concat(parts)
      assert list(got) == list(reference)
      for name, x in reference.items():
        np.testing.assert_array_equal(got[name], x, err_msg=f"step {t}, {count} processes: {name}")
  if filled:  # the packs hold whole scenes, fewer than their windows
    views = reference[".view_valid"].sum(1)
    assert np.all(views % 2 == 0) and np.all(views < 6) and np.all(views >= 2)
    return
  # The batch is not trivially constant: steps differ, and two examples of the same scene differ (own draws).
  a, b = dict(helpers.leaves(one[0])), dict(helpers.leaves(one[1]))
  assert not np.array_equal(a[".teacher.coord"], b[".teacher.coord"])
  order = pipeline.scene_indices(3, spec.seed, range(12))
  same_scene = [g for g in range(1, 4) if order[g] == order[0]] or [g for g in range(3, 6) if order[g] == order[0]]
  g = same_scene[0]
  x = dict(helpers.leaves(one[g // 4]))[".teacher.point_index"][g % 4]
  assert not np.array_equal(a[".teacher.point_index"][0], x)


def test_example_is_its_scene_through_train_views():
  # Entry g of the global sequence is train_views of scene order[g]: same result as calling it directly with the
  # Generator grain hands out for g (one Philox stream per example, independent of what else is built).
  spec = _spec(2)
  examples = pipeline.global_examples(spec, helpers.SCENES)
  order = pipeline.scene_indices(len(helpers.SCENES), spec.seed, range(5))
  for g in (4, 1):  # out of order: nothing depends on what was built before
    pieces = examples[g].views
    assert examples[g].index == g
    assert pieces[0].teacher.point_index.max() < helpers.SCENES[order[g]].num_points
    ids = pieces[0].teacher.point_index[pieces[0].teacher.valid]
    assert np.unique(ids).size == ids.size
  batch = pipeline.process_batches(spec, helpers.SCENES)[2]
  want = patches.stack_tree([packing.build_pack([examples[g]], spec.pack) for g in (4, 5)])
  _assert_same(batch, want)


def test_scene_order_visits_every_scene_once_per_epoch():
  order = pipeline.scene_indices(5, 0, range(15))
  for e in range(3):
    assert sorted(order[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4]
  assert len({tuple(order[5 * e:5 * e + 5]) for e in range(3)}) > 1  # a fresh permutation per epoch
  assert not np.array_equal(pipeline.scene_indices(5, 1, range(15)), order)  # the seed matters
  # Seeds s and s+1 do not share permutations shifted by one epoch (grain seeds epoch e with seed + e).
  assert not np.array_equal(pipeline.scene_indices(50, 1, range(50)), pipeline.scene_indices(50, 0, range(50, 100)))


def test_iterator_is_a_pure_function_of_step():
  spec = _spec(2)
  with pipeline.TrainIterator(spec, helpers.SCENES, start_step=0, num_workers=2, prefetch=3) as it:
    batches = [next(it) for _ in range(4)]
  with pipeline.TrainIterator(spec, helpers.SCENES, start_step=2, num_workers=0) as it:
    resumed = next(it)
    assert it.step == 3
  _assert_same(batches[2], resumed)
  with pipeline.TrainIterator(spec, helpers.SCENES, start_step=3, num_workers=1, process_index=1,
                              process_count=2) as it:
    half = next(it)
  assert half.teacher.coord.shape[0] == 1
  np.testing.assert_array_equal(half.teacher.coord[0], batches[3].teacher.coord[1])
  with pytest.raises(ConfigError, match="2 packs per step must be a positive multiple of the process count 4"):
    pipeline.TrainIterator(spec, helpers.SCENES, process_index=0, process_count=4)


def test_iterator_raises_data_errors_from_workers():
  bad = Scene(coord=np.zeros((0, 3), np.float32), color=np.zeros((0, 3), np.float32), name="empty_scene")
  spec = _spec(1)
  with pipeline.TrainIterator(spec, [bad], num_workers=1, prefetch=2) as it:
    with pytest.raises(DataError, match="empty_scene"):
      next(it)


@pytest.mark.system
def test_process_backend_matches_threads():
  spec = _spec(2)
  reference = pipeline.TrainIterator(spec, helpers.SCENES, num_workers=0)
  with pipeline.TrainIterator(spec, helpers.SCENES, start_step=1, num_workers=2, prefetch=1, backend="process") as it:
    got = [next(it) for _ in range(3)]  # steps 1, 2, 3: two workers own alternate steps
  for t, batch in zip((1, 2, 3), got):
    _assert_same(reference.batch_at(t), batch)
  with pytest.raises(ValueError, match="backend='fibers'"):
    pipeline.TrainIterator(spec, helpers.SCENES, backend="fibers")

  class Unpicklable(list):
    def __reduce__(self):
      raise TypeError("no pickling")
  with pytest.raises(ConfigError, match="picklable"):
    pipeline.TrainIterator(spec, Unpicklable(helpers.SCENES), num_workers=1, backend="process")
