"""TensorFlow Datasets builders for scenes: `SyntheticScenes` and `PointceptScenes` (Pointcept scene folders).

What must be installed: `tensorflow-datasets` (>= 4.9) and `array-record` (a dependency of it on Linux); NOT
TensorFlow. Without TensorFlow a builder only works with `file_format="array_record"` (used here) and is read
through `builder.as_data_source(split)` (random access, numpy arrays), never `as_dataset()` (that needs TF).

  prepare_synthetic(data_dir, kind='indoor', num_train=64, num_val=16)    # -> prepared dataset folder
  prepare_pointcept(data_dir, scenes_root, dataset='scannet')
  source = tfds_source(data_dir, 'train')        # a SceneSource, as sources.scene_source(format='tfds') gives

Each example holds one scene with variable-length per-point features (N points):
  coord f32[N, 3], color u8[N, 3] (0-255), normal f32[N, 3], segment i32[N], instance i32[N], strength f32[N],
  name (text). A missing attribute is stored as an empty array (0 rows) and comes back as None.
The class count, names and head/common/tail groups are kept in the dataset's metadata.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from dos_jax import errors
from dos_jax.data import labels
from dos_jax.data import scene as scene_lib
from dos_jax.data import sources
from dos_jax.data import synthetic

VERSION = tfds.core.Version("1.0.0")


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "coord": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
      "color": tfds.features.Tensor(shape=(None, 3), dtype=np.uint8),
      "normal": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
      "segment": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "instance": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "strength": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      "name": tfds.features.Text(),
  })


def encode(scene: scene_lib.Scene) -> dict:
  """Scene -> a feature dict (colour as uint8 0-255; absent attributes as empty arrays)."""
  s = scene_lib.validate_scene(scene)
  empty3, empty = np.zeros((0, 3), np.float32), np.zeros((0,), np.int32)
  return {
      "coord": s.coord,
      "color": np.round(np.clip(s.color, 0, 1) * 255).astype(np.uint8),
      "normal": s.normal if s.normal is not None else empty3,
      "segment": s.segment if s.segment is not None else empty,
      "instance": s.instance if s.instance is not None else empty,
      "strength": s.strength if s.strength is not None else empty.astype(np.float32),
      "name": s.name,
  }


def decode(example: dict, name: Optional[str] = None) -> scene_lib.Scene:
  """A feature dict read from a data source -> a validated Scene (name: the stored one unless given)."""
  stored = example["name"]
  stored = stored.decode() if isinstance(stored, bytes) else str(stored)
  opt = lambda key: example[key] if len(example[key]) else None
  s = scene_lib.Scene(
      coord=np.asarray(example["coord"], np.float32),
      color=np.asarray(example["color"]).astype(np.float32) / np.float32(255.0),
      normal=opt("normal"), segment=opt("segment"), instance=opt("instance"), strength=opt("strength"),
      name=name or stored)
  return scene_lib.validate_scene(s)


def _info(builder, description: str, num_classes, class_names, groups) -> tfds.core.DatasetInfo:
  # DatasetInfo directly (not dataset_info_from_configs): that one looks for README/CITATION files beside the module.
  meta = tfds.core.MetadataDict(num_classes=num_classes, class_names=list(class_names or []),
                                groups=groups or {})
  # disable_shuffling: records keep generation order, so record i of a split is scene i of that split.
  return tfds.core.DatasetInfo(builder=builder, description=description, features=_features(), metadata=meta,
                               disable_shuffling=True)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base for builders that download nothing."""

  # TFDS looks for a checksums file beside the builder's code, which (for a module inside a package) imports the
  # optional `importlib_resources` package; nothing is downloaded here, so there are no URLs to check.
  @tfds_utils.classproperty
  @classmethod
  def url_infos(cls):
    return None


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """kind: 'indoor' | 'outdoor'; scenes seeded (seed, 0, i) for train and (seed, 1, i) for val."""
  kind: str = "indoor"
  num_train: int = 64
  num_val: int = 16
  seed: int = 0


class SyntheticScenes(_LocalBuilder):
  """The synthetic scene set (`dos_jax.data.synthetic`), splits 'train' and 'val'."""

  VERSION = VERSION
  BUILDER_CONFIGS = [SyntheticConfig(name="indoor", kind="indoor"), SyntheticConfig(name="outdoor", kind="outdoor")]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return _info(self, f"Synthetic {c.kind} scenes (dos_jax.data.synthetic), seed {c.seed}.", synthetic.NUM_CLASSES,
                 synthetic.CLASS_NAMES[c.kind], {k: list(v) for k, v in synthetic.CLASS_GROUPS[c.kind].items()})

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in ("train", "val")}

  def _generate_examples(self, split):
    c = self.builder_config
    src = sources.synthetic_source(c.kind, c.num_train, split, c.seed, c.num_val)
    for i in range(len(src)):
      yield f"{split}-{i:06d}", encode(src[i])


@dataclasses.dataclass
class PointceptConfig(tfds.core.BuilderConfig):
  """dataset: a `sources.DATASETS` key (label file and class count) or '' (auto label file, classes unknown)."""
  dataset: str = ""


class PointceptScenes(_LocalBuilder):
  """Pointcept-format scene folders from `manual_dir` (flat, nested, or with train/ and val/ subfolders)."""

  VERSION = VERSION
  BUILDER_CONFIGS = [PointceptConfig(name="default")] + [PointceptConfig(name=d, dataset=d) for d in sources.DATASETS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Pass the folder of Pointcept scene folders as manual_dir "
                                  "(tfds.download.DownloadConfig(manual_dir=...)), or use prepare_pointcept().")

  def _info(self) -> tfds.core.DatasetInfo:
    d = self.builder_config.dataset
    _, num_classes = sources.DATASETS.get(d, (None, None))
    names = labels.CLASS_NAMES.get(d)
    return _info(self, f"Pointcept scene folders ({d or 'any dataset'}).", num_classes, names, None)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(root, split) for split in ("train", "val")}

  def _generate_examples(self, root, split):
    src = sources.pointcept_source(root, split, self.builder_config.dataset)
    for i, path in enumerate(src.items):
      example = encode(src[i])
      example["name"] = os.path.relpath(path, root)   # not the absolute path of the machine that built it
      yield example["name"], example


# ------------------------------------------------------------------------------------------------ helpers
def prepare_synthetic(data_dir: str, kind: str = "indoor", num_train: int = 64, num_val: int = 16, seed: int = 0,
                      name: Optional[str] = None) -> str:
  """Builds (once) the synthetic set into `data_dir`; returns the prepared dataset folder."""
  tfds.disable_progress_bar()
  config = SyntheticConfig(name=name or f"{kind}_{num_train}_{num_val}_s{seed}", kind=kind, num_train=num_train,
                           num_val=num_val, seed=seed)
  builder = SyntheticScenes(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return os.fspath(builder.data_dir)


def prepare_pointcept(data_dir: str, scenes_root: str, dataset: str = "") -> str:
  """Builds (once) a Pointcept folder tree into `data_dir`; returns the prepared dataset folder."""
  tfds.disable_progress_bar()
  builder = PointceptScenes(config=dataset or "default", data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=scenes_root))
  return os.fspath(builder.data_dir)


def find_prepared(data_dir: str, name: Optional[str] = None):
  """Prepared dataset folders (holding dataset_info.json) under `data_dir`, filtered by a `name` substring."""
  if os.path.isfile(os.path.join(data_dir, "dataset_info.json")):
    return [data_dir]
  found = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(data_dir, "*", "*", "*", "dataset_info.json")))
  return [p for p in found if name is None or name in os.path.relpath(p, data_dir)]


def tfds_source(data_dir: str, split: str = "train", dataset: str = "", kind: str = "indoor",
                name: Optional[str] = None) -> sources.SceneSource:
  """A SceneSource over a prepared TFDS dataset (read without TensorFlow).

  `data_dir` is a TFDS data_dir (or one prepared dataset folder). With several prepared datasets inside, `name`
  (config.data.tfds_name, e.g. 'synthetic_scenes/indoor_64_16_s0') picks one; otherwise the dataset name
  (synthetic -> synthetic_scenes/<kind>..., else pointcept_scenes) narrows the choice.
  """
  if not os.path.isdir(data_dir):
    raise errors.DataError(f"{data_dir}: TFDS data_dir does not exist")
  found = find_prepared(data_dir, name)
  if len(found) > 1 and name is None:
    prefix = f"synthetic_scenes{os.sep}{kind}" if dataset == "synthetic" else "pointcept_scenes"
    found = [p for p in found if os.path.relpath(p, data_dir).startswith(prefix)] or found
  if len(found) != 1:
    what = "no prepared dataset (dataset_info.json)" if not found else f"{len(found)} prepared datasets: {found}"
    raise errors.ConfigError(f"config.data.root={data_dir}: {what}; set config.data.tfds_name to pick one")
  path = found[0]
  try:
    builder = tfds.builder_from_directory(path)
    src = builder.as_data_source(split="train+val" if split == "all" else split)
  except Exception as e:
    raise errors.DataError(f"{path}: cannot read split {split!r} ({type(e).__name__}: {e})") from e
  meta = builder.info.metadata or {}
  groups = meta.get("groups") or None
  return sources.SceneSource(
      f"tfds:{path}:{split}", range(len(src)), lambda i: decode(src[i]),
      meta.get("num_classes"), meta.get("class_names") or None,
      {k: [int(c) for c in v] for k, v in groups.items()} if groups else None)
