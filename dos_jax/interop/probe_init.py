"""Probing an upstream encoder: `init_from(config, path)` -> (config with the checkpoint's model, encoder params).

  config, params = probe_init.init_from(schema.validate(config), "sonata.pth", teacher=True, up_cast_level=2)
  probe.run_probe(config, workdir, encoder_params=params, encoder_source="pointcept checkpoint sonata.pth")

This is `python -m launch.probe --init-from PATH`. It sits in interop, above the probe (`dos_jax.eval.probe` may not
import interop): the caller loads the checkpoint here and hands its params to `run_probe`, whose ModelSpec and
BatchSpec are decoded from the returned config (the upstream architecture keys merged into config.model).
"""

from __future__ import annotations

from typing import Any, Tuple

import ml_collections

from dos_jax.errors import ConfigError
from dos_jax.interop import pointcept

# Input width of the upstream encoder -> the data.feat_keys that feed it (coord, colour [, normal]).
_FEAT_KEYS = {6: ("coord", "color"), 9: ("coord", "color", "normal")}


def init_from(config, path: str, teacher: bool = False, up_cast_level: int = 0,
              **overrides) -> Tuple[ml_collections.ConfigDict, Any]:
  """(config with model/feat_keys of the upstream checkpoint at `path`, encoder params).

  Args:
    config: a validated experiment config (not modified: a resolved copy is returned).
    path: a Pointcept PTv3 / Sonata checkpoint (`pointcept.load_checkpoint` reads its layouts).
    teacher: take the checkpoint's teacher branch instead of the student's.
    up_cast_level: levels the up-cast concatenates (0 = all, as probe.features='stages'; 2 = Sonata's head input,
      1,088 channels at base: the probe then reads that, probe.features='projected').
    **overrides: what the tensors cannot tell (`enc_num_head`, `enc_patch_size`, `order`), passed to
      `pointcept.load_checkpoint`.
  Returns:
    (config whose config.model holds the checkpoint's architecture keys and data.feat_keys its input width,
    encoder params).
  Raises:
    ConfigError: the encoder's input width is neither 6 nor 9 channels.
  """
  params, model_cfg = pointcept.load_checkpoint(path, branch="teacher" if teacher else "student",
                                                up_cast_level=up_cast_level, **overrides)
  keys = _FEAT_KEYS.get(int(model_cfg["in_channels"]))
  if keys is None:
    raise ConfigError(f"{path}: the encoder takes {model_cfg['in_channels']} input channels; the probe feeds 6 "
                      f"(coord, color) or 9 (+ normal)")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    # A fresh ConfigDict: the checkpoint's values replace the config's (types may differ, e.g. mlp_ratio 4.0).
    config.model = ml_collections.ConfigDict({**config.model.to_dict(), **model_cfg})
    config.data.feat_keys = keys
    if up_cast_level:
      # The probe then reads the encoder's output at that level (upstream has no projection): Sonata's head input
      # instead of probe.features='stages' (every level).
      config.probe.features = "projected"
  return config, params
