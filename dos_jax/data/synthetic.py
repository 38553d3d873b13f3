"""Synthetic labelled scenes, the embedded default: indoor rooms and outdoor LiDAR sweeps, deterministic by seed.

`make_scene(seed, kind)` draws everything from `numpy.random.default_rng(seed)` (seed: int or tuple of ints), so a
seed names one scene exactly. Both kinds have `NUM_CLASSES` = 24 semantic classes whose point frequencies follow
a long tail (walls/floor or road/terrain hold most points; cups, clocks, hydrants and cones a few dozen), and
`CLASS_GROUPS[kind]` records the head / common / tail split measured on 64 scenes (`measure_frequencies`).

Indoor: a 4-6 m x 4-6 m x 2.4-3 m room (floor at z = 0, centred on the origin): walls with door/window openings,
optional ceiling, furniture built from boxes, cylinders and spheres. Points are sampled uniformly on surfaces
(small props at a higher density, as in scanned meshes) with outward normals, per-class colours with per-object and
per-point noise, and ~5 mm position noise. About 20k-40k points.

Outdoor: a street ray-cast from a 32-beam spinning LiDAR at (0, 0, 1.7) m (elevation -25..+5 deg, 0.25 deg azimuth, 60 m
range, 2 cm range noise, 5% dropout): road with lane markings, raised sidewalks, parking, terrain, buildings, walls,
fences, trees, poles, signs, vehicles, people, street furniture. Points carry per-class colour (as in a
camera-colourised sweep), intensity (`strength`) and normals. About 30k-60k points.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from dos_jax.data import scene as scene_lib

NUM_CLASSES = 24
# Class ids follow the measured point frequency (id 0 = most frequent), so each group is a contiguous id range.
CLASS_NAMES = {
    "indoor": ("wall", "floor", "ceiling", "cabinet", "bed", "bookshelf", "table", "chair", "sofa", "door", "rug",
               "book", "window", "plant", "box", "picture", "desk", "lamp", "pillow", "curtain", "trash_bin",
               "monitor", "clock", "cup"),
    "outdoor": ("road", "building", "sidewalk", "terrain", "vegetation", "car", "truck", "trunk", "bus", "fence",
                "pole", "lane_marking", "parking", "wall", "motorcycle", "person", "trash_can", "bicycle", "bench",
                "traffic_cone", "bollard", "traffic_light", "traffic_sign", "fire_hydrant"),
}
KINDS = tuple(CLASS_NAMES)
# From measure_frequencies(kind, 64) (seed 0): head >= 3% of the points, tail < 0.5%, common in between.
# Indoor: wall 40%, floor 19%, ceiling 13% ... cabinet 3.6%; pillow 0.49% ... cup 0.18% (head/tail ratio 226).
# Outdoor: road 32%, building 20% ... car 3.3%; trash_can 0.42% ... fire_hydrant 0.039% (ratio 832).
CLASS_GROUPS = {
    "indoor": {"head": list(range(0, 6)), "common": list(range(6, 18)), "tail": list(range(18, 24))},
    "outdoor": {"head": list(range(0, 6)), "common": list(range(6, 16)), "tail": list(range(16, 24))},
}

Seed = Union[int, Sequence[int]]

# Distinct base colours (RGB in [0, 1]) per class.
_COLORS_IN = {
    'wall': (0.85, 0.82, 0.75),
    'floor': (0.55, 0.40, 0.28),
    'ceiling': (0.95, 0.95, 0.92),
    'bed': (0.30, 0.45, 0.75),
    'table': (0.65, 0.50, 0.30),
    'cabinet': (0.45, 0.30, 0.20),
    'sofa': (0.70, 0.20, 0.25),
    'chair': (0.20, 0.20, 0.22),
    'bookshelf': (0.50, 0.35, 0.55),
    'desk': (0.80, 0.75, 0.55),
    'rug': (0.60, 0.15, 0.10),
    'door': (0.40, 0.25, 0.15),
    'curtain': (0.90, 0.60, 0.30),
    'window': (0.55, 0.80, 0.95),
    'box': (0.75, 0.60, 0.40),
    'lamp': (1.00, 0.90, 0.50),
    'plant': (0.20, 0.60, 0.20),
    'trash_bin': (0.35, 0.50, 0.45),
    'pillow': (0.95, 0.85, 0.90),
    'monitor': (0.05, 0.05, 0.10),
    'picture': (0.90, 0.30, 0.60),
    'book': (0.20, 0.35, 0.80),
    'clock': (0.98, 0.98, 0.30),
    'cup': (0.10, 0.80, 0.80),
}
# Outdoor: RGB as from a camera-colourised sweep, then LiDAR intensity (retro-reflective paint and signs are bright).
_COLORS_OUT = {
    'road': (0.25, 0.25, 0.27, 0.15),
    'terrain': (0.45, 0.55, 0.25, 0.30),
    'sidewalk': (0.65, 0.63, 0.60, 0.25),
    'building': (0.70, 0.55, 0.45, 0.35),
    'vegetation': (0.15, 0.45, 0.15, 0.40),
    'car': (0.70, 0.10, 0.10, 0.50),
    'parking': (0.35, 0.35, 0.42, 0.18),
    'wall': (0.80, 0.78, 0.70, 0.30),
    'fence': (0.55, 0.45, 0.30, 0.35),
    'trunk': (0.35, 0.25, 0.15, 0.30),
    'lane_marking': (0.95, 0.95, 0.95, 0.90),
    'pole': (0.55, 0.58, 0.62, 0.45),
    'truck': (0.20, 0.30, 0.60, 0.50),
    'bus': (0.95, 0.70, 0.10, 0.50),
    'person': (0.85, 0.55, 0.45, 0.30),
    'traffic_sign': (0.10, 0.30, 0.85, 0.95),
    'bench': (0.50, 0.30, 0.20, 0.35),
    'traffic_light': (0.10, 0.10, 0.10, 0.60),
    'bicycle': (0.10, 0.70, 0.70, 0.40),
    'trash_can': (0.30, 0.50, 0.30, 0.30),
    'motorcycle': (0.60, 0.10, 0.60, 0.50),
    'bollard': (0.75, 0.75, 0.20, 0.70),
    'fire_hydrant': (0.90, 0.15, 0.15, 0.60),
    'traffic_cone': (1.00, 0.45, 0.00, 0.85),
}
_PALETTE = np.array([_COLORS_IN[n] for n in CLASS_NAMES["indoor"]], np.float32)
_OUT_PALETTE = np.array([_COLORS_OUT[n][:3] for n in CLASS_NAMES["outdoor"]], np.float32)
_OUT_STRENGTH = np.array([_COLORS_OUT[n][3] for n in CLASS_NAMES["outdoor"]], np.float32)


# ================================================================================================ surface sampling
def _box_area(lo, hi, hide):
  s = hi - lo
  face = np.array([s[1] * s[2]] * 2 + [s[0] * s[2]] * 2 + [s[0] * s[1]] * 2)
  face[list(hide)] = 0.0
  return face


def _cyl_area(r, h, caps):
  return 2 * np.pi * r * h + np.pi * r * r * len(caps)


def _pick(rng, weights, idx):
  """For each point (its primitive `idx`), a part index drawn with probability proportional to weights[idx]."""
  cum = np.cumsum(weights, 1)
  cum = cum / cum[:, -1:]
  return np.minimum((rng.random(len(idx))[:, None] > cum[idx]).sum(1), weights.shape[1] - 1)


def _sample_boxes(rng, idx, lo, hi, w):
  """Points on box faces: idx i[n] primitive per point, lo/hi f[P, 3], w f[P, 6] face areas (0 = hidden face)."""
  n, rows = len(idx), np.arange(len(idx))
  face = _pick(rng, w, idx)
  axis, side = face // 2, face % 2
  lo, hi = lo[idx], hi[idx]
  pts = lo + rng.random((n, 3)) * (hi - lo)
  pts[rows, axis] = np.where(side == 1, hi[rows, axis], lo[rows, axis])
  nrm = np.zeros((n, 3))
  nrm[rows, axis] = np.where(side == 1, 1.0, -1.0)
  return pts, nrm


_PERM = np.array([[2, 0, 1], [0, 2, 1], [0, 1, 2]])   # local (u, v, along-axis) -> world, by cylinder axis


def _sample_cyls(rng, idx, base, r, h, axis, w):
  """Points on cylinders along `axis` (0/1/2) from base f[P, 3] to base + h; w f[P, 3]: side, bottom, top areas."""
  n = len(idx)
  part = _pick(rng, w, idx)
  r, h = r[idx], h[idx]
  ang = rng.uniform(0, 2 * np.pi, n)
  rad = np.where(part == 0, r, r * np.sqrt(rng.random(n)))
  along = np.where(part == 0, rng.random(n) * h, np.where(part == 2, h, 0.0))
  cos, sin, zero = np.cos(ang), np.sin(ang), np.zeros(n)
  local = np.stack([rad * cos, rad * sin, along], 1)
  cap = np.where(part == 2, 1.0, -1.0)
  lnrm = np.where((part == 0)[:, None], np.stack([cos, sin, zero], 1), np.stack([zero, zero, cap], 1))
  perm = _PERM[axis[idx]]
  return base[idx] + np.take_along_axis(local, perm, 1), np.take_along_axis(lnrm, perm, 1)


def _sample_spheres(rng, idx, c, r):
  v = rng.normal(size=(len(idx), 3))
  v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
  return c[idx] + r[idx, None] * v, v


class _Parts:
  """Primitive surfaces of one scene: (class, instance, sampler args, area) before sampling."""

  def __init__(self):
    self.items: List[tuple] = []
    self.cutouts: Dict[int, list] = {}   # part index -> axis-aligned boxes whose points are removed (openings)
    self.instances = 0

  def new_instance(self):
    self.instances += 1
    return self.instances - 1

  def box(self, cls, inst, lo, hi, hide=(4,)):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    self.items.append((cls, inst, "box", (lo, hi, hide), _box_area(lo, hi, hide).sum()))
    return len(self.items) - 1

  def cyl(self, cls, inst, base, r, h, axis=2, caps=(1,)):
    self.items.append((cls, inst, "cyl", (np.asarray(base, float), r, h, axis, caps), _cyl_area(r, h, caps)))

  def sphere(self, cls, inst, c, r):
    self.items.append((cls, inst, "sphere", (np.asarray(c, float), r), 4 * np.pi * r * r))


# ================================================================================================ indoor rooms
_SMALL = {"box": 2.0, "lamp": 3.0, "plant": 2.0, "trash_bin": 2.5, "pillow": 2.0, "monitor": 3.0, "picture": 3.0,
          "book": 1.5, "clock": 4.0, "cup": 5.0}   # density boost for small props
_IN = {name: i for i, name in enumerate(CLASS_NAMES["indoor"])}


def _fits(fp, used, margin=0.05):
  x0, x1, y0, y1 = fp
  return all(x1 + margin <= a0 or b1 + margin <= x0 or y1 + margin <= c0 or d1 + margin <= y0
             for a0, b1, c0, d1 in used)


def _wall_footprint(k, t, width, depth, L, W):
  """Footprint (x0, x1, y0, y1) of an object of `width` along wall k (0:-x 1:+x 2:-y 3:+y) and `depth` into the room."""
  if k < 2:
    x0 = -L / 2 if k == 0 else L / 2 - depth
    return (x0, x0 + depth, t - width / 2, t + width / 2)
  y0 = -W / 2 if k == 2 else W / 2 - depth
  return (t - width / 2, t + width / 2, y0, y0 + depth)


def _place_on_wall(rng, used, width, depth, L, W, tries=20):
  for _ in range(tries):
    k = int(rng.integers(4))
    span = (W if k < 2 else L) / 2 - width / 2 - 0.05
    if span <= 0:
      continue
    t = rng.uniform(-span, span)
    fp = _wall_footprint(k, t, width, depth, L, W)
    if _fits(fp, used):
      used.append(fp)
      return k, t, fp
  return None


def _place_free(rng, used, sx, sy, L, W, margin=0.3, tries=20):
  for _ in range(tries):
    x = rng.uniform(-L / 2 + sx / 2 + margin, L / 2 - sx / 2 - margin)
    y = rng.uniform(-W / 2 + sy / 2 + margin, W / 2 - sy / 2 - margin)
    fp = (x - sx / 2, x + sx / 2, y - sy / 2, y + sy / 2)
    if _fits(fp, used):
      used.append(fp)
      return fp
  return None


def _indoor_parts(rng):
  P, u = _Parts(), rng.uniform
  L, W, H = u(4.0, 6.0), u(4.0, 6.0), u(2.4, 3.0)
  # Wall k keeps only its face pointing into the room (a degenerate box is a rectangle).
  walls = [P.box(_IN["wall"], -1, (-L / 2, -W / 2, 0), (-L / 2, W / 2, H), hide=(0, 2, 3, 4, 5)),
           P.box(_IN["wall"], -1, (L / 2, -W / 2, 0), (L / 2, W / 2, H), hide=(1, 2, 3, 4, 5)),
           P.box(_IN["wall"], -1, (-L / 2, -W / 2, 0), (L / 2, -W / 2, H), hide=(0, 1, 2, 4, 5)),
           P.box(_IN["wall"], -1, (-L / 2, W / 2, 0), (L / 2, W / 2, H), hide=(0, 1, 3, 4, 5))]
  floor = P.box(_IN["floor"], -1, (-L / 2, -W / 2, 0), (L / 2, W / 2, 0), hide=(0, 1, 2, 3, 4))
  if rng.random() < 0.6:
    P.box(_IN["ceiling"], -1, (-L / 2, -W / 2, H), (L / 2, W / 2, H), hide=(0, 1, 2, 3, 5))
  used: list = []        # floor footprints of furniture
  wall_used: list = []   # footprints of door/window/picture slabs (they may sit above furniture)

  def on_wall(cls, width, depth, z0, z1, hide=(4,), occupied=None):
    placed = _place_on_wall(rng, used if occupied is None else occupied, width, depth, L, W)
    if placed is None:
      return None
    k, t, (x0, x1, y0, y1) = placed
    inst = P.new_instance()
    P.box(cls, inst, (x0, y0, z0), (x1, y1, z1), hide=tuple(set(hide) | {k}))
    return k, t, (x0, x1, y0, y1)

  def opening(cls, width, z0, z1):
    got = on_wall(cls, width, 0.04, z0, z1, hide=(), occupied=wall_used)
    if got:
      k, t, (x0, x1, y0, y1) = got
      P.cutouts.setdefault(walls[k], []).append(
          (np.array([x0 - 0.01, y0 - 0.01, z0]), np.array([x1 + 0.01, y1 + 0.01, z1])))
      if cls == _IN["door"]:
        used.append(_wall_footprint(k, t, width, 0.9, L, W))   # keep the doorway clear
    return got

  opening(_IN["door"], u(0.85, 0.95), 0.0, u(2.0, 2.1))
  for _ in range(int(rng.integers(0, 3))):
    z0 = u(0.8, 1.0)
    if opening(_IN["window"], u(0.8, 1.6), z0, z0 + u(0.9, 1.3)) and rng.random() < 0.6:
      on_wall(_IN["curtain"], u(0.3, 0.5), 0.08, 0.1, min(H - 0.05, z0 + 1.5))
  if rng.random() < 0.5:                                                   # bed with headboard and pillows
    got = _place_on_wall(rng, used, bw := u(1.4, 1.8), bl := u(1.9, 2.1), L, W)
    if got:
      k, t, (x0, x1, y0, y1) = got
      inst = P.new_instance()
      P.box(_IN["bed"], inst, (x0, y0, 0), (x1, y1, 0.55), hide=(4, k))
      h = _wall_footprint(k, t, bw, 0.08, L, W)
      P.box(_IN["bed"], inst, (h[0], h[2], 0), (h[1], h[3], 1.1), hide=(4, k))
      inward = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][k], float)
      along = inward[::-1]
      for j in range(int(rng.integers(1, 3))):
        c = np.array([(h[0] + h[1]) / 2, (h[2] + h[3]) / 2]) + inward * 0.35 + along * (j - 0.5) * 0.7 * (bw > 1.5)
        P.box(_IN["pillow"], P.new_instance(), (c[0] - 0.22, c[1] - 0.22, 0.55), (c[0] + 0.22, c[1] + 0.22, 0.67))
  if rng.random() < 0.5:                                                   # sofa: seat and back
    got = _place_on_wall(rng, used, sw := u(1.8, 2.2), 0.9, L, W)
    if got:
      k, t, (x0, x1, y0, y1) = got
      inst = P.new_instance()
      P.box(_IN["sofa"], inst, (x0, y0, 0), (x1, y1, 0.45), hide=(4, k))
      b = _wall_footprint(k, t, sw, 0.2, L, W)
      P.box(_IN["sofa"], inst, (b[0], b[2], 0.45), (b[1], b[3], 0.85), hide=(4, k))
  for _ in range(int(rng.integers(1, 3))):                                 # cabinets
    on_wall(_IN["cabinet"], u(0.6, 1.2), u(0.45, 0.6), 0, u(0.8, 2.0))
  if rng.random() < 0.7:                                                   # bookshelf with books
    got = _place_on_wall(rng, used, u(0.8, 1.0), u(0.3, 0.35), L, W)
    if got:
      k, _, (x0, x1, y0, y1) = got
      inst, bh = P.new_instance(), u(1.8, 2.0)
      along = 1 if k < 2 else 0                                            # axis running along the wall
      lo, hi = np.array([x0, y0, 0.0]), np.array([x1, y1, bh])
      for side in (0, 1):                                                  # side panels
        a, b = lo.copy(), hi.copy()
        if side == 0:
          b[along] = a[along] + 0.02
        else:
          a[along] = b[along] - 0.02
        P.box(_IN["bookshelf"], inst, a, b, hide=(4, k))
      shelves = np.linspace(0.05, bh, 5)
      for z in shelves:
        P.box(_IN["bookshelf"], inst, (x0, y0, z - 0.02), (x1, y1, z), hide=(k,))
      for z in shelves[:-1]:
        for _ in range(int(rng.integers(0, 5))):
          t = u(lo[along] + 0.05, hi[along] - 0.1)
          a, b = lo.copy(), hi.copy()
          a[along], b[along], a[2], b[2] = t, t + u(0.03, 0.05), z, z + u(0.18, 0.25)
          P.box(_IN["book"], P.new_instance(), a, b, hide=(4, k))
  if rng.random() < 0.5:                                                   # desk with monitor and cups
    got = on_wall(_IN["desk"], u(1.2, 1.6), u(0.6, 0.7), 0.72, 0.75, hide=())
    if got:
      k, _, (x0, x1, y0, y1) = got
      c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
      if rng.random() < 0.7:
        half = np.array([0.28, 0.02]) if k >= 2 else np.array([0.02, 0.28])
        P.box(_IN["monitor"], P.new_instance(), (*(c - half), 0.8), (*(c + half), 1.12))
      for _ in range(int(rng.integers(0, 3))):
        P.cyl(_IN["cup"], P.new_instance(), (u(x0 + 0.1, x1 - 0.1), u(y0 + 0.1, y1 - 0.1), 0.75), u(0.035, 0.045),
              u(0.08, 0.11))
  if rng.random() < 0.8:                                                   # table, chairs, table-top props
    fp = _place_free(rng, used, u(1.2, 1.8), u(0.8, 1.0), L, W, margin=0.8)
    if fp:
      x0, x1, y0, y1 = fp
      inst, th = P.new_instance(), u(0.72, 0.76)
      P.box(_IN["table"], inst, (x0, y0, th - 0.04), (x1, y1, th), hide=())
      for lx, ly in ((x0 + 0.05, y0 + 0.05), (x0 + 0.05, y1 - 0.05), (x1 - 0.05, y0 + 0.05), (x1 - 0.05, y1 - 0.05)):
        P.cyl(_IN["table"], inst, (lx, ly, 0), 0.03, th - 0.04, caps=())
      for _ in range(int(rng.integers(0, 4))):
        P.cyl(_IN["cup"], P.new_instance(), (u(x0 + 0.1, x1 - 0.1), u(y0 + 0.1, y1 - 0.1), th), u(0.035, 0.045),
              u(0.08, 0.11))
      for _ in range(int(rng.integers(0, 3))):
        bx, by = u(x0 + 0.15, x1 - 0.15), u(y0 + 0.15, y1 - 0.15)
        P.box(_IN["book"], P.new_instance(), (bx - 0.1, by - 0.075, th), (bx + 0.1, by + 0.075, th + 0.03))
      sides = [(0, -1), (0, 1), (1, -1), (1, 1)]
      for i in rng.permutation(4)[:int(rng.integers(2, 5))]:
        axis, sgn = sides[i]
        cx = (x0 + x1) / 2 + (sgn * ((x1 - x0) / 2 + 0.3) if axis == 0 else u(-0.3, 0.3) * (x1 - x0))
        cy = (y0 + y1) / 2 + (sgn * ((y1 - y0) / 2 + 0.3) if axis == 1 else u(-0.3, 0.3) * (y1 - y0))
        _chair(P, cx, cy, axis, sgn, u(0.42, 0.48))
  if rng.random() < 0.5:                                                   # rug: the floor under it is hidden
    fp = _place_free(rng, [], u(1.5, 2.5), u(1.0, 1.8), L, W)
    if fp:
      x0, x1, y0, y1 = fp
      P.box(_IN["rug"], P.new_instance(), (x0, y0, 0.0), (x1, y1, 0.012))
      P.cutouts.setdefault(floor, []).append((np.array([x0, y0, -1.0]), np.array([x1, y1, 1.0])))
  for name, p in (("lamp", 0.6), ("plant", 0.5), ("trash_bin", 0.6), ("box", 0.7), ("box", 0.4)):
    fp = _place_free(rng, used, 0.5, 0.5, L, W) if rng.random() < p else None
    if fp is None:
      continue
    cx, cy, inst = (fp[0] + fp[1]) / 2, (fp[2] + fp[3]) / 2, P.new_instance()
    if name == "lamp":
      P.cyl(_IN["lamp"], inst, (cx, cy, 0), 0.015, lh := u(1.4, 1.6), caps=())
      P.cyl(_IN["lamp"], inst, (cx, cy, lh), u(0.18, 0.22), u(0.25, 0.3), caps=())
    elif name == "plant":
      P.cyl(_IN["plant"], inst, (cx, cy, 0), u(0.12, 0.18), ph := u(0.25, 0.35), caps=())
      fr = u(0.25, 0.4)
      P.sphere(_IN["plant"], inst, (cx, cy, ph + fr * 0.8), fr)
    elif name == "trash_bin":
      P.cyl(_IN["trash_bin"], inst, (cx, cy, 0), u(0.12, 0.18), u(0.3, 0.45), caps=())
    else:
      s = u(0.25, 0.5)
      P.box(_IN["box"], inst, (cx - s / 2, cy - s / 2, 0), (cx + s / 2, cy + s / 2, s * u(0.6, 1.0)))
  for _ in range(int(rng.integers(0, 3))):                                 # pictures and a clock on the walls
    z0 = u(1.2, 1.5)
    on_wall(_IN["picture"], u(0.4, 0.9), 0.02, z0, z0 + u(0.3, 0.6), occupied=wall_used)
  if rng.random() < 0.5:
    got = _place_on_wall(rng, wall_used, 0.36, 0.04, L, W)
    if got:
      k, t, _ = got
      base = np.zeros(3)
      axis = 0 if k < 2 else 1                                             # the clock's axis is the wall normal
      base[axis] = [-L / 2, L / 2 - 0.04, -W / 2, W / 2 - 0.04][k]
      base[1 - axis] = t
      base[2] = u(1.9, min(2.2, H - 0.25))
      P.cyl(_IN["clock"], P.new_instance(), base, u(0.12, 0.18), 0.04, axis=axis, caps=(1,) if k % 2 == 0 else (0,))
  return P


def _chair(P, cx, cy, axis, sgn, s):
  """A chair centred at (cx, cy), its back on the side away from the table (`axis`, `sgn`)."""
  inst, cls = P.new_instance(), _IN["chair"]
  P.box(cls, inst, (cx - s / 2, cy - s / 2, 0.42), (cx + s / 2, cy + s / 2, 0.46), hide=())
  lo, hi = np.array([cx - s / 2, cy - s / 2, 0.46]), np.array([cx + s / 2, cy + s / 2, 0.9])
  if sgn < 0:
    hi[axis] = lo[axis] + 0.04
  else:
    lo[axis] = hi[axis] - 0.04
  P.box(cls, inst, lo, hi)
  for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
    P.cyl(cls, inst, (cx + dx * (s / 2 - 0.03), cy + dy * (s / 2 - 0.03), 0), 0.015, 0.42, caps=())


def _sample_indoor(rng, P, density):
  """Samples every primitive of `P` (Poisson counts ~ density x boost x area), vectorised per primitive kind."""
  names = CLASS_NAMES["indoor"]
  cls = np.array([c for c, *_ in P.items])
  inst = np.array([i for _, i, *_ in P.items])
  boost = np.array([_SMALL.get(names[c], 1.0) for c in cls])
  counts = rng.poisson(density * boost * np.array([a for *_, a in P.items]))
  kinds = np.array([k for _, _, k, _, _ in P.items])
  out_pts, out_nrm, out_part = [], [], []
  for kind in ("box", "cyl", "sphere"):
    ids = np.flatnonzero(kinds == kind)
    if not len(ids):
      continue
    args = [P.items[i][3] for i in ids]
    idx = np.repeat(np.arange(len(ids)), counts[ids])
    if kind == "box":
      lo, hi = np.array([a[0] for a in args]), np.array([a[1] for a in args])
      w = np.array([_box_area(a[0], a[1], a[2]) for a in args])
      pts, nrm = _sample_boxes(rng, idx, lo, hi, w)
    elif kind == "cyl":
      base, r, h = np.array([a[0] for a in args]), np.array([a[1] for a in args]), np.array([a[2] for a in args])
      w = np.array([[2 * np.pi * a[1] * a[2]] + [np.pi * a[1] ** 2 * (c in a[4]) for c in (0, 1)] for a in args])
      pts, nrm = _sample_cyls(rng, idx, base, r, h, np.array([a[3] for a in args]), w)
    else:
      pts, nrm = _sample_spheres(rng, idx, np.array([a[0] for a in args]), np.array([a[1] for a in args]))
    out_pts.append(pts)
    out_nrm.append(nrm)
    out_part.append(ids[idx])
  pts, nrm, part = np.concatenate(out_pts), np.concatenate(out_nrm), np.concatenate(out_part)
  keep = np.ones(len(pts), bool)
  for i, boxes in P.cutouts.items():                     # openings: drop wall/floor points behind doors, rugs...
    sel = np.flatnonzero(part == i)
    for lo, hi in boxes:
      keep[sel[np.all((pts[sel] >= lo) & (pts[sel] <= hi), axis=1)]] = False
  pts, nrm, part = pts[keep], nrm[keep], part[keep]
  tint = np.where((inst >= 0)[:, None], rng.normal(0, 0.05, (len(cls), 3)), rng.normal(0, 0.03, (len(cls), 3)))
  color = _PALETTE[cls[part]] + tint[part]
  return pts, nrm, cls[part].astype(np.int32), inst[part].astype(np.int32), color


def _indoor(rng, num_points):
  P = _indoor_parts(rng)
  density = 230.0
  if num_points:   # scale the density so that a bit more than `num_points` survive, then subsample exactly
    names = CLASS_NAMES["indoor"]
    expected = sum(_SMALL.get(names[c], 1.0) * a for c, _, _, _, a in P.items) * density
    density *= 1.1 * num_points / expected
  while True:
    coord, normal, seg, inst, color = _sample_indoor(rng, P, density)
    if not num_points or len(coord) >= num_points:
      break
    density *= 1.2
  coord = coord + rng.normal(0, 0.005, coord.shape)                        # scanner noise
  color = np.clip(color + rng.normal(0, 0.03, color.shape), 0, 1)
  return coord, color, normal, seg, inst, None


# ================================================================================================ outdoor sweeps
_OUT = {name: i for i, name in enumerate(CLASS_NAMES["outdoor"])}
_SENSOR_Z, _MAX_RANGE, _CURB = 1.7, 60.0, 0.15


def _outdoor_layout(rng):
  """Ground parameters and a list of primitives (cls, inst, kind, params, (cx, cy, radius)) around the sensor."""
  u, prims, inst = rng.uniform, [], [0]
  wr, ws = u(3.5, 5.5), u(2.0, 4.0)               # road half width, sidewalk width
  setback = {s: u(3.0, 10.0) for s in (-1, 1)}     # sidewalk edge -> building front
  parking = [(s, x0, x0 + u(10, 25)) for s in (-1, 1) for x0 in [u(-50, 30)] if rng.random() < 0.6]
  g = dict(wr=wr, ws=ws, parking=parking)

  def new():
    inst[0] += 1
    return inst[0] - 1

  def box(cls, i, lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    c = (lo + hi) / 2
    prims.append((cls, i, "box", (lo, hi), (c[0], c[1], np.hypot(*(hi - lo)[:2]) / 2)))

  def cyl(cls, i, x, y, z0, r, h):
    prims.append((cls, i, "cyl", (x, y, z0, r, h), (x, y, r)))

  def sphere(cls, i, c, r):
    prims.append((cls, i, "sphere", (np.asarray(c, float), r), (c[0], c[1], r)))

  def ground_z(y):
    return _CURB if wr <= abs(y) < wr + ws else 0.0

  for s in (-1, 1):
    front = wr + ws + setback[s]
    x = u(-75, -60)
    while x < 70:                                   # building row with alleys
      w, d, h = u(8, 20), u(8, 15), u(5, 20)
      y0 = s * (front + u(0, 2))
      box(_OUT["building"], new(), (x, min(y0, y0 + s * d), 0), (x + w, max(y0, y0 + s * d), h))
      x += w + (u(2, 8) if rng.random() < 0.4 else 0.0)
    for cls, thick, hr in (("wall", 0.3, (0.6, 1.2)), ("fence", 0.05, (1.0, 1.8))):
      for _ in range(int(rng.integers(0, 3))):
        y, x0 = s * (wr + ws + u(0.5, setback[s] - 0.3)), u(-50, 40)
        box(_OUT[cls], new(), (x0, y - thick / 2, 0), (x0 + u(5, 15), y + thick / 2, u(*hr)))
    x = u(-60, -50)
    while x < 60:                                   # street trees on the sidewalk
      y, i, th = s * (wr + ws - 0.6), new(), u(2.0, 3.5)
      cyl(_OUT["trunk"], i, x, y, _CURB, u(0.12, 0.25), th)
      r = u(1.5, 3.0)
      sphere(_OUT["vegetation"], i, (x, y, _CURB + th + 0.7 * r), r)
      x += u(7, 14)
    for _ in range(int(rng.integers(2, 8))):        # bushes on the terrain
      r = u(0.5, 1.0)
      sphere(_OUT["vegetation"], new(), (u(-50, 50), s * (wr + ws + u(r, setback[s] - r)), 0.3 * r), r)
    x = u(-55, -35)
    while x < 55:                                   # street-light poles at the curb
      cyl(_OUT["pole"], new(), x, s * (wr + 0.4), _CURB, 0.1, u(6, 9))
      x += u(15, 30)
  for _ in range(int(rng.integers(2, 6))):          # signs: a post (pole) and a plate
    s, x = rng.choice([-1, 1]), u(-40, 40)
    y, i, hp = s * (wr + 0.6), new(), u(2.2, 2.6)
    cyl(_OUT["pole"], i, x, y, _CURB, 0.04, hp)
    box(_OUT["traffic_sign"], new(), (x - 0.03, y - 0.35, _CURB + hp - 0.2), (x + 0.03, y + 0.35, _CURB + hp + 0.5))
  for _ in range(int(rng.integers(1, 3))):          # traffic lights
    s, x = rng.choice([-1, 1]), u(-20, 20)
    y, hp = s * (wr + 0.5), u(1.6, 2.4)   # low enough for the +5 deg top beam
    cyl(_OUT["pole"], new(), x, y, _CURB, 0.08, hp)
    box(_OUT["traffic_light"], new(), (x - 0.2, y - 0.2, _CURB + hp), (x + 0.2, y + 0.2, _CURB + hp + 1.0))

  def vehicle(cls, x, y, length, width, height, cab):
    i = new()
    box(_OUT[cls], i, (x - length / 2, y - width / 2, 0.3), (x + length / 2, y + width / 2, height))
    if cab:
      box(_OUT[cls], i, (x - length / 4, y - width / 2 + 0.05, height), (x + length / 4, y + width / 2 - 0.05,
                                                                         height + cab))

  lanes = [-wr / 2, wr / 2]
  taken = {lane: [(-7.0, 7.0)] if lane < 0 else [] for lane in lanes}   # the ego car drives in the right lane
  for cls, count, size in (("bus", (0, 2), (11, 2.5, 3.2, 0)), ("truck", (0, 3), (7.5, 2.4, 3.2, 0)),
                           ("car", (3, 10), (4.3, 1.8, 1.1, 0.5))):
    for _ in range(int(rng.integers(*count))):
      lane, x = lanes[int(rng.integers(2))], u(-55, 55)
      if all(x + size[0] / 2 + 1 < a or b < x - size[0] / 2 - 1 for a, b in taken[lane]):
        taken[lane].append((x - size[0] / 2, x + size[0] / 2))
        vehicle(cls, x, lane, size[0] * u(0.9, 1.1), size[1], size[2] * u(0.95, 1.1), size[3])
  for s, x0, x1 in parking:                         # parked cars in the parking lots
    y = s * (wr + ws + 2.5)
    for x in np.arange(x0 + 1.5, x1 - 1.5, 2.6):
      if rng.random() < 0.6:
        vehicle("car", x, y, 1.8, 4.3, 1.1, 0.0)
  for cls, count in (("person", (2, 9)), ("bench", (0, 3)), ("bicycle", (0, 4)), ("trash_can", (1, 4)),
                     ("motorcycle", (0, 3)), ("bollard", (0, 7)), ("fire_hydrant", (0, 3)),
                     ("traffic_cone", (0, 6))):
    for _ in range(int(rng.integers(*count))):
      s, x, i = rng.choice([-1, 1]), u(-35, 35), new()
      y = s * (wr + u(0.3, ws - 0.3)) if cls not in ("motorcycle", "traffic_cone") else s * (wr - u(0.4, 1.0))
      z = ground_z(y)
      if cls == "person":
        cyl(_OUT[cls], i, x, y, z, 0.2, 1.45)
        sphere(_OUT[cls], i, (x, y, z + 1.6), 0.11)
      elif cls == "bench":
        box(_OUT[cls], i, (x - 0.9, y - 0.25, z + 0.4), (x + 0.9, y + 0.25, z + 0.48))
        box(_OUT[cls], i, (x - 0.9, y + 0.2, z + 0.48), (x + 0.9, y + 0.25, z + 0.9))
      elif cls in ("bicycle", "motorcycle"):
        half = (0.85, 0.04, 1.0) if cls == "bicycle" else (1.0, 0.3, 1.1)
        box(_OUT[cls], i, (x - half[0], y - half[1], z), (x + half[0], y + half[1], z + half[2]))
      else:
        r, h = {"trash_can": (0.3, 1.0), "bollard": (0.1, 0.9), "fire_hydrant": (0.12, 0.7),
                "traffic_cone": (0.15, 0.7)}[cls]
        cyl(_OUT[cls], i, x, y, z, r, h)
  return g, prims


def _ground_label(p, g):
  y, wr, ws = np.abs(p[..., 1]), g["wr"], g["ws"]
  lab = np.full(y.shape, _OUT["terrain"], np.int32)
  for s, x0, x1 in g["parking"]:
    lab[(np.sign(p[..., 1]) == s) & (p[..., 0] >= x0) & (p[..., 0] <= x1)] = _OUT["parking"]
  lab[(y >= wr) & (y < wr + ws)] = _OUT["sidewalk"]
  road = y < wr
  lab[road] = _OUT["road"]
  mark = road & ((y < 0.075) & (np.mod(p[..., 0], 6.0) < 3.0) | (np.abs(y - (wr - 0.3)) < 0.075))
  lab[mark] = _OUT["lane_marking"]
  return lab


def _hit(kind, params, o, d):
  """Ray hit distances t[...] (inf on a miss) and unit normals [..., 3] of a primitive; d: [..., 3] unit."""
  with np.errstate(divide="ignore", invalid="ignore"):
    if kind == "box":
      lo, hi = params
      inv = 1.0 / d
      t1, t2 = (lo - o) * inv, (hi - o) * inv
      tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
      tmin, tmax = tn.max(-1), tf.min(-1)
      t = np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)
      axis = tn.argmax(-1)
      nrm = -np.sign(np.take_along_axis(d, axis[..., None], -1)) * np.eye(3)[axis]
      return t, nrm
    if kind == "sphere":
      c, r = params
      oc = o - c
      b = (d * oc).sum(-1)
      disc = b * b - (oc * oc).sum() + r * r
      t = -b - np.sqrt(disc)
      t = np.where((disc >= 0) & (t > 0), t, np.inf)
      return t, (o + t[..., None] * d - c) / r
    x, y, z0, r, h = params                                  # vertical cylinder with a top cap
    ox, oy = o[0] - x, o[1] - y
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (ox * d[..., 0] + oy * d[..., 1])
    disc = b * b - 4 * a * (ox * ox + oy * oy - r * r)
    t = (-b - np.sqrt(disc)) / (2 * a)
    zt = o[2] + t * d[..., 2]
    t = np.where((disc >= 0) & (t > 0) & (zt >= z0) & (zt <= z0 + h), t, np.inf)
    tc = (z0 + h - o[2]) / d[..., 2]
    pc = o[:2] + tc[..., None] * d[..., :2]
    cap = (tc > 0) & (((pc[..., 0] - x) ** 2 + (pc[..., 1] - y) ** 2) <= r * r) & (tc < t)
    t = np.where(cap, tc, t)
    p = o + np.where(np.isfinite(t), t, 0)[..., None] * d
    side = np.stack([(p[..., 0] - x) / r, (p[..., 1] - y) / r, np.zeros_like(t)], -1)
    return t, np.where(cap[..., None], np.array([0.0, 0.0, 1.0]), side)


def _outdoor(rng, num_points, columns=1440):
  g, prims = _outdoor_layout(rng)
  o = np.array([0.0, -g["wr"] / 2, _SENSOR_Z])
  elev = np.deg2rad(np.linspace(-25.0, 5.0, 32))
  while True:
    az = np.arange(columns) * (2 * np.pi / columns)
    d = np.stack([np.cos(elev)[None] * np.cos(az)[:, None], np.cos(elev)[None] * np.sin(az)[:, None],
                  np.broadcast_to(np.sin(elev)[None], (columns, 32))], -1)          # [A, 32, 3]
    with np.errstate(divide="ignore"):
      t0 = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)                          # z = 0
      t1 = np.where(d[..., 2] < 0, (_CURB - o[2]) / d[..., 2], np.inf)                 # raised sidewalk
    p1 = o + np.where(np.isfinite(t1), t1, 0)[..., None] * d
    on_walk = np.isfinite(t1) & (np.abs(p1[..., 1]) >= g["wr"]) & (np.abs(p1[..., 1]) < g["wr"] + g["ws"])
    t_best = np.where(on_walk, t1, t0)
    nrm = np.broadcast_to(np.array([0.0, 0.0, 1.0]), d.shape).copy()
    p = o + np.where(np.isfinite(t_best), t_best, 0)[..., None] * d
    cls = np.where(np.isfinite(t_best), _ground_label(p, g), -1).astype(np.int32)
    inst = np.full(cls.shape, -1, np.int32)
    step = 2 * np.pi / columns
    for c, i, kind, params, (cx, cy, rad) in prims:
      dist = np.hypot(cx - o[0], cy - o[1])
      if dist - rad > _MAX_RANGE:
        continue
      if dist <= rad + 0.5:
        spans = [(0, columns)]
      else:                                     # only the azimuth columns that can see the primitive
        half = np.arcsin(min(1.0, (rad + 0.2) / dist)) + step
        mid = np.arctan2(cy - o[1], cx - o[0])
        j0, j1 = int(np.floor((mid - half) / step)), int(np.ceil((mid + half) / step)) + 1
        a = j0 % columns
        b = a + min(j1 - j0, columns)
        spans = [(a, min(b, columns))] + ([(0, b - columns)] if b > columns else [])
      for a, b in spans:                        # contiguous slices are views: update in place
        t, n = _hit(kind, params, o, d[a:b])
        better = t < t_best[a:b]
        t_best[a:b][better] = t[better]
        nrm[a:b][better] = n[better]
        cls[a:b][better] = c
        inst[a:b][better] = i
    t_noisy = t_best + rng.normal(0, 0.02, t_best.shape)
    keep = np.isfinite(t_best) & (t_best <= _MAX_RANGE) & (rng.random(t_best.shape) > 0.05) & (cls >= 0)
    if not num_points or keep.sum() >= num_points:
      break
    columns = int(np.ceil(columns * 1.15 * num_points / max(keep.sum(), 1)))
  coord = np.array([0.0, 0.0, _SENSOR_Z]) + t_noisy[keep][:, None] * d[keep]   # sensor frame xy, ground z = 0
  cls, inst, normal = cls[keep], inst[keep], nrm[keep]
  tint = rng.normal(0, 0.05, (inst.max(initial=0) + 2, 3))                              # per-object shade
  color = np.clip(_OUT_PALETTE[cls] + tint[inst + 1] + rng.normal(0, 0.03, (len(cls), 3)), 0, 1)
  strength = np.clip(_OUT_STRENGTH[cls] + rng.normal(0, 0.05, len(cls)), 0, 1)
  return coord, color, normal, cls, inst, strength


# ================================================================================================ public API
def make_scene(seed: Seed, kind: str = "indoor", num_points: Optional[int] = None) -> scene_lib.Scene:
  """One synthetic scene, a pure function of (seed, kind, num_points).

  Args:
    seed: int or sequence of ints (e.g. (run_seed, split, index)); fed to `numpy.random.default_rng`.
    kind: 'indoor' (room, ~20k-40k points) or 'outdoor' (LiDAR sweep, ~30k-60k points).
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
  coord, color, normal, seg, inst, strength = (_indoor if kind == "indoor" else _outdoor)(rng, num_points)
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
  counts = np.zeros(NUM_CLASSES)
  for i in range(num_scenes):
    counts += np.bincount(make_scene((seed, i), kind).segment, minlength=NUM_CLASSES)
  return counts / counts.sum()


def groups_from_frequencies(freq: np.ndarray, head: float = 0.03, tail: float = 0.005) -> dict:
  """{'head': ids with freq >= head, 'common': in between, 'tail': freq < tail}, each sorted by decreasing freq."""
  order = [int(c) for c in np.argsort(-freq, kind="stable")]
  return {"head": [c for c in order if freq[c] >= head],
          "common": [c for c in order if tail <= freq[c] < head],
          "tail": [c for c in order if freq[c] < tail]}
