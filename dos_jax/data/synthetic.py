"""Synthetic labelled scenes, the embedded default: indoor rooms and outdoor LiDAR sweeps, deterministic by seed.

`make_scene(seed, kind)` draws everything from `numpy.random.default_rng(seed)` (seed: int or tuple of ints), so a
seed names one scene exactly. Both kinds have `NUM_CLASSES` = 24 semantic classes whose point frequencies follow
a long tail (walls/floor or road/building hold most points; cups, clocks, hydrants and cones a few dozen), and
`CLASS_GROUPS[kind]` records the head / common / tail split measured on 64 scenes (`measure_frequencies`).

  indoor   (`synthetic_indoor`)  a 4-6 m x 4-6 m x 2.4-3 m room with furniture sampled on surfaces, normals and
           per-class colours; about 20k-40k points.
  longtail (`synthetic_longtail`) rooms whose 4 tail classes are rare but ~3+ voxels wide with their own shapes
           (12 classes), so a long-tail prior can be tested at CPU scale.
  outdoor  (`synthetic_outdoor`) a street ray-cast from a 32-beam LiDAR at (0, 0, 1.7) m, with per-class colour (as
           in a camera-colourised sweep), intensity (`strength`) and normals; about 30k-60k points.

Classes differ in shape, height and colour, so they can be learned from geometry + colour (a nearest-centroid
probe on colour and height alone reaches ~0.9 mean class recall).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from dos_jax.data import scene as scene_lib
from dos_jax.data import synthetic_indoor
from dos_jax.data import synthetic_longtail
from dos_jax.data import synthetic_outdoor

NUM_CLASSES = 24  # of 'indoor' and 'outdoor'; 'longtail' has 12 (len(CLASS_NAMES[kind]) in general)
CLASS_NAMES = {"indoor": synthetic_indoor.CLASS_NAMES, "outdoor": synthetic_outdoor.CLASS_NAMES,
               "longtail": synthetic_longtail.CLASS_NAMES}
_GENERATORS = {"indoor": synthetic_indoor, "outdoor": synthetic_outdoor, "longtail": synthetic_longtail}
KINDS = tuple(CLASS_NAMES)
# From measure_frequencies(kind, 64) (seed 0): head >= 3% of the points, tail < 0.5%, common in between.
# Indoor: wall 40%, floor 19%, ceiling 13% ... cabinet 3.6%; pillow 0.49% ... cup 0.18% (head/tail ratio 226).
# Outdoor: road 32%, building 20% ... car 3.3%; trash_can 0.42% ... fire_hydrant 0.039% (ratio 832).
CLASS_GROUPS = {
    "indoor": {"head": list(range(0, 6)), "common": list(range(6, 18)), "tail": list(range(18, 24))},
    "outdoor": {"head": list(range(0, 6)), "common": list(range(6, 16)), "tail": list(range(16, 24))},
    "longtail": synthetic_longtail.GROUPS,
}

Seed = Union[int, Sequence[int]]


# ================================================================================================ public API
def make_scene(seed: Seed, kind: str = "indoor", num_points: Optional[int] = None) -> scene_lib.Scene:
  """One synthetic scene, a pure function of (seed, kind, num_points).

  Args:
    seed: int or sequence of ints (e.g. (run_seed, split, index)); fed to `numpy.random.default_rng`.
    kind: 'indoor' (room, ~20k-40k points), 'outdoor' (LiDAR sweep, ~30k-60k points) or 'longtail' (rooms whose
      rare classes are learnable shapes, `synthetic_longtail`).
    num_points: exact point count wanted (denser sampling / more azimuth columns, then a random subset);
      None keeps the natural count.

  Returns:
    Scene with coord f32[N, 3] (metres, z up), color f32[N, 3] in [0, 1] (multiples of 1/255), normal f32[N, 3],
    segment i32[N] in [0, NUM_CLASSES), instance i32[N] (-1 for stuff), strength f32[N] (outdoor only).
  """
  if kind not in CLASS_NAMES:
    raise ValueError(f"synthetic kind must be one of {KINDS}, got {kind!r}")
  if num_points is not None and num_points < 1:
    raise ValueError(f"num_points must be >= 1, got {num_points}")
  rng = np.random.default_rng(seed)
  generator = _GENERATORS[kind]
  coord, color, normal, seg, inst, strength = generator.generate(rng, num_points)
  if num_points and len(coord) > num_points:
    idx = np.sort(rng.choice(len(coord), num_points, replace=False))
    coord, color, normal, seg, inst = coord[idx], color[idx], normal[idx], seg[idx], inst[idx]
    strength = None if strength is None else strength[idx]
  seed_name = "-".join(str(s) for s in np.atleast_1d(seed))
  # 8-bit colour like a real RGB sensor, divided in float32 exactly as load_scene does: storage round-trips exactly.
  color = np.round(color * 255).astype(np.float32) / np.float32(255.0)
  return scene_lib.Scene(
      coord=coord.astype(np.float32), color=color.astype(np.float32), normal=normal.astype(np.float32),
      segment=seg.astype(np.int32), instance=inst.astype(np.int32), name=f"synthetic-{kind}-{seed_name}",
      strength=None if strength is None else strength.astype(np.float32))


def measure_frequencies(kind: str, num_scenes: int = 64, seed: int = 0) -> np.ndarray:
  """Fraction of points per class f64[NUM_CLASSES] over scenes seeded (seed, i), i < num_scenes."""
  num_classes = len(CLASS_NAMES[kind])
  counts = np.zeros(num_classes)
  for i in range(num_scenes):
    counts += np.bincount(make_scene((seed, i), kind).segment, minlength=num_classes)
  return counts / counts.sum()


def groups_from_frequencies(freq: np.ndarray, head: float = 0.03, tail: float = 0.005) -> dict:
  """{'head': ids with freq >= head, 'common': in between, 'tail': freq < tail}, each sorted by decreasing freq."""
  order = [int(c) for c in np.argsort(-freq, kind="stable")]
  return {"head": [c for c in order if freq[c] >= head],
          "common": [c for c in order if tail <= freq[c] < head],
          "tail": [c for c in order if freq[c] < tail]}
