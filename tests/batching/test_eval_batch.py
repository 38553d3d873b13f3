"""Evaluation batches: one deterministic grid-sampled view per scene; inverse maps to every original point."""

import numpy as np

from dos_jax.batching import eval_batch
from dos_jax.batching import spec as spec_lib
from tests import batching as helpers


def test_labeled_batch_and_inverse():
  cfg = helpers.cfg()
  batch, inverse = eval_batch.make_labeled_batch(helpers.SCENES[:2], spec_lib.batch_spec(cfg), capacity=4096)
  assert batch.points.coord.shape == (2, 4096, 3) and batch.segment.shape == (2, 4096)
  for b, scene in enumerate(helpers.SCENES[:2]):
    inv = inverse[b]
    assert inv.shape == (scene.num_points,)
    pts = batch.points
    assert pts.valid[b][inv].all()
    # Each original point maps to the representative of its own voxel (voxels of the centred scene: x, y
    # bounding-box centre and minimum z at 0).
    lo, hi = scene.coord.min(0), scene.coord.max(0)
    centred = scene.coord - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], np.float32)
    vox = np.floor(centred.astype(np.float64) / cfg.data.grid_size).astype(int)
    rep = pts.point_index[b][inv]
    np.testing.assert_array_equal(vox[rep], vox)
    np.testing.assert_array_equal(batch.segment[b][inv], scene.segment[rep])
    assert (batch.segment[b][~pts.valid[b]] == -1).all()
  # Too small a capacity: deterministic subsample; dropped points map to their nearest kept point.
  small, inv_small = eval_batch.make_labeled_batch(helpers.SCENES[:1], spec_lib.batch_spec(cfg), capacity=512)
  again, _ = eval_batch.make_labeled_batch(helpers.SCENES[:1], spec_lib.batch_spec(cfg), capacity=512)
  np.testing.assert_array_equal(small.points.point_index, again.points.point_index)
  kept = small.points.point_index[0][inv_small[0]]
  assert small.points.valid[0][inv_small[0]].all()
  d = np.linalg.norm(helpers.SCENES[0].coord[kept] - helpers.SCENES[0].coord, axis=1)
  assert np.median(d) < 0.15
