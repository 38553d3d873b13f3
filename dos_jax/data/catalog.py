"""The scene source a data config names: `scene_source(config.data, split)` (synthetic | pointcept | tfds).

Formats and their keys are described in `dos_jax.data.sources` (synthetic scenes, Pointcept folders) and
`dos_jax.data.tfds_builder` (prepared TFDS data_dirs). This module sits above both: `tfds_builder` builds its
datasets from `sources`, so the dispatch cannot live in `sources` without an import cycle.
"""

from __future__ import annotations

from typing import Optional

from dos_jax.data import sources

FORMATS = ("synthetic", "pointcept", "tfds")  # data.format


def scene_source(data_cfg, split: str = "train", seed: Optional[int] = None) -> sources.SceneSource:
  """The scenes of `split` described by `data_cfg` (= `config.data` of a validated config; `seed` is the synthetic
  scene set's seed when data.seed is None).

  Raises:
    DataError for unreadable data (ValueError for an unknown split or format, which the gate rules out).
  """
  if split not in sources.SPLITS:
    raise ValueError(f"split={split!r}: expected one of {sources.SPLITS}")
  d = data_cfg
  if d.format == "synthetic":
    s = int(d.seed if d.seed is not None else (seed or 0))
    return sources.synthetic_source(d.kind, int(d.num_scenes), split, s, d.num_val_scenes, d.num_points)
  if d.format == "pointcept":
    return sources.pointcept_source(d.root, split, d.dataset, d.segment_key, d.num_classes)
  if d.format == "tfds":
    from dos_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top  (pulls in tensorflow_datasets)
    return tfds_builder.tfds_source(d.root, split, dataset=d.dataset, kind=d.kind, name=d.tfds_name)
  raise ValueError(f"data.format={d.format!r}: expected one of {FORMATS}")
