"""`Scene`: one labelled point cloud in memory, the unit every reader returns; validation and Pointcept folder I/O.

A Pointcept-format scene folder holds one `.npy` file per attribute (N points):

  coord.npy     float32 (N, 3)   metres (float64 accepted and cast)            required
  color.npy     uint8   (N, 3)   0-255 (other ints / floats in 0-255 accepted) optional (zeros when absent, LiDAR)
  normal.npy    float32 (N, 3)                                                  optional
  segment20.npy / segment200.npy / segment.npy   int (N,) or (N, 1), -1 = ignore   optional
  instance.npy  int (N,), -1 = none                                             optional
  strength.npy  float (N,) or (N, 1), LiDAR intensity                           optional

Every problem raises `dos_jax.errors.DataError` naming the file (or scene) and what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from dos_jax import errors
from dos_jax import io as fileio

DataError = errors.DataError

# float32 keeps ~1 cm resolution up to ~1e5 m; beyond that coordinates must be recentred (e.g. map projections).
MAX_ABS_COORD = 1.0e5
SEGMENT_KEYS = ("segment20", "segment200", "segment")


@dataclasses.dataclass
class Scene:
  """A point cloud with optional per-point attributes (N points).

  Attributes:
    coord: f32[N, 3] coordinates in metres.
    color: f32[N, 3] in [0, 1] (zeros when the sensor has no colour, e.g. LiDAR).
    normal: f32[N, 3] unit normals, or None.
    segment: i32[N] semantic label, -1 = ignore, or None.
    instance: i32[N] instance id, -1 = none, or None.
    name: where the scene came from (a path or a synthetic id), used in error messages.
    strength: f32[N] LiDAR intensity/remission in [0, 1], or None.
  """

  coord: np.ndarray
  color: np.ndarray
  normal: Optional[np.ndarray] = None
  segment: Optional[np.ndarray] = None
  instance: Optional[np.ndarray] = None
  name: str = ""
  strength: Optional[np.ndarray] = None

  @property
  def num_points(self) -> int:
    return int(self.coord.shape[0])


# ------------------------------------------------------------------------------------------------ array checks
def _as_array(x, where: str) -> np.ndarray:
  if not isinstance(x, np.ndarray):
    try:
      x = np.asarray(x)
    except Exception as e:  # ragged lists and the like
      raise DataError(f"{where}: not convertible to an array ({e})") from e
  if x.dtype == object or x.dtype.kind in "SUVMm":
    raise DataError(f"{where}: dtype {x.dtype} is not numeric")
  return x


def _check_float(x, where: str, cols: Optional[int], finite: bool = True) -> np.ndarray:
  """Checks a float array of shape (N, cols) (or (N,) when cols is None) and returns it as float32."""
  x = _as_array(x, where)
  if x.dtype.kind != "f" or x.dtype.itemsize < 4:
    raise DataError(f"{where}: dtype {x.dtype} not accepted; expected float32 (or float64)")
  if cols is None:
    if x.ndim == 2 and x.shape[1] == 1:
      x = x[:, 0]
    if x.ndim != 1:
      raise DataError(f"{where}: shape {x.shape}, expected (N,) or (N, 1)")
  elif x.ndim != 2 or x.shape[1] != cols:
    raise DataError(f"{where}: shape {x.shape}, expected (N, {cols})")
  if finite and x.size and not np.isfinite(x).all():
    bad = int((~np.isfinite(x)).any(axis=-1).sum()) if x.ndim == 2 else int((~np.isfinite(x)).sum())
    raise DataError(f"{where}: {bad} point(s) with NaN/inf values")
  return x.astype(np.float32, copy=False)


def _check_int(x, where: str, lo: int, hi: Optional[int] = None) -> np.ndarray:
  """Checks an integer label array (N,) or (N, 1) with values in [lo, hi) and returns it as int32."""
  x = _as_array(x, where)
  if x.dtype.kind not in "iub":
    raise DataError(f"{where}: dtype {x.dtype} not accepted; labels must be integers")
  if x.ndim == 2 and x.shape[1] == 1:
    x = x[:, 0]
  if x.ndim != 1:
    raise DataError(f"{where}: shape {x.shape}, expected (N,)")
  if x.size:
    mn, mx = int(x.min()), int(x.max())
    if mn < lo:
      raise DataError(f"{where}: label {mn} out of range (minimum allowed {lo}; -1 = ignore)")
    if hi is not None and mx >= hi:
      raise DataError(f"{where}: label {mx} out of range for {hi} classes (allowed {lo}..{hi - 1})")
    if mx > np.iinfo(np.int32).max:
      raise DataError(f"{where}: label {mx} does not fit int32")
  return x.astype(np.int32, copy=False)


def _check_color_0_255(x, where: str) -> np.ndarray:
  """Pointcept stores colours as 0-255 (uint8 usually); returns f32[N, 3] in [0, 1]."""
  x = _as_array(x, where)
  if x.ndim != 2 or x.shape[1] != 3:
    raise DataError(f"{where}: shape {x.shape}, expected (N, 3)")
  if x.dtype.kind in "iub":
    if x.size and (int(x.min()) < 0 or int(x.max()) > 255):
      raise DataError(f"{where}: colour values outside 0-255 ([{int(x.min())}, {int(x.max())}])")
  elif x.dtype.kind == "f":
    if x.size and not np.isfinite(x).all():
      raise DataError(f"{where}: NaN/inf colour values")
    if x.size and (float(x.min()) < 0 or float(x.max()) > 255):
      raise DataError(f"{where}: colour values outside 0-255 ([{float(x.min())}, {float(x.max())}])")
    if x.size and 0 < float(x.max()) <= 1.0:
      raise DataError(f"{where}: float colours look like [0, 1]; the Pointcept layout stores 0-255 "
                      "(multiply by 255 and save as uint8)")
  else:
    raise DataError(f"{where}: dtype {x.dtype} not accepted for colours (expected uint8 0-255)")
  return (x.astype(np.float32) / np.float32(255.0))


def validate_scene(scene: Scene, name: Optional[str] = None, num_classes: Optional[int] = None,
                   min_points: int = 1) -> Scene:
  """Checks an in-memory scene and returns it with canonical dtypes (f32 / i32, no copy when already right).

  Args:
    scene: the scene to check.
    name: used in error messages (default: `scene.name`).
    num_classes: when given, segment labels must lie in [-1, num_classes).
    min_points: fewer points than this is an error (an empty cloud always is).

  Raises:
    DataError naming the scene and field for a wrong type, shape or dtype, mismatched lengths, NaN/inf values,
    coordinates beyond `MAX_ABS_COORD`, colours outside [0, 1], labels out of range or too few points.
  """
  if not isinstance(scene, Scene):
    raise DataError(f"{name or '<scene>'}: expected a Scene, got {type(scene).__name__}")
  name = name or scene.name or "<scene>"
  coord = _check_float(scene.coord, f"{name}: coord", 3)
  n = coord.shape[0]
  if n == 0:
    raise DataError(f"{name}: empty point cloud (0 points)")
  if n < min_points:
    raise DataError(f"{name}: {n} points, fewer than the required {min_points}")
  if np.abs(coord).max() > MAX_ABS_COORD:
    raise DataError(f"{name}: coord magnitude {float(np.abs(coord).max()):.3g} exceeds {MAX_ABS_COORD:g} m; "
                    "recentre the cloud (subtract its minimum) before saving")

  def same_length(arr, field):
    if arr.shape[0] != n:
      raise DataError(f"{name}: {field} has {arr.shape[0]} rows but coord has {n} points")
    return arr

  color = same_length(_check_float(scene.color, f"{name}: color", 3), "color")
  if color.size and (color.min() < -1e-6 or color.max() > 1 + 1e-6):
    raise DataError(f"{name}: color outside [0, 1] ([{color.min():.3g}, {color.max():.3g}])")
  normal = segment = instance = strength = None
  if scene.normal is not None:
    normal = same_length(_check_float(scene.normal, f"{name}: normal", 3), "normal")
  if scene.segment is not None:
    segment = same_length(_check_int(scene.segment, f"{name}: segment", -1, num_classes), "segment")
  if scene.instance is not None:
    instance = same_length(_check_int(scene.instance, f"{name}: instance", -1), "instance")
  if scene.strength is not None:
    strength = same_length(_check_float(scene.strength, f"{name}: strength", None), "strength")
  return Scene(coord=coord, color=color, normal=normal, segment=segment, instance=instance, name=name,
               strength=strength)


# ------------------------------------------------------------------------------------------------ folder I/O
def _load_npy(path: str) -> np.ndarray:
  try:
    arr = np.load(path, allow_pickle=False)
  except FileNotFoundError as e:
    raise DataError(f"{path}: file not found") from e
  except Exception as e:  # truncated, not an .npy, pickled objects, permissions...
    raise DataError(f"{path}: unreadable or corrupt .npy file ({type(e).__name__}: {e})") from e
  if not isinstance(arr, np.ndarray):
    raise DataError(f"{path}: expected one array, found {type(arr).__name__}")
  return arr


def load_scene(path: str, segment_key: Optional[str] = None, num_classes: Optional[int] = None,
               min_points: int = 1) -> Scene:
  """Reads a Pointcept-format scene folder (see the module docstring).

  Args:
    path: the scene folder.
    segment_key: which label file to read ('segment20', 'segment200', 'segment', or any `<key>.npy`); default:
      the first of 'segment20', 'segment200', 'segment' present, None when none is.
    num_classes: when given, labels must lie in [-1, num_classes).
    min_points: fewer points is an error.

  Returns:
    A validated Scene (coord f32[N, 3], color f32[N, 3] in [0, 1], ...), name = path.

  Raises:
    DataError naming the file and the problem.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise DataError(f"{path}: scene folder does not exist" if not os.path.exists(path)
                    else f"{path}: not a folder (expected a Pointcept scene folder with coord.npy)")
  file = lambda key: os.path.join(path, key + ".npy")
  exists = lambda key: os.path.isfile(file(key))
  if not exists("coord"):
    raise DataError(f"{file('coord')}: file not found (every scene folder needs coord.npy)")
  coord = _check_float(_load_npy(file("coord")), file("coord"), 3, finite=False)
  n = coord.shape[0]
  if n == 0:
    raise DataError(f"{file('coord')}: empty point cloud (0 points)")
  if not np.isfinite(coord).all():
    raise DataError(f"{file('coord')}: {int((~np.isfinite(coord)).any(-1).sum())} point(s) with NaN/inf coordinates")

  def load(key, check):
    arr = check(_load_npy(file(key)), file(key))
    if arr.shape[0] != n:
      raise DataError(f"{file(key)}: {arr.shape[0]} rows but {file('coord')} has {n} points")
    return arr

  color = load("color", _check_color_0_255) if exists("color") else np.zeros((n, 3), np.float32)
  normal = load("normal", lambda a, w: _check_float(a, w, 3)) if exists("normal") else None
  if segment_key is None:
    segment_key = next((k for k in SEGMENT_KEYS if exists(k)), None)
  elif not exists(segment_key):
    raise DataError(f"{file(segment_key)}: file not found (requested segment_key={segment_key!r})")
  segment = None
  if segment_key is not None:
    segment = load(segment_key, lambda a, w: _check_int(a, w, -1, num_classes))
  instance = load("instance", lambda a, w: _check_int(a, w, -1)) if exists("instance") else None
  strength = load("strength", lambda a, w: _check_float(a, w, None)) if exists("strength") else None
  scene = Scene(coord=coord, color=color, normal=normal, segment=segment, instance=instance, name=path,
                strength=strength)
  return validate_scene(scene, num_classes=num_classes, min_points=min_points)


def save_scene(scene: Scene, path: str, segment_key: str = "segment", overwrite: bool = False) -> str:
  """Writes `scene` as a Pointcept-format folder at `path`, atomically; returns `path`.

  The files are written into a temporary sibling folder that is then renamed into place, so `path` is never seen
  half-written. Colours are stored as uint8 (round(color * 255)); strength as float32 (N, 1) like Pointcept.

  Args:
    scene: validated first (DataError before anything is written).
    path: the scene folder to create.
    segment_key: file name (without .npy) for `scene.segment`, e.g. 'segment20' for ScanNet.
    overwrite: replace an existing folder; otherwise an existing `path` is a DataError.
  """
  path = os.path.abspath(os.fspath(path))
  scene = validate_scene(scene, name=scene.name or path)
  if os.path.exists(path) and not overwrite:
    raise DataError(f"{path}: already exists (pass overwrite=True to replace it)")
  with fileio.atomic_directory(path) as tmp:
    np.save(os.path.join(tmp, "coord.npy"), scene.coord.astype(np.float32))
    np.save(os.path.join(tmp, "color.npy"), np.round(np.clip(scene.color, 0, 1) * 255).astype(np.uint8))
    if scene.normal is not None:
      np.save(os.path.join(tmp, "normal.npy"), scene.normal.astype(np.float32))
    if scene.segment is not None:
      np.save(os.path.join(tmp, segment_key + ".npy"), scene.segment.astype(np.int32))
    if scene.instance is not None:
      np.save(os.path.join(tmp, "instance.npy"), scene.instance.astype(np.int32))
    if scene.strength is not None:
      np.save(os.path.join(tmp, "strength.npy"), scene.strength.astype(np.float32).reshape(-1, 1))
  return path
