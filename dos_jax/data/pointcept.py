"""Readers for real datasets' native files -> `Scene`, and converters that write Pointcept-format scene folders.

Formats (N points; all reads are numpy-only, files are read in place and never modified):
  ScanNet (VoteNet preprocessing)  `<s>_vert.npy` f32 (N, 6) xyz + rgb 0-255, `<s>_sem_label.npy` NYU40 ids,
                                   `<s>_ins_label.npy` (0 = none)   -> ScanNet-20 train ids (or raw NYU40)
  S3DIS (Stanford)                 `Area_N/<room>/Annotations/<class>_<k>.txt` lines 'x y z r g b' -> 13 classes
  mmdet3d `.bin` fixtures          points f32 (N, 6) xyz rgb, semantic_mask / instance_mask int64 (N,)
                                   (ScanNet: NYU40 -> ScanNet-20; S3DIS: 13 classes as stored)
  SemanticKITTI raw                `velodyne/*.bin` f32 (N, 4) xyz + remission, `labels/*.label` u32 (N,)
                                   (low 16 bits raw semantic id -> 19 train ids, high 16 bits instance)
  SemanticKITTI (Open3D-ML .npy)   points f32 (N, 3), labels i32 (N, 1) learning ids 1..19, 0 unlabeled
  nuScenes-lidarseg                `.bin` f32 (N, 5) xyz intensity ring, `_lidarseg.bin` u8 (N,) -> 16 classes
  LAS (laspy)                      xyz (recentred), RGB, intensity, ASPRS classification -> `labels.ASPRS_NAMES`
ScanNet200 labels need raw ScanNet category ids per point, which the VoteNet files do not keep; a Pointcept
folder with `segment200.npy` is read by `scene.load_scene(path, segment_key='segment200')`.
"""

from __future__ import annotations

import glob
import os
from typing import Iterable, List, Optional, Sequence

import numpy as np

from dos_jax.data import labels
from dos_jax.data import scene as scene_lib

DataError = scene_lib.DataError
Scene = scene_lib.Scene


# ------------------------------------------------------------------------------------------------ raw helpers
def _require(path: str) -> str:
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  return path


def _npy(path: str) -> np.ndarray:
  return scene_lib._load_npy(_require(path))  # pylint: disable=protected-access


def _fromfile(path: str, dtype, cols: int = 1) -> np.ndarray:
  """Reads a headerless binary file of `dtype` records with `cols` columns; (N, cols) or (N,) when cols == 1."""
  _require(path)
  size = os.path.getsize(path)
  rec = np.dtype(dtype).itemsize * cols
  if size % rec:
    raise DataError(f"{path}: {size} bytes is not a multiple of the {rec}-byte record ({cols} x {np.dtype(dtype)}); "
                    "truncated or not this format")
  try:
    arr = np.fromfile(path, dtype=dtype)
  except Exception as e:
    raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
  return arr.reshape(-1, cols) if cols > 1 else arr


def _columns(arr: np.ndarray, path: str, cols: int) -> np.ndarray:
  if arr.ndim != 2 or arr.shape[1] < cols:
    raise DataError(f"{path}: shape {arr.shape}, expected (N, {cols})")
  return arr


def _labels_1d(arr: np.ndarray, path: str, n: int, points_path: str) -> np.ndarray:
  if arr.ndim == 2 and arr.shape[1] == 1:
    arr = arr[:, 0]
  if arr.ndim != 1:
    raise DataError(f"{path}: shape {arr.shape}, expected (N,)")
  if arr.dtype.kind not in "iu":
    raise DataError(f"{path}: dtype {arr.dtype} not accepted; labels must be integers")
  if arr.shape[0] != n:
    raise DataError(f"{path}: {arr.shape[0]} labels but {points_path} has {n} points")
  return arr


def _rgb(values: np.ndarray, path: str) -> np.ndarray:
  if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 255):
    raise DataError(f"{path}: rgb values outside 0-255")
  return values.astype(np.float32) / np.float32(255.0)


def _instance(ids: np.ndarray, none_value: Optional[int] = 0) -> np.ndarray:
  ids = ids.astype(np.int64)
  if none_value is not None:
    ids = np.where(ids == none_value, -1, ids)
  return ids.astype(np.int32)


def _finish(s: Scene, num_classes: Optional[int]) -> Scene:
  return scene_lib.validate_scene(s, num_classes=num_classes)


# ------------------------------------------------------------------------------------------------ ScanNet
def find_scannet_votenet(root: str) -> List[str]:
  """Sorted scene folders under `root` holding `<name>/<name>_vert.npy` (the VoteNet layout, one folder per scan)."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: folder does not exist")
  found = [d for d in sorted(glob.glob(os.path.join(root, "*")))
           if os.path.isfile(os.path.join(d, os.path.basename(d) + "_vert.npy"))]
  if not found:
    raise DataError(f"{root}: no '<scene>/<scene>_vert.npy' scans found")
  return found


def read_scannet_votenet(scene_dir: str, label_set: str = "scannet20") -> Scene:
  """Reads one VoteNet-preprocessed ScanNet scan folder `<dir>/<name>_{vert,sem_label,ins_label}.npy`.

  Args:
    scene_dir: folder named after the scan (e.g. .../scene0000_00).
    label_set: 'scannet20' (train ids 0..19, others -1) or 'nyu40' (raw NYU40 ids, 0 = unannotated -> -1).

  Returns:
    Scene: coord f32[N, 3], color f32[N, 3] in [0, 1], segment i32[N], instance i32[N] (-1 = none), no normals
    (VoteNet keeps only subsampled vertices).
  """
  scene_dir = os.fspath(scene_dir).rstrip(os.sep)
  stem = os.path.join(scene_dir, os.path.basename(scene_dir))
  vert_path = stem + "_vert.npy"
  vert = _columns(_npy(vert_path), vert_path, 6)
  n = vert.shape[0]
  sem_path, ins_path = stem + "_sem_label.npy", stem + "_ins_label.npy"
  segment = instance = None
  if os.path.isfile(sem_path):
    sem = _labels_1d(_npy(sem_path), sem_path, n, vert_path)
    if label_set == "scannet20":
      segment = labels.nyu40_to_scannet20(sem)
    elif label_set == "nyu40":
      if sem.size and sem.max() > 40:
        raise DataError(f"{sem_path}: NYU40 id {int(sem.max())} > 40")
      segment = np.where(sem == 0, -1, sem).astype(np.int32)
    else:
      raise DataError(f"{scene_dir}: unknown label_set {label_set!r} (scannet20 | nyu40)")
  if os.path.isfile(ins_path):
    instance = _instance(_labels_1d(_npy(ins_path), ins_path, n, vert_path))
  s = Scene(coord=vert[:, :3].astype(np.float32), color=_rgb(vert[:, 3:6], vert_path), segment=segment,
            instance=instance, name=scene_dir)
  return _finish(s, 20 if label_set == "scannet20" else 41)


# ------------------------------------------------------------------------------------------------ mmdet3d fixtures
def read_mmdet3d(root: str, dataset: str, scene_id: str) -> Scene:
  """Reads an mmdetection3d-layout sample: `<root>/points/<id>.bin` (+ semantic_mask, instance_mask).

  dataset: 'scannet' (NYU40 -> ScanNet-20) | 's3dis' (13 classes as stored) | 'semantickitti'
  (`<root>/sequences/<seq>/velodyne/<frame>.bin`, scene_id = '<seq>/<frame>').
  """
  if dataset == "semantickitti":
    seq, frame = scene_id.split("/")
    base = os.path.join(root, "sequences", seq)
    return read_semantickitti(os.path.join(base, "velodyne", frame + ".bin"),
                              os.path.join(base, "labels", frame + ".label"))
  if dataset not in ("scannet", "s3dis"):
    raise DataError(f"{root}: unknown mmdet3d dataset {dataset!r} (scannet | s3dis | semantickitti)")
  pts_path = os.path.join(root, "points", scene_id + ".bin")
  pts = _fromfile(pts_path, np.float32, 6)
  n = pts.shape[0]
  sem_path = os.path.join(root, "semantic_mask", scene_id + ".bin")
  ins_path = os.path.join(root, "instance_mask", scene_id + ".bin")
  segment = instance = None
  if os.path.isfile(sem_path):
    sem = _labels_1d(_fromfile(sem_path, np.int64), sem_path, n, pts_path)
    segment = labels.nyu40_to_scannet20(sem) if dataset == "scannet" else sem.astype(np.int32)
  if os.path.isfile(ins_path):
    ins = _labels_1d(_fromfile(ins_path, np.int64), ins_path, n, pts_path)
    instance = _instance(ins, 0 if dataset == "scannet" else None)
  s = Scene(coord=pts[:, :3].copy(), color=_rgb(pts[:, 3:6], pts_path), segment=segment, instance=instance,
            name=pts_path)
  return _finish(s, 20 if dataset == "scannet" else len(labels.S3DIS_NAMES))


# ------------------------------------------------------------------------------------------------ S3DIS (Stanford)
def _read_xyzrgb_txt(path: str) -> np.ndarray:
  """An S3DIS text file of 'x y z r g b' lines -> f64[N, 6]; DataError naming the file and line if malformed."""
  _require(path)
  try:
    arr = np.loadtxt(path, dtype=np.float64, ndmin=2)    # fast path; the loop below finds the bad line
    if arr.shape[1] == 6 or arr.size == 0:
      return arr.reshape(-1, 6)
  except ValueError:
    pass
  rows = []
  with open(path, "rb") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      try:
        values = [float(v) for v in parts]
      except ValueError as e:
        raise DataError(f"{path}:{lineno}: not a number in {line[:60]!r} ({e})") from e
      if len(values) != 6:
        raise DataError(f"{path}:{lineno}: {len(values)} values, expected 6 (x y z r g b)")
      rows.append(values)
  return np.asarray(rows, np.float64).reshape(-1, 6)


def read_s3dis_room(room_dir: str) -> Scene:
  """Reads a Stanford S3DIS room `Area_N/<room>/Annotations/<class>_<k>.txt` (one file per object instance).

  The class is the file-name prefix (13 classes, `labels.S3DIS_NAMES`; others such as 'stairs' -> clutter, as
  Pointcept does); the instance id is the file's position in sorted order. Coordinates are kept as stored.
  """
  ann = os.path.join(room_dir, "Annotations")
  files = sorted(glob.glob(os.path.join(ann, "*.txt")))
  if not files:
    raise DataError(f"{ann}: no <class>_<k>.txt annotation files found")
  coords, colors, segs, insts = [], [], [], []
  for k, path in enumerate(files):
    cls = os.path.basename(path).rsplit("_", 1)[0]
    cls_id = labels.S3DIS_NAMES.index(cls) if cls in labels.S3DIS_NAMES else labels.S3DIS_NAMES.index("clutter")
    pts = _read_xyzrgb_txt(path)
    coords.append(pts[:, :3])
    colors.append(_rgb(pts[:, 3:6], path))
    segs.append(np.full(len(pts), cls_id, np.int32))
    insts.append(np.full(len(pts), k, np.int32))
  s = Scene(coord=np.concatenate(coords).astype(np.float32), color=np.concatenate(colors),
            segment=np.concatenate(segs), instance=np.concatenate(insts), name=os.fspath(room_dir).rstrip(os.sep))
  return _finish(s, len(labels.S3DIS_NAMES))


# ------------------------------------------------------------------------------------------------ LiDAR
def read_semantickitti(bin_path: str, label_path: Optional[str] = None) -> Scene:
  """Reads a raw SemanticKITTI frame: f32 (N, 4) xyz + remission and optionally its u32 `.label` file.

  Returns coord f32[N, 3] (sensor frame, metres), color zeros, strength = remission f32[N], segment = 19-class
  train ids (official learning map; unlabeled/outlier/other-structure/other-object -> -1), instance = upper 16
  bits (0 -> -1).
  """
  pts = _fromfile(bin_path, np.float32, 4)
  n = pts.shape[0]
  segment = instance = None
  if label_path is not None:
    raw = _labels_1d(_fromfile(label_path, np.uint32), label_path, n, bin_path)
    segment = labels.semantickitti_raw_to_train(raw)
    instance = _instance(raw >> np.uint32(16))
  s = Scene(coord=pts[:, :3].copy(), color=np.zeros((n, 3), np.float32), segment=segment, instance=instance,
            name=bin_path, strength=pts[:, 3].copy())
  return _finish(s, len(labels.SEMANTICKITTI_NAMES))


def read_open3dml_kitti(points_path: str, labels_path: Optional[str] = None) -> Scene:
  """Reads Open3D-ML's SemanticKITTI `.npy` pair: points f32 (N, 3), labels (N, 1) learning ids (0 = unlabeled).

  Learning ids 1..19 become train ids 0..18, 0 becomes -1; no remission in this format.
  """
  pts = _columns(_npy(points_path), points_path, 3)
  n = pts.shape[0]
  segment = None
  if labels_path is not None:
    lab = _labels_1d(_npy(labels_path), labels_path, n, points_path)
    if lab.size and (lab.min() < 0 or lab.max() > 19):
      raise DataError(f"{labels_path}: learning ids must be 0..19, found [{int(lab.min())}, {int(lab.max())}]")
    segment = labels.semantickitti_learning_to_train(lab)
  s = Scene(coord=pts[:, :3].astype(np.float32), color=np.zeros((n, 3), np.float32), segment=segment,
            name=points_path)
  return _finish(s, len(labels.SEMANTICKITTI_NAMES))


def read_nuscenes(bin_path: str, lidarseg_path: Optional[str] = None) -> Scene:
  """Reads a nuScenes LIDAR_TOP sweep f32 (N, 5) = x, y, z, intensity (0-255), ring, and its lidarseg u8 (N,).

  Returns strength = intensity / 255 and segment = 16-class train ids (noise, animal, debris, ego... -> -1).
  """
  pts = _fromfile(bin_path, np.float32, 5)
  n = pts.shape[0]
  segment = None
  if lidarseg_path is not None:
    raw = _labels_1d(_fromfile(lidarseg_path, np.uint8), lidarseg_path, n, bin_path)
    if raw.size and raw.max() > 31:
      raise DataError(f"{lidarseg_path}: lidarseg index {int(raw.max())} > 31")
    segment = labels.nuscenes_raw_to_train(raw)
  strength = np.clip(pts[:, 3], 0, 255) / np.float32(255.0)
  s = Scene(coord=pts[:, :3].copy(), color=np.zeros((n, 3), np.float32), segment=segment, name=bin_path,
            strength=strength.astype(np.float32))
  return _finish(s, len(labels.NUSCENES_NAMES))


def read_las(path: str, recenter: bool = True) -> Scene:
  """Reads a LAS/LAZ file with laspy: xyz (minus the per-axis minimum when `recenter`, in float64 before the cast
  to float32 so map coordinates keep their precision), RGB (16- or 8-bit), intensity, ASPRS classes -> train ids.

  Coordinates stay in the file's projected units (metres or feet, per its CRS).
  """
  import laspy  # optional dependency, imported on use
  _require(path)
  try:
    las = laspy.read(path)
  except Exception as e:
    raise DataError(f"{path}: unreadable LAS file ({type(e).__name__}: {e})") from e
  xyz = np.stack([np.asarray(las.x, np.float64), np.asarray(las.y, np.float64), np.asarray(las.z, np.float64)], 1)
  if xyz.shape[0] == 0:
    raise DataError(f"{path}: empty point cloud (0 points)")
  if recenter:
    xyz = xyz - xyz.min(axis=0)
  n = xyz.shape[0]
  dims = set(las.point_format.dimension_names)
  color = np.zeros((n, 3), np.float32)
  if {"red", "green", "blue"} <= dims:
    rgb = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1).astype(np.float32)
    color = rgb / (65535.0 if rgb.max(initial=0) > 255 else 255.0)
  intensity = np.asarray(las.intensity, np.float32)
  strength = intensity / (65535.0 if intensity.max(initial=0) > 255 else 255.0)
  segment = labels.asprs_to_train(np.asarray(las.classification, np.int64))
  s = Scene(coord=xyz.astype(np.float32), color=color.astype(np.float32), segment=segment, name=path,
            strength=strength.astype(np.float32))
  return _finish(s, len(labels.ASPRS_NAMES))


# ------------------------------------------------------------------------------------------------ converters
def scene_id(scene: Scene) -> str:
  """A folder name for a scene: its name's basename without extension."""
  base = os.path.basename(os.fspath(scene.name).rstrip(os.sep)) or "scene"
  return os.path.splitext(base)[0] if base.endswith((".bin", ".npy", ".las", ".laz")) else base


def convert_scenes(scenes: Iterable[Scene], dst_root: str, segment_key: str = "segment",
                   names: Optional[Sequence[str]] = None, overwrite: bool = False) -> List[str]:
  """Writes each scene as `<dst_root>/<name>/` (Pointcept layout, atomic per scene); returns the folders."""
  out = []
  for i, s in enumerate(scenes):
    name = names[i] if names is not None else scene_id(s)
    out.append(scene_lib.save_scene(s, os.path.join(dst_root, name), segment_key=segment_key, overwrite=overwrite))
  return out


def convert_scannet_votenet(src_root: str, dst_root: str, scenes: Optional[Sequence[str]] = None,
                            overwrite: bool = False) -> List[str]:
  """VoteNet ScanNet scans under `src_root` -> Pointcept folders with coord, color, segment20, instance."""
  dirs = find_scannet_votenet(src_root)
  if scenes is not None:
    dirs = [d for d in dirs if os.path.basename(d) in set(scenes)]
  return convert_scenes((read_scannet_votenet(d) for d in dirs), dst_root, segment_key="segment20",
                        overwrite=overwrite)


def convert_s3dis(area_dirs: Sequence[str], dst_root: str, overwrite: bool = False) -> List[str]:
  """Stanford S3DIS areas -> `<dst>/<Area_N>/<room>/` Pointcept folders (coord, color, segment, instance)."""
  out = []
  for area in area_dirs:
    rooms = sorted(d for d in glob.glob(os.path.join(area, "*")) if os.path.isdir(os.path.join(d, "Annotations")))
    if not rooms:
      raise DataError(f"{area}: no room folders with Annotations/ found")
    out += convert_scenes((read_s3dis_room(r) for r in rooms),
                          os.path.join(dst_root, os.path.basename(os.fspath(area).rstrip(os.sep))), overwrite=overwrite)
  return out


def convert_semantickitti(sequence_dir: str, dst_root: str, overwrite: bool = False) -> List[str]:
  """A raw SemanticKITTI sequence folder (velodyne/*.bin, labels/*.label) -> `<dst>/<seq>_<frame>/` folders."""
  bins = sorted(glob.glob(os.path.join(sequence_dir, "velodyne", "*.bin")))
  if not bins:
    raise DataError(f"{sequence_dir}: no velodyne/*.bin frames found")
  seq = os.path.basename(os.fspath(sequence_dir).rstrip(os.sep))

  def frames():
    for b in bins:
      lab = os.path.join(sequence_dir, "labels", os.path.basename(b)[:-4] + ".label")
      yield read_semantickitti(b, lab if os.path.isfile(lab) else None)

  names = [f"{seq}_{os.path.basename(b)[:-4]}" for b in bins]
  return convert_scenes(frames(), dst_root, names=names, overwrite=overwrite)


def convert_nuscenes(pairs: Sequence[tuple], dst_root: str, overwrite: bool = False) -> List[str]:
  """(lidar .bin, lidarseg .bin) pairs -> Pointcept folders with coord, color (zeros), strength, segment."""
  return convert_scenes((read_nuscenes(b, l) for b, l in pairs), dst_root, overwrite=overwrite)


def convert_las(paths: Sequence[str], dst_root: str, overwrite: bool = False) -> List[str]:
  """LAS files -> Pointcept folders (recentred coordinates, colour, strength, ASPRS train ids)."""
  return convert_scenes((read_las(p) for p in paths), dst_root, overwrite=overwrite)
