"""Synthetic outdoor LiDAR sweeps (see `dos_jax.data.synthetic`): a street scene ray-cast from a spinning sensor.

A 32-beam LiDAR at (0, 0, 1.7) m (elevation -25..+5 deg, 0.25 deg azimuth, 60 m range, 2 cm range noise, 5%
dropout) in the right lane of a road with lane markings, raised sidewalks, parking, terrain, buildings, walls,
fences, trees, poles, signs, vehicles, people and street furniture (axis-aligned boxes, vertical cylinders,
spheres). Each primitive is intersected only with the azimuth columns that can see it.
"""

from __future__ import annotations

import numpy as np

# Class ids follow the measured point frequency (id 0 = most frequent).
CLASS_NAMES = ("road", "building", "sidewalk", "terrain", "vegetation", "car", "truck", "trunk", "bus", "fence",
               "pole", "lane_marking", "parking", "wall", "motorcycle", "person", "trash_can", "bicycle", "bench",
               "traffic_cone", "bollard", "traffic_light", "traffic_sign", "fire_hydrant")

# Outdoor: RGB as from a camera-colourised sweep, then LiDAR intensity (retro-reflective paint and signs are bright).
_COLORS = {
    "road": (0.25, 0.25, 0.27, 0.15),
    "terrain": (0.45, 0.55, 0.25, 0.30),
    "sidewalk": (0.65, 0.63, 0.60, 0.25),
    "building": (0.70, 0.55, 0.45, 0.35),
    "vegetation": (0.15, 0.45, 0.15, 0.40),
    "car": (0.70, 0.10, 0.10, 0.50),
    "parking": (0.35, 0.35, 0.42, 0.18),
    "wall": (0.80, 0.78, 0.70, 0.30),
    "fence": (0.55, 0.45, 0.30, 0.35),
    "trunk": (0.35, 0.25, 0.15, 0.30),
    "lane_marking": (0.95, 0.95, 0.95, 0.90),
    "pole": (0.55, 0.58, 0.62, 0.45),
    "truck": (0.20, 0.30, 0.60, 0.50),
    "bus": (0.95, 0.70, 0.10, 0.50),
    "person": (0.85, 0.55, 0.45, 0.30),
    "traffic_sign": (0.10, 0.30, 0.85, 0.95),
    "bench": (0.50, 0.30, 0.20, 0.35),
    "traffic_light": (0.10, 0.10, 0.10, 0.60),
    "bicycle": (0.10, 0.70, 0.70, 0.40),
    "trash_can": (0.30, 0.50, 0.30, 0.30),
    "motorcycle": (0.60, 0.10, 0.60, 0.50),
    "bollard": (0.75, 0.75, 0.20, 0.70),
    "fire_hydrant": (0.90, 0.15, 0.15, 0.60),
    "traffic_cone": (1.00, 0.45, 0.00, 0.85),
}
_PALETTE = np.array([_COLORS[n][:3] for n in CLASS_NAMES], np.float32)
_STRENGTH = np.array([_COLORS[n][3] for n in CLASS_NAMES], np.float32)


_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
_SENSOR_Z, _MAX_RANGE, _CURB = 1.7, 60.0, 0.15
_BEAMS = 32
_ELEV = np.linspace(-25.0, 5.0, _BEAMS)             # beam elevations, degrees
_ELEV_STEP = _ELEV[1] - _ELEV[0]


def _outdoor_layout(rng):
  """Ground parameters and primitives (cls, inst, kind, params, (cx, cy, radius, zmin, zmax)) around the sensor."""
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
    prims.append((cls, i, "box", (lo, hi), (c[0], c[1], np.hypot(*(hi - lo)[:2]) / 2, lo[2], hi[2])))

  def cyl(cls, i, x, y, z0, r, h):
    prims.append((cls, i, "cyl", (x, y, z0, r, h), (x, y, r, z0, z0 + h)))

  def sphere(cls, i, c, r):
    prims.append((cls, i, "sphere", (np.asarray(c, float), r), (c[0], c[1], r, c[2] - r, c[2] + r)))

  def ground_z(y):
    return _CURB if wr <= abs(y) < wr + ws else 0.0

  for s in (-1, 1):
    front = wr + ws + setback[s]
    x = u(-75, -60)
    while x < 70:                                   # building row with alleys
      w, d, h = u(8, 20), u(8, 15), u(5, 20)
      y0 = s * (front + u(0, 2))
      box(_ID["building"], new(), (x, min(y0, y0 + s * d), 0), (x + w, max(y0, y0 + s * d), h))
      x += w + (u(2, 8) if rng.random() < 0.4 else 0.0)
    for cls, thick, hr in (("wall", 0.3, (0.6, 1.2)), ("fence", 0.05, (1.0, 1.8))):
      for _ in range(int(rng.integers(0, 3))):
        y, x0 = s * (wr + ws + u(0.5, setback[s] - 0.3)), u(-50, 40)
        box(_ID[cls], new(), (x0, y - thick / 2, 0), (x0 + u(5, 15), y + thick / 2, u(*hr)))
    x = u(-60, -50)
    while x < 60:                                   # street trees on the sidewalk
      y, i, th = s * (wr + ws - 0.6), new(), u(2.0, 3.5)
      cyl(_ID["trunk"], i, x, y, _CURB, u(0.12, 0.25), th)
      r = u(1.5, 3.0)
      sphere(_ID["vegetation"], i, (x, y, _CURB + th + 0.7 * r), r)
      x += u(7, 14)
    for _ in range(int(rng.integers(2, 8))):        # bushes on the terrain
      r = u(0.5, 1.0)
      sphere(_ID["vegetation"], new(), (u(-50, 50), s * (wr + ws + u(r, setback[s] - r)), 0.3 * r), r)
    x = u(-55, -35)
    while x < 55:                                   # street-light poles at the curb
      cyl(_ID["pole"], new(), x, s * (wr + 0.4), _CURB, 0.1, u(6, 9))
      x += u(15, 30)
  for _ in range(int(rng.integers(2, 6))):          # signs: a post (pole) and a plate
    s, x = rng.choice([-1, 1]), u(-40, 40)
    y, i, hp = s * (wr + 0.6), new(), u(2.2, 2.6)
    cyl(_ID["pole"], i, x, y, _CURB, 0.04, hp)
    box(_ID["traffic_sign"], new(), (x - 0.03, y - 0.35, _CURB + hp - 0.2), (x + 0.03, y + 0.35, _CURB + hp + 0.5))
  for _ in range(int(rng.integers(1, 3))):          # traffic lights
    s, x = rng.choice([-1, 1]), u(-20, 20)
    y, hp = s * (wr + 0.5), u(1.6, 2.4)   # low enough for the +5 deg top beam
    cyl(_ID["pole"], new(), x, y, _CURB, 0.08, hp)
    box(_ID["traffic_light"], new(), (x - 0.2, y - 0.2, _CURB + hp), (x + 0.2, y + 0.2, _CURB + hp + 1.0))

  def vehicle(cls, x, y, length, width, height, cab):
    i = new()
    box(_ID[cls], i, (x - length / 2, y - width / 2, 0.3), (x + length / 2, y + width / 2, height))
    if cab:
      box(_ID[cls], i, (x - length / 4, y - width / 2 + 0.05, height), (x + length / 4, y + width / 2 - 0.05,
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
        cyl(_ID[cls], i, x, y, z, 0.2, 1.45)
        sphere(_ID[cls], i, (x, y, z + 1.6), 0.11)
      elif cls == "bench":
        box(_ID[cls], i, (x - 0.9, y - 0.25, z + 0.4), (x + 0.9, y + 0.25, z + 0.48))
        box(_ID[cls], i, (x - 0.9, y + 0.2, z + 0.48), (x + 0.9, y + 0.25, z + 0.9))
      elif cls in ("bicycle", "motorcycle"):
        half = (0.85, 0.04, 1.0) if cls == "bicycle" else (1.0, 0.3, 1.1)
        box(_ID[cls], i, (x - half[0], y - half[1], z), (x + half[0], y + half[1], z + half[2]))
      else:
        r, h = {"trash_can": (0.3, 1.0), "bollard": (0.1, 0.9), "fire_hydrant": (0.12, 0.7),
                "traffic_cone": (0.15, 0.7)}[cls]
        cyl(_ID[cls], i, x, y, z, r, h)
  return g, prims


def _ground_label(p, g):
  y, wr, ws = np.abs(p[..., 1]), g["wr"], g["ws"]
  lab = np.full(y.shape, _ID["terrain"], np.int32)
  for s, x0, x1 in g["parking"]:
    lab[(np.sign(p[..., 1]) == s) & (p[..., 0] >= x0) & (p[..., 0] <= x1)] = _ID["parking"]
  lab[(y >= wr) & (y < wr + ws)] = _ID["sidewalk"]
  road = y < wr
  lab[road] = _ID["road"]
  mark = road & ((y < 0.075) & (np.mod(p[..., 0], 6.0) < 3.0) | (np.abs(y - (wr - 0.3)) < 0.075))
  lab[mark] = _ID["lane_marking"]
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


def generate(rng: np.random.Generator, num_points=None, columns: int = 1440):
  """coord, color, normal, segment, instance, strength of one sweep drawn from `rng`."""
  g, prims = _outdoor_layout(rng)
  o = np.array([0.0, -g["wr"] / 2, _SENSOR_Z])
  elev = np.deg2rad(_ELEV)
  while True:
    az = np.arange(columns) * (2 * np.pi / columns)
    d = np.stack([np.cos(elev)[None] * np.cos(az)[:, None], np.cos(elev)[None] * np.sin(az)[:, None],
                  np.broadcast_to(np.sin(elev)[None], (columns, _BEAMS))], -1)      # [A, 32, 3]
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
    for c, i, kind, params, (cx, cy, rad, zmin, zmax) in prims:
      dist = np.hypot(cx - o[0], cy - o[1])
      if dist - rad > _MAX_RANGE:
        continue
      if dist <= rad + 0.5:
        spans, beams = [(0, columns)], slice(0, _BEAMS)
      else:   # only the azimuth columns and beams that can see the primitive (its bounding cylinder)
        half = np.arcsin(min(1.0, (rad + 0.2) / dist)) + step
        mid = np.arctan2(cy - o[1], cx - o[0])
        j0, j1 = int(np.floor((mid - half) / step)), int(np.ceil((mid + half) / step)) + 1
        a = j0 % columns
        b = a + min(j1 - j0, columns)
        spans = [(a, min(b, columns))] + ([(0, b - columns)] if b > columns else [])
        near, far = dist - rad, dist + rad
        lo = np.degrees(np.arctan2(zmin - o[2], near if zmin < o[2] else far))
        hi = np.degrees(np.arctan2(zmax - o[2], near if zmax > o[2] else far))
        e0 = max(0, int(np.floor((lo - _ELEV[0]) / _ELEV_STEP)) - 1)
        e1 = min(_BEAMS, int(np.ceil((hi - _ELEV[0]) / _ELEV_STEP)) + 2)
        if e0 >= e1:
          continue
        beams = slice(e0, e1)
      for a, b in spans:                        # basic slices are views: update in place
        view = (slice(a, b), beams)
        t, n = _hit(kind, params, o, d[view])
        better = t < t_best[view]
        t_best[view][better] = t[better]
        nrm[view][better] = n[better]
        cls[view][better] = c
        inst[view][better] = i
    t_noisy = t_best + rng.normal(0, 0.02, t_best.shape)
    keep = np.isfinite(t_best) & (t_best <= _MAX_RANGE) & (rng.random(t_best.shape) > 0.05) & (cls >= 0)
    if not num_points or keep.sum() >= num_points:
      break
    columns = int(np.ceil(columns * 1.15 * num_points / max(keep.sum(), 1)))
  coord = np.array([0.0, 0.0, _SENSOR_Z]) + t_noisy[keep][:, None] * d[keep]   # sensor frame xy, ground z = 0
  cls, inst, normal = cls[keep], inst[keep], nrm[keep]
  tint = rng.normal(0, 0.05, (inst.max(initial=0) + 2, 3))                              # per-object shade
  color = np.clip(_PALETTE[cls] + tint[inst + 1] + rng.normal(0, 0.03, (len(cls), 3)), 0, 1)
  strength = np.clip(_STRENGTH[cls] + rng.normal(0, 0.05, len(cls)), 0, 1)
  return coord, color, normal, cls, inst, strength


