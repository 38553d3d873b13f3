"""Per-point features of a dos_jax run's encoder on one scene: what `python -m launch.features --workdir DIR`
pictures (PCA to RGB). Reads the run's own checkpoint (orbax): no torch.

  config = schema.from_record(json.load(open(DIR/config.json))["config"])   # the config the run recorded
  coord, feats, info = workdir_features(config, workdir)  # f32[N, 3], f32[N, D] for every original point
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np

from dos_jax import checkpoint
from dos_jax import specs
from dos_jax.batching import spec as spec_lib
from dos_jax.data import catalog
from dos_jax.data import scene as scene_lib
from dos_jax.errors import ConfigError
from dos_jax.eval import linear_probe
from dos_jax.eval import probe
from dos_jax.models import encoder


def workdir_features(config: ml_collections.ConfigDict, workdir: str, scene_dir: Optional[str] = None,
                     use_teacher: bool = False) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
  """(coord f32[N, 3], features f32[N, D], info) of the run's latest checkpoint on one whole scene.

  `config`: the run's validated config (its model and batching; `schema.from_record` of DIR/config.json).
  `scene_dir`: a Pointcept scene folder; default the first validation scene of the run's own data source (for
  the synthetic configs, a generated room). Features are the eval-mode encoder's (every stage carried back to the
  points, as the probe reads them) at every original point. `info`: step, branch, scene, width.
  """
  params, step = probe.restore_params(workdir, use_teacher)
  if params is None:
    raise ConfigError(f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}: no checkpoint to picture")
  if scene_dir:
    scene = scene_lib.load_scene(scene_dir)
    name = scene_dir
  else:
    source = catalog.scene_source(config.data, "val", seed=int(config.seed))
    scene, name = source[0], f"{source.name}[0]"
  model_spec = specs.model_spec(config)
  apply_fn = jax.jit(functools.partial(encoder.apply, train=False, spec=model_spec))
  feats = linear_probe.extract_features(apply_fn, params["encoder"], [scene], spec_lib.batch_spec(config),
                                        batch_size=1)
  coord = np.asarray(feats.coords[0], np.float32)
  info = {"step": step, "branch": "teacher" if use_teacher else "student", "scene": name,
          "points": int(feats.features.shape[0]), "width": int(feats.features.shape[1]),
          "variant": config.model.variant}
  return coord, feats.features, info
