"""Label maps: dataset raw ids -> contiguous train ids (0..C-1, -1 = ignore), as data.

Facts (class lists, id tables) come from the datasets' public definitions: ScanNet's NYU40 table and 20-class
benchmark subset, S3DIS's 13 classes, SemanticKITTI's `semantic-kitti.yaml` learning map, the nuScenes-lidarseg
16-class challenge map and the ASPRS LAS classification codes. All lookups are numpy-only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

IGNORE_INDEX = -1

# --- ScanNet ---------------------------------------------------------------------------------------------------
NYU40_NAMES = (
    "unannotated", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop")  # index = NYU40 id

# The 20 ScanNet benchmark classes as NYU40 ids; train id = position in this tuple.
SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET20_NAMES = tuple(NYU40_NAMES[i] for i in SCANNET20_NYU40_IDS)

# --- S3DIS -----------------------------------------------------------------------------------------------------
S3DIS_NAMES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
               "board", "clutter")

# --- SemanticKITTI ---------------------------------------------------------------------------------------------
# Raw id -> learning id (0 = unlabeled, 1..19 = classes below), from semantic-kitti.yaml `learning_map`.
SEMANTICKITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6,
    255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
# Train id = learning id - 1.
SEMANTICKITTI_NAMES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign")

# --- nuScenes-lidarseg -----------------------------------------------------------------------------------------
# Raw lidarseg index (0..31) -> 16-class challenge train id; unlisted (noise, animal, debris, ego, ...) -> ignore.
NUSCENES_LEARNING_MAP = {
    9: 0, 14: 1, 15: 2, 16: 2, 17: 3, 18: 4, 21: 5, 2: 6, 3: 6, 4: 6, 6: 6, 12: 7, 22: 8, 23: 9, 24: 10, 25: 11,
    26: 12, 27: 13, 28: 14, 30: 15,
}
NUSCENES_NAMES = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
    "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation")

# --- ASPRS (LAS) -----------------------------------------------------------------------------------------------
# Standard ASPRS codes kept as classes; 0 (never classified), 7 (noise), reserved and user codes -> ignore.
ASPRS_LEARNING_MAP = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 9: 6, 11: 7}
ASPRS_NAMES = ("unclassified", "ground", "low_vegetation", "medium_vegetation", "high_vegetation", "building",
               "water", "road_surface")

# dataset name (config `data.dataset`) -> class names; the number of classes is their length.
CLASS_NAMES = {
    "scannet": SCANNET20_NAMES,
    "s3dis": S3DIS_NAMES,
    "semantickitti": SEMANTICKITTI_NAMES,
    "nuscenes": NUSCENES_NAMES,
    "las": ASPRS_NAMES,
}


def lookup_table(mapping: Mapping[int, int], size: int, default: int = IGNORE_INDEX) -> np.ndarray:
  """Dense lookup table i32[size]: table[raw] = mapping.get(raw, default)."""
  table = np.full((size,), default, dtype=np.int32)
  for raw, train in mapping.items():
    table[raw] = train
  return table


def apply_map(raw: np.ndarray, mapping: Mapping[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
  """Maps integer raw ids i[N] to train ids i32[N]; ids not in `mapping` (or negative) become `default`."""
  raw = np.asarray(raw).astype(np.int64, copy=False)
  size = max(max(mapping) + 1, int(raw.max(initial=0)) + 1)
  table = lookup_table(mapping, size, default)
  out = np.full(raw.shape, default, dtype=np.int32)
  ok = raw >= 0
  out[ok] = table[raw[ok]]
  return out


def positions(ids: Sequence[int]) -> dict:
  """{ids[i]: i}: the map that sends a subset of raw ids to contiguous train ids in the given order."""
  return {int(raw): i for i, raw in enumerate(ids)}


NYU40_TO_SCANNET20 = positions(SCANNET20_NYU40_IDS)
# SemanticKITTI raw id -> train id 0..18 (learning id 0 -> ignore).
SEMANTICKITTI_TRAIN_MAP = {raw: learn - 1 for raw, learn in SEMANTICKITTI_LEARNING_MAP.items() if learn > 0}


def nyu40_to_scannet20(nyu40: np.ndarray) -> np.ndarray:
  """NYU40 ids i[N] (0 = unannotated) -> ScanNet-20 train ids i32[N] in 0..19, -1 for the other 21 ids."""
  return apply_map(nyu40, NYU40_TO_SCANNET20)


def semantickitti_raw_to_train(raw_label: np.ndarray) -> np.ndarray:
  """Raw `.label` values u32[N] (lower 16 bits = semantic id) -> train ids i32[N] in 0..18, -1 = ignore."""
  sem = np.asarray(raw_label).astype(np.uint32) & np.uint32(0xFFFF)
  return apply_map(sem, SEMANTICKITTI_TRAIN_MAP)


def semantickitti_learning_to_train(learning: np.ndarray) -> np.ndarray:
  """Learning ids i[N] (0 = unlabeled, 1..19) -> train ids i32[N] (-1, 0..18)."""
  learning = np.asarray(learning).astype(np.int64)
  return np.where((learning >= 1) & (learning <= 19), learning - 1, IGNORE_INDEX).astype(np.int32)


def nuscenes_raw_to_train(raw: np.ndarray) -> np.ndarray:
  """nuScenes-lidarseg ids u8[N] (0..31) -> 16-class train ids i32[N], -1 = ignore."""
  return apply_map(raw, NUSCENES_LEARNING_MAP)


def asprs_to_train(classification: np.ndarray) -> np.ndarray:
  """ASPRS classification codes u8[N] -> train ids i32[N] (see ASPRS_NAMES), -1 = ignore."""
  return apply_map(classification, ASPRS_LEARNING_MAP)
