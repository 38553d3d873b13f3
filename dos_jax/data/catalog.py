"""The scene source a data config names: `scene_source(config.data, split)` (synthetic | pointcept | tfds).

Formats and their keys are described in `dos_jax.data.sources` (synthetic scenes, Pointcept folders) and
`dos_jax.data.tfds_builder` (prepared TFDS data_dirs). This module sits above both: `tfds_builder` builds its
datasets from `sources`, so the dispatch cannot live in `sources` without an import cycle.
"""

from __future__ import annotations

import collections.abc
from typing import Optional

from dos_jax import errors
from dos_jax.data import sources


def _get(cfg, key, default=None):
  """cfg.key for a ConfigDict, dict or any object, `default` when absent."""
  if isinstance(cfg, collections.abc.Mapping):
    return cfg.get(key, default)
  try:
    return cfg.get(key, default)   # ml_collections.ConfigDict
  except AttributeError:
    return getattr(cfg, key, default)


def scene_source(data_cfg, split: str = "train", seed: Optional[int] = None) -> sources.SceneSource:
  """The scenes of `split` described by `data_cfg` (= `config.data`, see configs/common.py).

  Raises:
    ConfigError for an unknown format/split or missing root; DataError for unreadable data.
  """
  if split not in sources.SPLITS:
    raise errors.ConfigError(f"split={split!r}: expected one of {sources.SPLITS}")
  fmt = _get(data_cfg, "format", "synthetic")
  root = _get(data_cfg, "root", "")
  dataset = _get(data_cfg, "dataset", "") or ""
  if fmt == "synthetic":
    cfg_seed = _get(data_cfg, "seed", None)
    s = int(cfg_seed if cfg_seed is not None else (seed or 0))
    return sources.synthetic_source(_get(data_cfg, "kind", "indoor"), int(_get(data_cfg, "num_scenes", 64)), split,
                                    s, _get(data_cfg, "num_val_scenes", None), _get(data_cfg, "num_points", None))
  if fmt in ("pointcept", "tfds") and not root:
    raise errors.ConfigError(f"config.data.root is empty: format {fmt!r} needs a folder "
                             "(--config.data.root=PATH)")
  if fmt == "pointcept":
    return sources.pointcept_source(root, split, dataset, _get(data_cfg, "segment_key", None),
                                    _get(data_cfg, "num_classes", None))
  if fmt == "tfds":
    from dos_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top  (pulls in tensorflow_datasets)
    return tfds_builder.tfds_source(root, split, dataset=dataset, kind=_get(data_cfg, "kind", "indoor"),
                                    name=_get(data_cfg, "tfds_name", None))
  raise errors.ConfigError(f"config.data.format={fmt!r}: expected synthetic | pointcept | tfds")
