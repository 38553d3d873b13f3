"""Synthetic long-tail rooms: a fair small-scale test of a long-tail prior (kind 'longtail').

The indoor generator's rarest classes (cups, clocks, monitors: a few centimetres) are below one 0.1 m voxel, so no
encoder at CPU scale can separate them and tail mIoU is 0 for every method. Here every class is at least ~3
voxels across and has its own SHAPE, while colour does not give it away (tail objects take a random colour of the
furniture palette); tail classes are rare by occurring in few rooms (one object, probability `TAIL_P`) and being
small next to walls and floors, so their share of points is well under 1%.

Each tail object is ~1-2% of its room's points (~100 voxels at 0.1 m) with surface normals no common class has (a
sphere; vertical and horizontal cylinders; a cone's slanted side), and tail objects are placed before the furniture
so that a room drawn to hold one always does. Learnability is checked independently of any encoder: a linear
probe on hand-made local-geometry features (no colour) reaches a tail IoU of ~50% (docs/results.md). (The first
version had a 1-voxel-thick disc + thin stem, "stool", that this oracle confused with the floor, and placed tail
objects after the furniture, so most rooms drawn to hold one had no free spot left.)

Classes (ids by decreasing point frequency): head wall, floor; common table, cabinet, bed, sofa, shelf, crate;
tail ball (sphere), pillar (vertical cylinder), drum (horizontal cylinder), cone (upright cone).
A 3.2-4.6 m square room with two walls, ~13k-20k points, ~5 mm noise, outward normals, 8-bit colours.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("wall", "floor", "table", "cabinet", "bed", "sofa", "shelf", "crate", "ball", "pillar", "drum",
               "cone")
GROUPS = {"head": [0, 1], "common": [2, 3, 4, 5, 6, 7], "tail": [8, 9, 10, 11]}
TAIL_P = 0.4            # probability that a room holds (one object of) a given tail class
_DENSITY = 200.0        # points per square metre of surface
_FURNITURE = {          # class -> (size ranges x, y, z in metres), colour
    "table": (((0.8, 1.4), (0.6, 0.9), (0.7, 0.78)), (0.65, 0.50, 0.30)),
    "cabinet": (((0.5, 0.9), (0.4, 0.6), (0.9, 1.3)), (0.45, 0.30, 0.20)),
    "bed": (((1.4, 2.0), (0.9, 1.6), (0.45, 0.6)), (0.30, 0.45, 0.75)),
    "sofa": (((1.6, 2.2), (0.8, 0.95), (0.4, 0.5)), (0.70, 0.20, 0.25)),
    "shelf": (((0.8, 1.2), (0.3, 0.4), (1.6, 2.0)), (0.50, 0.35, 0.55)),
    "crate": (((0.4, 0.6), (0.4, 0.6), (0.4, 0.6)), (0.75, 0.60, 0.40)),
}
_WALL, _FLOOR = (0.85, 0.82, 0.75), (0.55, 0.40, 0.28)
_ID = {n: i for i, n in enumerate(CLASS_NAMES)}


def _box(rng, lo, hi, bottom=False):
  """Points and normals on the faces of an axis-aligned box (no bottom face unless `bottom`)."""
  lo, hi = np.asarray(lo, float), np.asarray(hi, float)
  s = hi - lo
  faces = [(a, side) for a in range(3) for side in (0, 1) if bottom or not (a == 2 and side == 0)]
  areas = np.array([s[(a + 1) % 3] * s[(a + 2) % 3] for a, _ in faces])
  n = rng.poisson(_DENSITY * areas.sum())
  face = rng.choice(len(faces), n, p=areas / areas.sum())
  pts = lo + rng.random((n, 3)) * s
  nrm = np.zeros((n, 3))
  for f, (a, side) in enumerate(faces):
    sel = face == f
    pts[sel, a] = hi[a] if side else lo[a]
    nrm[sel, a] = 1.0 if side else -1.0
  return pts, nrm


def _cylinder(rng, center, radius, length, axis=2):
  """Lateral surface and top cap of a cylinder along `axis` from `center` (base centre)."""
  lateral, cap = 2 * np.pi * radius * length, np.pi * radius ** 2
  n_lat, n_cap = rng.poisson(_DENSITY * lateral), rng.poisson(_DENSITY * cap)
  t = rng.uniform(0, 2 * np.pi, n_lat)
  local = np.stack([radius * np.cos(t), radius * np.sin(t), rng.uniform(0, length, n_lat)], 1)
  lnrm = np.stack([np.cos(t), np.sin(t), np.zeros(n_lat)], 1)
  r, t2 = radius * np.sqrt(rng.random(n_cap)), rng.uniform(0, 2 * np.pi, n_cap)
  cap_pts = np.stack([r * np.cos(t2), r * np.sin(t2), np.full(n_cap, length)], 1)
  local, lnrm = np.concatenate([local, cap_pts]), np.concatenate([lnrm, np.tile([0.0, 0.0, 1.0], (n_cap, 1))])
  perm = {2: [0, 1, 2], 0: [2, 0, 1], 1: [0, 2, 1]}[axis]  # local z -> world `axis`
  return local[:, perm] + center, lnrm[:, perm]


def _sphere(rng, center, radius):
  n = rng.poisson(_DENSITY * 4 * np.pi * radius ** 2)
  v = rng.normal(size=(n, 3))
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  return center + radius * v, v


def _cone(rng, center, radius, height):
  """Slanted side of an upright cone standing on the floor at `center` (its base is hidden by the floor)."""
  slant = np.hypot(radius, height)
  n = rng.poisson(_DENSITY * np.pi * radius * slant)
  # Uniform on the lateral surface: the distance from the apex grows like sqrt(u).
  u, t = np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
  side = np.stack([u * radius * np.cos(t), u * radius * np.sin(t), height * (1 - u)], 1)
  nrm = np.stack([height * np.cos(t), height * np.sin(t), np.full(n, radius)], 1) / slant
  return side + center, nrm


def _free_spot(rng, used, sx, sy, half):
  """A floor rectangle (x0, y0, x1, y1) of size sx x sy inside the room that overlaps nothing in `used`."""
  for _ in range(30):
    x0, y0 = rng.uniform(-half + 0.1, half - 0.1 - sx), rng.uniform(-half + 0.1, half - 0.1 - sy)
    rect = (x0, y0, x0 + sx, y0 + sy)
    if all(rect[2] < u[0] or rect[0] > u[2] or rect[3] < u[1] or rect[1] > u[3] for u in used):
      used.append(rect)
      return rect
  return None


def generate(rng: np.random.Generator, num_points=None):
  """(coord, color, normal, segment, instance, strength=None) of one room drawn from `rng` (numpy arrays)."""
  del num_points  # the natural count; `synthetic.make_scene` subsamples when asked for an exact count
  half, height = rng.uniform(1.6, 2.3), rng.uniform(2.4, 2.8)
  parts = []  # (points, normals, class id, colour)
  floor = _box(rng, (-half, -half, -0.01), (half, half, 0.0))
  keep = floor[1][:, 2] > 0.5
  parts.append((floor[0][keep], floor[1][keep], _ID["floor"], _FLOOR))
  for axis in (0, 1):
    for side in (-1,):  # two walls (a corner), as a scan of one side of a room: fewer voxels per scene
      lo = [-half, -half, 0.0]
      hi = [half, half, height]
      lo[axis], hi[axis] = (side * half - 0.01, side * half) if side > 0 else (side * half, side * half + 0.01)
      pts, nrm = _box(rng, lo, hi)
      face = np.abs(nrm[:, axis]) > 0.5
      parts.append((pts[face], -np.sign(side) * np.abs(nrm[face]), _ID["wall"], _WALL))
  used = []  # tail objects are placed first, so a room drawn to hold one always has room for it
  instances = 0
  palette = [c for _, c in _FURNITURE.values()]
  for name in ("ball", "pillar", "drum", "cone"):
    if rng.random() >= TAIL_P:
      continue
    # The object's size first, then a floor spot just big enough (so the furniture keeps most of the floor).
    if name == "ball":
      r = rng.uniform(0.22, 0.3)
      sx = sy = 2 * r
    elif name == "pillar":
      r, length = rng.uniform(0.12, 0.18), rng.uniform(1.0, 1.3)
      sx = sy = 2 * r
    elif name == "drum":
      r, length = rng.uniform(0.2, 0.28), rng.uniform(0.6, 0.75)
      sx, sy = length, 2 * r
    else:
      r, length = rng.uniform(0.34, 0.4), rng.uniform(0.8, 1.0)
      sx = sy = 2 * r
    spot = _free_spot(rng, used, sx + 0.1, sy + 0.1, half)
    if spot is None:
      continue
    c = np.array([(spot[0] + spot[2]) / 2, (spot[1] + spot[3]) / 2, 0.0])
    colour = palette[int(rng.integers(len(palette)))]
    if name == "ball":
      pts, nrm = _sphere(rng, c + [0, 0, r], r)
    elif name == "pillar":
      pts, nrm = _cylinder(rng, c, r, length)
    elif name == "drum":
      pts, nrm = _cylinder(rng, c + [-length / 2, 0, r], r, length, axis=0)
    else:
      pts, nrm = _cone(rng, c, r, length)
    parts.append((pts, nrm, _ID[name], colour))
  for name, (ranges, colour) in _FURNITURE.items():
    for _ in range(int(rng.integers(1, 3))):
      s = [rng.uniform(*r) for r in ranges]
      spot = _free_spot(rng, used, s[0], s[1], half)
      if spot is not None:
        pts, nrm = _box(rng, (spot[0], spot[1], 0.0), (spot[2], spot[3], s[2]))
        parts.append((pts, nrm, _ID[name], colour))
  coords, colors, normals, segs, insts = [], [], [], [], []
  for pts, nrm, cls, colour in parts:
    n = len(pts)
    coords.append(pts + rng.normal(0, 0.005, (n, 3)))
    tint = np.clip(np.asarray(colour) + rng.normal(0, 0.04, 3), 0, 1)
    colors.append(np.clip(tint + rng.normal(0, 0.03, (n, 3)), 0, 1))
    normals.append(nrm)
    segs.append(np.full(n, cls))
    insts.append(np.full(n, -1 if cls in (0, 1) else instances))
    instances += cls not in (0, 1)
  return (np.concatenate(coords), np.concatenate(colors), np.concatenate(normals), np.concatenate(segs),
          np.concatenate(insts), None)
