"""Synthetic indoor rooms (see `dos_jax.data.synthetic`): boxes, cylinders and spheres sampled on their surfaces.

A 4-6 m x 4-6 m x 2.4-3 m room, floor at z = 0 and centred on the origin: walls with door/window openings, an
optional ceiling, furniture (bed, sofa, cabinets, bookshelf with books, desk with monitor, table with chairs) and
props. Points are uniform on surfaces (small props denser, as in scanned meshes) with outward normals, per-class
colours with per-object and per-point noise, and ~5 mm position noise.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

# Class ids follow the measured point frequency (id 0 = most frequent).
CLASS_NAMES = ("wall", "floor", "ceiling", "cabinet", "bed", "bookshelf", "table", "chair", "sofa", "door", "rug",
               "book", "window", "plant", "box", "picture", "desk", "lamp", "pillow", "curtain", "trash_bin",
               "monitor", "clock", "cup")

# Distinct base colours (RGB in [0, 1]) per class.
_COLORS = {
    "wall": (0.85, 0.82, 0.75),
    "floor": (0.55, 0.40, 0.28),
    "ceiling": (0.95, 0.95, 0.92),
    "bed": (0.30, 0.45, 0.75),
    "table": (0.65, 0.50, 0.30),
    "cabinet": (0.45, 0.30, 0.20),
    "sofa": (0.70, 0.20, 0.25),
    "chair": (0.20, 0.20, 0.22),
    "bookshelf": (0.50, 0.35, 0.55),
    "desk": (0.80, 0.75, 0.55),
    "rug": (0.60, 0.15, 0.10),
    "door": (0.40, 0.25, 0.15),
    "curtain": (0.90, 0.60, 0.30),
    "window": (0.55, 0.80, 0.95),
    "box": (0.75, 0.60, 0.40),
    "lamp": (1.00, 0.90, 0.50),
    "plant": (0.20, 0.60, 0.20),
    "trash_bin": (0.35, 0.50, 0.45),
    "pillow": (0.95, 0.85, 0.90),
    "monitor": (0.05, 0.05, 0.10),
    "picture": (0.90, 0.30, 0.60),
    "book": (0.20, 0.35, 0.80),
    "clock": (0.98, 0.98, 0.30),
    "cup": (0.10, 0.80, 0.80),
}
_PALETTE = np.array([_COLORS[n] for n in CLASS_NAMES], np.float32)


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


# ================================================================================================ room layout
_SMALL = {"box": 2.0, "lamp": 3.0, "plant": 2.0, "trash_bin": 2.5, "pillow": 2.0, "monitor": 3.0, "picture": 3.0,
          "book": 1.5, "clock": 4.0, "cup": 5.0}   # density boost for small props
_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


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
  walls = [P.box(_ID["wall"], -1, (-L / 2, -W / 2, 0), (-L / 2, W / 2, H), hide=(0, 2, 3, 4, 5)),
           P.box(_ID["wall"], -1, (L / 2, -W / 2, 0), (L / 2, W / 2, H), hide=(1, 2, 3, 4, 5)),
           P.box(_ID["wall"], -1, (-L / 2, -W / 2, 0), (L / 2, -W / 2, H), hide=(0, 1, 2, 4, 5)),
           P.box(_ID["wall"], -1, (-L / 2, W / 2, 0), (L / 2, W / 2, H), hide=(0, 1, 3, 4, 5))]
  floor = P.box(_ID["floor"], -1, (-L / 2, -W / 2, 0), (L / 2, W / 2, 0), hide=(0, 1, 2, 3, 4))
  if rng.random() < 0.6:
    P.box(_ID["ceiling"], -1, (-L / 2, -W / 2, H), (L / 2, W / 2, H), hide=(0, 1, 2, 3, 5))
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
      if cls == _ID["door"]:
        used.append(_wall_footprint(k, t, width, 0.9, L, W))   # keep the doorway clear
    return got

  opening(_ID["door"], u(0.85, 0.95), 0.0, u(2.0, 2.1))
  for _ in range(int(rng.integers(0, 3))):
    z0 = u(0.8, 1.0)
    if opening(_ID["window"], u(0.8, 1.6), z0, z0 + u(0.9, 1.3)) and rng.random() < 0.6:
      on_wall(_ID["curtain"], u(0.3, 0.5), 0.08, 0.1, min(H - 0.05, z0 + 1.5))
  if rng.random() < 0.5:                                                   # bed with headboard and pillows
    got = _place_on_wall(rng, used, bw := u(1.4, 1.8), bl := u(1.9, 2.1), L, W)
    if got:
      k, t, (x0, x1, y0, y1) = got
      inst = P.new_instance()
      P.box(_ID["bed"], inst, (x0, y0, 0), (x1, y1, 0.55), hide=(4, k))
      h = _wall_footprint(k, t, bw, 0.08, L, W)
      P.box(_ID["bed"], inst, (h[0], h[2], 0), (h[1], h[3], 1.1), hide=(4, k))
      inward = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][k], float)
      along = inward[::-1]
      for j in range(int(rng.integers(1, 3))):
        c = np.array([(h[0] + h[1]) / 2, (h[2] + h[3]) / 2]) + inward * 0.35 + along * (j - 0.5) * 0.7 * (bw > 1.5)
        P.box(_ID["pillow"], P.new_instance(), (c[0] - 0.22, c[1] - 0.22, 0.55), (c[0] + 0.22, c[1] + 0.22, 0.67))
  if rng.random() < 0.5:                                                   # sofa: seat and back
    got = _place_on_wall(rng, used, sw := u(1.8, 2.2), 0.9, L, W)
    if got:
      k, t, (x0, x1, y0, y1) = got
      inst = P.new_instance()
      P.box(_ID["sofa"], inst, (x0, y0, 0), (x1, y1, 0.45), hide=(4, k))
      b = _wall_footprint(k, t, sw, 0.2, L, W)
      P.box(_ID["sofa"], inst, (b[0], b[2], 0.45), (b[1], b[3], 0.85), hide=(4, k))
  for _ in range(int(rng.integers(1, 3))):                                 # cabinets
    on_wall(_ID["cabinet"], u(0.6, 1.2), u(0.45, 0.6), 0, u(0.8, 2.0))
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
        P.box(_ID["bookshelf"], inst, a, b, hide=(4, k))
      shelves = np.linspace(0.05, bh, 5)
      for z in shelves:
        P.box(_ID["bookshelf"], inst, (x0, y0, z - 0.02), (x1, y1, z), hide=(k,))
      for z in shelves[:-1]:
        for _ in range(int(rng.integers(0, 5))):
          t = u(lo[along] + 0.05, hi[along] - 0.1)
          a, b = lo.copy(), hi.copy()
          a[along], b[along], a[2], b[2] = t, t + u(0.03, 0.05), z, z + u(0.18, 0.25)
          P.box(_ID["book"], P.new_instance(), a, b, hide=(4, k))
  if rng.random() < 0.5:                                                   # desk with monitor and cups
    got = on_wall(_ID["desk"], u(1.2, 1.6), u(0.6, 0.7), 0.72, 0.75, hide=())
    if got:
      k, _, (x0, x1, y0, y1) = got
      c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
      if rng.random() < 0.7:
        half = np.array([0.28, 0.02]) if k >= 2 else np.array([0.02, 0.28])
        P.box(_ID["monitor"], P.new_instance(), (*(c - half), 0.8), (*(c + half), 1.12))
      for _ in range(int(rng.integers(0, 3))):
        P.cyl(_ID["cup"], P.new_instance(), (u(x0 + 0.1, x1 - 0.1), u(y0 + 0.1, y1 - 0.1), 0.75), u(0.035, 0.045),
              u(0.08, 0.11))
  if rng.random() < 0.8:                                                   # table, chairs, table-top props
    fp = _place_free(rng, used, u(1.2, 1.8), u(0.8, 1.0), L, W, margin=0.8)
    if fp:
      x0, x1, y0, y1 = fp
      inst, th = P.new_instance(), u(0.72, 0.76)
      P.box(_ID["table"], inst, (x0, y0, th - 0.04), (x1, y1, th), hide=())
      for lx, ly in ((x0 + 0.05, y0 + 0.05), (x0 + 0.05, y1 - 0.05), (x1 - 0.05, y0 + 0.05), (x1 - 0.05, y1 - 0.05)):
        P.cyl(_ID["table"], inst, (lx, ly, 0), 0.03, th - 0.04, caps=())
      for _ in range(int(rng.integers(0, 4))):
        P.cyl(_ID["cup"], P.new_instance(), (u(x0 + 0.1, x1 - 0.1), u(y0 + 0.1, y1 - 0.1), th), u(0.035, 0.045),
              u(0.08, 0.11))
      for _ in range(int(rng.integers(0, 3))):
        bx, by = u(x0 + 0.15, x1 - 0.15), u(y0 + 0.15, y1 - 0.15)
        P.box(_ID["book"], P.new_instance(), (bx - 0.1, by - 0.075, th), (bx + 0.1, by + 0.075, th + 0.03))
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
      P.box(_ID["rug"], P.new_instance(), (x0, y0, 0.0), (x1, y1, 0.012))
      P.cutouts.setdefault(floor, []).append((np.array([x0, y0, -1.0]), np.array([x1, y1, 1.0])))
  for name, p in (("lamp", 0.6), ("plant", 0.5), ("trash_bin", 0.6), ("box", 0.7), ("box", 0.4)):
    fp = _place_free(rng, used, 0.5, 0.5, L, W) if rng.random() < p else None
    if fp is None:
      continue
    cx, cy, inst = (fp[0] + fp[1]) / 2, (fp[2] + fp[3]) / 2, P.new_instance()
    if name == "lamp":
      P.cyl(_ID["lamp"], inst, (cx, cy, 0), 0.015, lh := u(1.4, 1.6), caps=())
      P.cyl(_ID["lamp"], inst, (cx, cy, lh), u(0.18, 0.22), u(0.25, 0.3), caps=())
    elif name == "plant":
      P.cyl(_ID["plant"], inst, (cx, cy, 0), u(0.12, 0.18), ph := u(0.25, 0.35), caps=())
      fr = u(0.25, 0.4)
      P.sphere(_ID["plant"], inst, (cx, cy, ph + fr * 0.8), fr)
    elif name == "trash_bin":
      P.cyl(_ID["trash_bin"], inst, (cx, cy, 0), u(0.12, 0.18), u(0.3, 0.45), caps=())
    else:
      s = u(0.25, 0.5)
      P.box(_ID["box"], inst, (cx - s / 2, cy - s / 2, 0), (cx + s / 2, cy + s / 2, s * u(0.6, 1.0)))
  for _ in range(int(rng.integers(0, 3))):                                 # pictures and a clock on the walls
    z0 = u(1.2, 1.5)
    on_wall(_ID["picture"], u(0.4, 0.9), 0.02, z0, z0 + u(0.3, 0.6), occupied=wall_used)
  if rng.random() < 0.5:
    got = _place_on_wall(rng, wall_used, 0.36, 0.04, L, W)
    if got:
      k, t, _ = got
      base = np.zeros(3)
      axis = 0 if k < 2 else 1                                             # the clock's axis is the wall normal
      base[axis] = [-L / 2, L / 2 - 0.04, -W / 2, W / 2 - 0.04][k]
      base[1 - axis] = t
      base[2] = u(1.9, min(2.2, H - 0.25))
      P.cyl(_ID["clock"], P.new_instance(), base, u(0.12, 0.18), 0.04, axis=axis, caps=(1,) if k % 2 == 0 else (0,))
  return P


def _chair(P, cx, cy, axis, sgn, s):
  """A chair centred at (cx, cy), its back on the side away from the table (`axis`, `sgn`)."""
  inst, cls = P.new_instance(), _ID["chair"]
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
  names = CLASS_NAMES
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


def generate(rng: np.random.Generator, num_points=None):
  """coord, color, normal, segment, instance, strength (None) of one room drawn from `rng`."""
  P = _indoor_parts(rng)
  density = 230.0
  if num_points:   # scale the density so that a bit more than `num_points` survive, then subsample exactly
    names = CLASS_NAMES
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


