"""Class lists and frequency groups of the benchmarks the probe reports on (data, not code).

ScanNet200 facts come from the ScanNet200 benchmark (Rozenberszki et al., ECCV 2022; BenchmarkScripts/ScanNet200
`scannet200_constants.py` / `scannet200_splits.py`, also used by Pointcept): the 200 raw category ids and names, in
the benchmark's class order (training label i = CLASS_NAMES_200[i]), and the official head (66) / common (68) /
tail (66) groups by annotated-point frequency.

`class_groups(dataset)` returns {group name: tuple of training label indices} for the datasets that define groups:
  * 'scannet200': the official head/common/tail groups.
  * 'synthetic': the synthetic generator's recorded frequency groups (`dos_jax.data.synthetic.CLASS_GROUPS`).
Other datasets have no official groups and return {} (the probe then reports only mIoU).

The room-level train/evaluation split of a scene folder is `dos_jax.data.sources.split_scenes`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from dos_jax.data import synthetic
from dos_jax.errors import ConfigError

# ScanNet raw category ids of the 200 benchmark classes, in training-label order.
VALID_CLASS_IDS_200: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22,
    23, 24, 26, 27, 28, 29, 31, 32, 33, 34, 35, 36, 38, 39, 40, 41, 42, 44,
    45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 59, 62, 63, 64, 65,
    66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86,
    87, 88, 89, 90, 93, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105,
    106, 107, 110, 112, 115, 116, 118, 120, 121, 122, 125, 128, 130, 131,
    132, 134, 136, 138, 139, 140, 141, 145, 148, 154, 155, 156, 157, 159,
    161, 163, 165, 166, 168, 169, 170, 177, 180, 185, 188, 191, 193, 195,
    202, 208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276,
    283, 286, 300, 304, 312, 323, 325, 331, 342, 356, 370, 392, 395, 399,
    408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776, 1156, 1163, 1164,
    1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176,
    1178, 1179, 1180, 1181, 1182, 1183, 1184, 1185, 1186, 1187, 1188, 1189,
    1190, 1191,
)

# Names of the 200 classes, aligned with VALID_CLASS_IDS_200.
CLASS_NAMES_200: Tuple[str, ...] = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed",
    "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair",
    "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv", "nightstand",
    "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub", "end table", "dining table",
    "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand", "whiteboard", "blanket",
    "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe", "computer tower", "bottle",
    "bin", "ottoman", "bench", "board", "washing machine", "mirror", "copier", "basket", "sofa chair",
    "file cabinet", "fan", "laptop", "shower", "paper", "person", "paper towel dispenser", "oven", "blinds",
    "rack", "plate", "blackboard", "piano", "suitcase", "rail", "radiator", "recycling bin", "container",
    "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand", "light", "laundry basket", "pipe",
    "clothes dryer", "guitar", "toilet paper holder", "seat", "speaker", "column", "bicycle", "ladder",
    "bathroom stall", "shower wall", "cup", "jacket", "storage bin", "coffee maker", "dishwasher",
    "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster", "bulletin board", "ironing board",
    "fireplace", "soap dish", "kitchen counter", "doorframe", "toilet paper dispenser", "mini fridge",
    "fire extinguisher", "ball", "hat", "shower curtain rod", "water cooler", "paper cutter", "tray",
    "shower door", "pillar", "ledge", "toaster oven", "mouse", "toilet seat cover dispenser", "furniture", "cart",
    "storage container", "scale", "tissue box", "light switch", "crate", "power outlet", "decoration", "sign",
    "projector", "closet door", "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones",
    "dish rack", "broom", "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar",
    "purse", "vent", "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock",
    "music stand", "projector screen", "divider", "laundry detergent", "bathroom counter", "object",
    "bathroom vanity", "closet wall", "laundry hamper", "bathroom stall door", "ceiling light", "trash bin",
    "dumbbell", "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure",
    "shower head", "keyboard piano", "case of water bottles", "coat rack", "storage organizer", "folded chair",
    "fire alarm", "power strip", "calendar", "poster", "potted plant", "luggage", "mattress",
)

# Official ScanNet200 frequency groups (class names).
HEAD_NAMES_200: Tuple[str, ...] = (
    "tv stand", "curtain", "blinds", "shower curtain", "bookshelf", "tv", "kitchen cabinet", "pillow", "lamp",
    "dresser", "monitor", "object", "ceiling", "board", "stove", "closet wall", "couch", "office chair",
    "kitchen counter", "shower", "closet", "doorframe", "sofa chair", "mailbox", "nightstand", "washing machine",
    "picture", "book", "sink", "recycling bin", "table", "backpack", "shower wall", "toilet", "copier", "counter",
    "stool", "refrigerator", "window", "file cabinet", "chair", "wall", "plant", "coffee table", "stairs",
    "armchair", "cabinet", "bathroom vanity", "bathroom stall", "mirror", "blackboard", "trash can", "stair rail",
    "box", "towel", "door", "clothes", "whiteboard", "bed", "floor", "bathtub", "desk", "wardrobe",
    "clothes dryer", "radiator", "shelf",
)
COMMON_NAMES_200: Tuple[str, ...] = (
    "cushion", "end table", "dining table", "keyboard", "bag", "toilet paper", "printer", "blanket", "microwave",
    "shoe", "computer tower", "bottle", "bin", "ottoman", "bench", "basket", "fan", "laptop", "person",
    "paper towel dispenser", "oven", "rack", "piano", "suitcase", "rail", "container", "telephone", "stand",
    "light", "laundry basket", "pipe", "seat", "column", "bicycle", "ladder", "jacket", "storage bin",
    "coffee maker", "dishwasher", "machine", "mat", "windowsill", "bulletin board", "fireplace", "mini fridge",
    "water cooler", "shower door", "pillar", "ledge", "furniture", "cart", "decoration", "closet door",
    "vacuum cleaner", "dish rack", "range hood", "projector screen", "divider", "bathroom counter",
    "laundry hamper", "bathroom stall door", "ceiling light", "trash bin", "bathroom cabinet", "structure",
    "storage organizer", "potted plant", "mattress",
)
TAIL_NAMES_200: Tuple[str, ...] = (
    "paper", "plate", "soap dispenser", "bucket", "clock", "guitar", "toilet paper holder", "speaker", "cup",
    "paper towel roll", "bar", "toaster", "ironing board", "soap dish", "toilet paper dispenser",
    "fire extinguisher", "ball", "hat", "shower curtain rod", "paper cutter", "tray", "toaster oven", "mouse",
    "toilet seat cover dispenser", "storage container", "scale", "tissue box", "light switch", "crate",
    "power outlet", "sign", "projector", "candle", "plunger", "stuffed animal", "headphones", "broom",
    "guitar case", "dustpan", "hair dryer", "water bottle", "handicap bar", "purse", "vent", "shower floor",
    "water pitcher", "bowl", "paper bag", "alarm clock", "music stand", "laundry detergent", "dumbbell", "tube",
    "cd case", "closet rod", "coffee kettle", "shower head", "keyboard piano", "case of water bottles",
    "coat rack", "folded chair", "fire alarm", "power strip", "calendar", "poster", "luggage",
)

# ScanNet v2 20-class benchmark (Pointcept's `segment20` order; NYU40 ids in NYU40_IDS_20).
CLASS_NAMES_20: Tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
NYU40_IDS_20: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

# S3DIS (13 classes, Pointcept order).
CLASS_NAMES_S3DIS: Tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase", "board",
    "clutter",
)

# SemanticKITTI (19 learning classes, after the official learning map).
CLASS_NAMES_SEMANTIC_KITTI: Tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)

_NAMES = {
    "scannet": CLASS_NAMES_20,
    "scannet200": CLASS_NAMES_200,
    "s3dis": CLASS_NAMES_S3DIS,
    "semantickitti": CLASS_NAMES_SEMANTIC_KITTI,
}


def _indices(names: Tuple[str, ...]) -> Tuple[int, ...]:
  position = {name: i for i, name in enumerate(CLASS_NAMES_200)}
  return tuple(sorted(position[name] for name in names))


# Training-label indices (0..199) of each ScanNet200 group.
SCANNET200_GROUPS: Dict[str, Tuple[int, ...]] = {
    "head": _indices(HEAD_NAMES_200),
    "common": _indices(COMMON_NAMES_200),
    "tail": _indices(TAIL_NAMES_200),
}


def _synthetic_groups(kind: str) -> Dict[str, Tuple[int, ...]]:
  groups = synthetic.CLASS_GROUPS
  if kind in groups and isinstance(groups[kind], dict):
    groups = groups[kind]
  return {str(name): tuple(int(c) for c in ids) for name, ids in groups.items()}


def class_names(dataset: str, num_classes: Optional[int] = None, kind: str = "indoor") -> Tuple[str, ...]:
  """Class names for `dataset` (config.data.dataset).

  Synthetic scenes take the generator's names for `kind` (config.data.kind); unknown datasets get generic names
  'class_i' for `num_classes` classes.
  """
  if dataset in _NAMES:
    return _NAMES[dataset]
  if dataset == "synthetic":
    try:
      names = synthetic.CLASS_NAMES
      names = names.get(kind) if isinstance(names, dict) else names
      if names is not None:
        return tuple(str(n) for n in names)
    except (ImportError, AttributeError):
      pass
  if num_classes is None:
    raise ConfigError(f"config.data.dataset={dataset!r}: no class list known; set config.probe.num_classes")
  return tuple(f"class_{i}" for i in range(num_classes))


def class_groups(dataset: str, kind: str = "indoor") -> Dict[str, Tuple[int, ...]]:
  """Frequency groups {name: label indices} for `dataset`, or {} when it defines none.

  Args:
    dataset: config.data.dataset ('scannet200', 'synthetic', ...).
    kind: config.data.kind, selects the synthetic generator's groups ('indoor' | 'outdoor').
  """
  if dataset == "scannet200":
    return dict(SCANNET200_GROUPS)
  if dataset == "synthetic":
    try:
      return _synthetic_groups(kind)
    except (ImportError, AttributeError):
      return {}
  return {}
