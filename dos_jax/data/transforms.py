"""Point-cloud transforms: grid sampling and named dict -> dict augmentation ops (Pointcept names and parameters).

A point cloud travels as a dict of per-point numpy arrays (`POINT_KEYS`: coord f32[n, 3], color f32[n, 3] in
[0, 1], normal f32[n, 3], strength f32[n], segment i32[n], instance i32[n], point_index i32[n]). Every op is a
factory returning `op(data, rng) -> data` that never mutates its input; randomness comes only from the explicit
`numpy.random.Generator`, so a view is a pure function of (scene, rng state).

Ops are registered by name in `OPS` and built from a list of `(name, kwargs)` pairs (`build`), e.g. the defaults
in `default_augmentations(kind, recipe)` (Sonata's view transforms, or the earlier 'v1' list). Geometric ops transform normals consistently (rotation and flips act on normals
as on directions; anisotropic scaling uses the inverse-transpose and renormalises).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dos_jax.data import color
from dos_jax.data import elastic


Data = Dict[str, Any]
Op = Callable[[Data, np.random.Generator], Data]

# Per-point arrays: subsetting a cloud indexes all of these that are present.
POINT_KEYS = ("coord", "color", "normal", "strength", "segment", "instance", "point_index")


def from_scene(scene) -> Data:
  """The dict form of a `Scene`, with point_index = arange(n) (the original index of every point)."""
  data = {"coord": np.asarray(scene.coord, np.float32), "color": np.asarray(scene.color, np.float32),
          "point_index": np.arange(scene.num_points, dtype=np.int32), "name": scene.name}
  for key in ("normal", "strength", "segment", "instance"):
    value = getattr(scene, key, None)
    if value is not None:
      data[key] = np.asarray(value)
  return data


def take(data: Data, index: np.ndarray) -> Data:
  """Subset of a cloud: every per-point array indexed by `index` (int[m] or bool[n]); other entries copied."""
  return {k: (v[index] if k in POINT_KEYS and v is not None else v) for k, v in data.items()}


def bounds(x: np.ndarray):
  """(min, max) over axis 0 of x[n, d] (d small). numpy's axis-0 reduction of an [n, 3] array is ~100x slower
  than reducing a contiguous row, so reduce the transposed copy."""
  xt = np.ascontiguousarray(x.T)
  return xt.min(1), xt.max(1)


def voxel_keys(coord: np.ndarray, cell_size: float, offset: Optional[np.ndarray] = None) -> np.ndarray:
  """Scalar id i64[n] of each point's cell floor((coord + offset) / cell_size); equal ids <=> same cell."""
  shifted = np.asarray(coord, np.float64) if offset is None else np.asarray(coord, np.float64) + offset
  grid = np.floor(shifted / cell_size).astype(np.int64)
  lo, hi = bounds(grid)
  grid -= lo
  extent = hi - lo + 1
  if math.prod(int(e) for e in extent) >= 1 << 62:
    # Linear keys would wrap around int64 (e.g. clusters 1e5 m apart at 0.1 m); lexicographic ranks keep the
    # same order and stay exact.
    return np.unique(grid, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
  return (grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]


def grid_sample(coord: np.ndarray, grid_size: float,
                rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Voxel grid sampling: one representative point per occupied voxel floor(coord / grid_size).

  Args:
    coord: f32[n, 3] coordinates in metres (n >= 1).
    grid_size: voxel edge in metres.
    rng: when given (training), each voxel's representative is a uniformly random member; when None
      (evaluation), the member with the smallest index.

  Returns:
    keep: i32[m] indices of the representatives, one per occupied voxel (in ascending voxel-key order).
    inverse: i32[n] for every original point, the position in `keep` of its voxel's representative, so
      `keep[inverse[i]]` is in the same voxel as point i.
  """
  # The same floor(coord / grid_size) formula as batching.patches.voxelize, so voxels agree downstream.
  keys = voxel_keys(coord, grid_size)
  sort = np.argsort(keys, kind="stable")
  sorted_keys = keys[sort]
  start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
  count = np.diff(np.r_[start, len(keys)])
  if rng is None:
    pick = start
  else:
    pick = start + (rng.random(len(start)) * count).astype(np.int64)
  keep = sort[pick].astype(np.int32)
  inverse = np.empty(len(keys), dtype=np.int32)
  inverse[sort] = np.repeat(np.arange(len(start), dtype=np.int32), count)
  return keep, inverse


# ----------------------------------------------------------------------------------------------------- geometry


def _need(ok: bool, op: str, problem: str) -> None:
  """Op parameters come from config.data.augmentations: a bad one must fail at build time, not deep in a worker
  (a zero scale made the normal transform singular; a NaN std gave NaN colours, so every step was skipped)."""
  if not ok:
    raise ValueError(f"{op}: {problem}")


def _is_number(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _check_p(op: str, p) -> None:
  _need(_is_number(p) and 0 <= p <= 1, op, f"p={p!r}: expected a probability in [0, 1]")


def _check_nonnegative(op: str, name: str, value) -> None:
  _need(_is_number(value) and value >= 0, op, f"{name}={value!r}: expected a finite number >= 0")


def _check_interval(op: str, name: str, value, positive: bool = False) -> None:
  ok = (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value)
        and value[0] <= value[1] and (not positive or value[0] > 0))
  _need(ok, op, f"{name}={value!r}: expected (low, high) of finite numbers, low <= high" + (", low > 0" * positive))


def _check_center(op: str, center) -> None:
  _need(center is None or (isinstance(center, (tuple, list)) and len(center) == 3
                           and all(_is_number(c) for c in center)),
        op, f"center={center!r}: expected None or 3 finite numbers")


def _rotation(axis: str, angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  if axis == "x":
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
  if axis == "y":
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
  if axis == "z":
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
  raise ValueError(f"random_rotate axis={axis!r}: expected 'x', 'y' or 'z'")


def _apply_linear(data: Data, matrix: np.ndarray, center: np.ndarray) -> Data:
  """coord -> (coord - center) @ M^T + center; normals -> normalise(n @ M^-1) (the inverse-transpose rule)."""
  out = dict(data)
  # coord @ M^T + (center - center @ M^T), in float32: one pass over the points.
  m = matrix.T.astype(np.float32)
  shift = (center - center @ matrix.T).astype(np.float32)
  out["coord"] = data["coord"] @ m + shift
  if data.get("normal") is not None:
    normal = data["normal"] @ np.linalg.inv(matrix).astype(np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", normal, normal))[:, None]
    out["normal"] = normal / np.maximum(norm, 1e-12)
  return out


def random_rotate(angle: Sequence[float] = (-180.0, 180.0), axis: str = "z", center: Optional[Sequence[float]] = None,
                  p: float = 1.0) -> Op:
  """Rotation about `axis` by an angle drawn uniformly from `angle` (degrees), about `center` (default: the
  bounding-box centre), with probability p."""
  _rotation(axis, 0.0)  # validate early
  _check_interval("random_rotate", "angle", angle)
  _check_p("random_rotate", p)
  _check_center("random_rotate", center)

  def op(data, rng):
    if rng.random() >= p:
      return data
    theta = np.deg2rad(rng.uniform(angle[0], angle[1]))
    c = _bbox_center(data["coord"]) if center is None else np.asarray(center, np.float64)
    return _apply_linear(data, _rotation(axis, theta), c)
  return op


def random_scale(scale: Sequence[float] = (0.9, 1.1), anisotropic: bool = False, p: float = 1.0) -> Op:
  """Scaling about the origin by factors drawn uniformly from `scale` (one per axis when anisotropic)."""
  _check_interval("random_scale", "scale", scale, positive=True)
  _check_p("random_scale", p)
  def op(data, rng):
    if rng.random() >= p:
      return data
    factor = rng.uniform(scale[0], scale[1], size=3 if anisotropic else 1)
    return _apply_linear(data, np.diag(np.broadcast_to(factor, (3,))), np.zeros(3))
  return op


def random_flip(p: float = 0.5, center: Optional[Sequence[float]] = None) -> Op:
  """Mirrors x and, independently, y, each with probability p, about `center` (default: the bounding-box centre;
  Pointcept's RandomFlip negates the coordinates, i.e. center=(0, 0, 0))."""
  _check_p("random_flip", p)
  _check_center("random_flip", center)
  def op(data, rng):
    signs = np.where(rng.random(2) < p, -1.0, 1.0)
    if (signs == 1.0).all():
      return data
    c = _bbox_center(data["coord"]) if center is None else np.asarray(center, np.float64)
    return _apply_linear(data, np.diag([signs[0], signs[1], 1.0]), c)
  return op


def random_jitter(sigma: float = 0.005, clip: float = 0.02, p: float = 1.0) -> Op:
  """Adds clip(N(0, sigma^2), -clip, clip) metres to every coordinate."""
  _check_nonnegative("random_jitter", "sigma", sigma)
  _check_nonnegative("random_jitter", "clip", clip)
  _check_p("random_jitter", p)
  def op(data, rng):
    if rng.random() >= p:
      return data
    noise = np.clip(sigma * rng.standard_normal(data["coord"].shape), -clip, clip)
    return {**data, "coord": (data["coord"] + noise).astype(np.float32)}
  return op


def elastic_distortion(distortion_params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6)),
                       p: float = 0.95) -> Op:
  """With probability p, displaces the points by smoothed gaussian noise once per (granularity, magnitude) pair
  (metres), in order: coord += magnitude * elastic.elastic.random_displacement(coord, granularity, rng). Normals are
  left as they are (as Pointcept's ElasticDistortion; the displacement is smooth at the scale of a voxel)."""
  ok = isinstance(distortion_params, (tuple, list)) and all(
      isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_number(v) for v in pair) and pair[0] > 0
      and pair[1] >= 0 for pair in distortion_params)
  _need(ok, "elastic_distortion", f"distortion_params={distortion_params!r}: expected ((granularity > 0, "
        "magnitude >= 0), ...) in metres")
  _check_p("elastic_distortion", p)
  pairs = [(float(g), float(m)) for g, m in distortion_params]

  def op(data, rng):
    if rng.random() >= p:
      return data
    coord = data["coord"]
    for granularity, magnitude in pairs:
      coord = coord + magnitude * elastic.random_displacement(coord, granularity, rng)
    return {**data, "coord": coord.astype(np.float32)}
  return op


def center_shift(apply_z: bool = True) -> Op:
  """Moves the bounding-box centre of x, y to 0 and (if apply_z) the minimum z to 0."""
  def op(data, rng):
    del rng
    coord = data["coord"]
    lo, hi = bounds(coord)
    shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] if apply_z else 0.0], np.float32)
    return {**data, "coord": coord - shift}
  return op


def normalize_coord() -> Op:
  """Centres at the centroid and scales into the unit ball (object-level data)."""
  def op(data, rng):
    del rng
    coord = data["coord"] - data["coord"].mean(0)
    radius = max(float(np.linalg.norm(coord, axis=1).max()), 1e-12)
    return {**data, "coord": (coord / radius).astype(np.float32)}
  return op


def _bbox_center(coord: np.ndarray) -> np.ndarray:
  lo, hi = bounds(coord)
  return (lo.astype(np.float64) + hi) / 2


# ------------------------------------------------------------------------------------------------------- colour


def chromatic_auto_contrast(p: float = 0.2, blend_factor: Optional[float] = None) -> Op:
  """Stretches each colour channel to [0, 1] and blends with the original (random blend unless given)."""
  _check_p("chromatic_auto_contrast", p)
  _need(blend_factor is None or (_is_number(blend_factor) and 0 <= blend_factor <= 1), "chromatic_auto_contrast",
        f"blend_factor={blend_factor!r}: expected None or a number in [0, 1]")
  def op(data, rng):
    if data.get("color") is None or rng.random() >= p:
      return data
    color = data["color"]
    lo, hi = bounds(color)
    stretched = (color - lo) / np.maximum(hi - lo, 1e-6)
    blend = rng.random() if blend_factor is None else blend_factor
    return {**data, "color": ((1 - blend) * color + blend * stretched).astype(np.float32)}
  return op


def chromatic_translation(p: float = 0.95, ratio: float = 0.05) -> Op:
  """Adds one random offset in [-ratio, ratio] per channel (colour in [0, 1]), clipped to [0, 1]."""
  _check_p("chromatic_translation", p)
  _check_nonnegative("chromatic_translation", "ratio", ratio)
  def op(data, rng):
    if data.get("color") is None or rng.random() >= p:
      return data
    shift = (rng.random(3) - 0.5) * 2 * ratio
    return {**data, "color": np.clip(data["color"] + shift, 0, 1).astype(np.float32)}
  return op


def chromatic_jitter(p: float = 0.95, std: float = 0.005) -> Op:
  """Adds per-point gaussian noise of standard deviation `std` (colour in [0, 1]), clipped to [0, 1]."""
  _check_p("chromatic_jitter", p)
  _check_nonnegative("chromatic_jitter", "std", std)
  def op(data, rng):
    if data.get("color") is None or rng.random() >= p:
      return data
    noise = std * rng.standard_normal(data["color"].shape)
    return {**data, "color": np.clip(data["color"] + noise, 0, 1).astype(np.float32)}
  return op


def _factor_range(op: str, name: str, value, center: float, bound: Tuple[float, float]):
  """torchvision's convention: a number v means [max(bound_lo, center - v), center + v]; a pair is taken as it is.
  Returns None when the range is the identity (the adjustment is skipped, drawing nothing)."""
  if _is_number(value):
    _need(value >= 0, op, f"{name}={value!r}: expected a number >= 0 or a (low, high) pair")
    lo, hi = max(bound[0], center - float(value)), center + float(value)
  else:
    _check_interval(op, name, value)
    lo, hi = float(value[0]), float(value[1])
  _need(bound[0] <= lo <= hi <= bound[1], op, f"{name}={value!r}: expected a range inside {bound}")
  return None if lo == hi == center else (lo, hi)


def random_color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.02, p: float = 0.8) -> Op:
  """torchvision-style colour jitter on colours in [0, 1] (Pointcept's RandomColorJitter): brightness, contrast,
  saturation factors drawn uniformly from [1 - v, 1 + v] (or the pair given), a hue shift from [-v, v] turns; the
  four adjustments run in a random order, each with probability p. Sonata: (0.4, 0.4, 0.2, 0.02), p = 0.8."""
  name = "random_color_jitter"
  ranges = (_factor_range(name, "brightness", brightness, 1.0, (0.0, math.inf)),
            _factor_range(name, "contrast", contrast, 1.0, (0.0, math.inf)),
            _factor_range(name, "saturation", saturation, 1.0, (0.0, math.inf)),
            _factor_range(name, "hue", hue, 0.0, (-0.5, 0.5)))
  _check_p(name, p)
  adjust = (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation, color.adjust_hue)

  def op(data, rng):
    if data.get("color") is None:
      return data
    order = rng.permutation(4)
    factors = [None if r is None else rng.uniform(r[0], r[1]) for r in ranges]
    rgb = data["color"]
    for i in order:
      if factors[i] is not None and rng.random() < p:
        rgb = adjust[i](rgb, factors[i])
    return {**data, "color": np.asarray(rgb, np.float32)}
  return op


# ------------------------------------------------------------------------------------------------- composition

OPS: Dict[str, Callable[..., Op]] = {
    "random_rotate": random_rotate,
    "random_scale": random_scale,
    "random_flip": random_flip,
    "random_jitter": random_jitter,
    "elastic_distortion": elastic_distortion,
    "center_shift": center_shift,
    "normalize_coord": normalize_coord,
    "chromatic_auto_contrast": chromatic_auto_contrast,
    "chromatic_translation": chromatic_translation,
    "chromatic_jitter": chromatic_jitter,
    "random_color_jitter": random_color_jitter,
}


def compose(ops: Sequence[Op]) -> Op:
  """Applies `ops` left to right with the same Generator."""
  def op(data, rng):
    for f in ops:
      data = f(data, rng)
    return data
  return op


def build(spec: Sequence[Tuple[str, Dict[str, Any]]]) -> Op:
  """Builds a composed op from [(name, kwargs), ...] (names from `OPS`); raises ValueError on unknown names or
  bad parameters (the gate reports it as config.data.augmentations)."""
  ops = []
  for item in spec:
    name, kwargs = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]) if len(item) > 1 else {})
    if name not in OPS:
      raise ValueError(f"unknown op {name!r}; expected one of {sorted(OPS)}")
    try:
      ops.append(OPS[name](**kwargs))
    except TypeError as e:
      raise ValueError(f"bad parameters for {name!r}: {e}") from e
  return compose(ops)


RECIPES = ("sonata", "v1")


def default_augmentations(kind: str, recipe: str = "sonata") -> List[Tuple[str, Dict[str, Any]]]:
  """Per-view augmentation spec: 'indoor' (with colour; 'longtail' rooms too) or 'outdoor' (LiDAR).

  recipe='sonata' (the default; indoor): Sonata's view transforms (configs/sonata/pretrain-sonata-v1m1-0-base.py,
  global views, in its order): centre shift, scale 0.9-1.1, rotations z (full turn about the origin) / x / y
  (+-pi/64) each with p 0.8, flips about the origin, jitter, elastic distortion ((0.2, 0.4), (0.8, 1.6) m),
  colour jitter (0.4, 0.4, 0.2, 0.02, p 0.8) and chromatic translation (p 0.95, ratio 0.05). Sonata applies the
  two colour ops once per scene to both global views; the DOS paper augments each view's colours independently,
  which is what happens here (every op runs per view).
  recipe='v1': the transforms of dos_jax before the Sonata recipe (rotations p 0.5 about the box centre, no elastic
  distortion, auto-contrast + chromatic translation + chromatic jitter), kept so earlier results reproduce.
  Outdoor has one list (Sonata's recipe is indoor).
  """
  if recipe not in RECIPES:
    raise ValueError(f"recipe={recipe!r}: expected one of {RECIPES}")
  if kind in ("indoor", "longtail") and recipe == "sonata":
    return [
        ("center_shift", dict(apply_z=True)),
        ("random_scale", dict(scale=(0.9, 1.1))),
        ("random_rotate", dict(angle=(-180.0, 180.0), axis="z", center=(0.0, 0.0, 0.0), p=0.8)),
        ("random_rotate", dict(angle=(-2.8125, 2.8125), axis="x", p=0.8)),  # pi/64
        ("random_rotate", dict(angle=(-2.8125, 2.8125), axis="y", p=0.8)),
        ("random_flip", dict(p=0.5, center=(0.0, 0.0, 0.0))),
        ("random_jitter", dict(sigma=0.005, clip=0.02)),
        ("elastic_distortion", dict(distortion_params=((0.2, 0.4), (0.8, 1.6)), p=0.95)),
        ("random_color_jitter", dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.02, p=0.8)),
        ("chromatic_translation", dict(p=0.95, ratio=0.05)),
    ]
  if kind in ("indoor", "longtail"):  # 'longtail' is the synthetic long-tail rooms
    return [
        ("center_shift", dict(apply_z=True)),
        ("random_rotate", dict(angle=(-180.0, 180.0), axis="z", p=0.5)),
        ("random_rotate", dict(angle=(-2.8125, 2.8125), axis="x", p=0.5)),  # pi/64
        ("random_rotate", dict(angle=(-2.8125, 2.8125), axis="y", p=0.5)),
        ("random_scale", dict(scale=(0.9, 1.1))),
        ("random_flip", dict(p=0.5)),
        ("random_jitter", dict(sigma=0.005, clip=0.02)),
        ("chromatic_auto_contrast", dict(p=0.2)),
        ("chromatic_translation", dict(p=0.95, ratio=0.05)),
        ("chromatic_jitter", dict(p=0.95, std=0.005)),
    ]
  if kind == "outdoor":
    return [
        ("center_shift", dict(apply_z=False)),
        ("random_rotate", dict(angle=(-180.0, 180.0), axis="z", p=1.0)),
        ("random_scale", dict(scale=(0.9, 1.1))),
        ("random_flip", dict(p=0.5)),
        ("random_jitter", dict(sigma=0.005, clip=0.02)),
    ]
  raise ValueError(f"kind={kind!r}: expected 'indoor', 'longtail' or 'outdoor'")
