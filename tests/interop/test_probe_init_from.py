"""`launch.probe --init-from PATH` (`dos_jax.interop.probe_init.init_from` + `run_probe`): the linear probe runs on the
encoder of an upstream checkpoint (architecture, input width and weights from the file), on the smoke config's
synthetic rooms."""

import importlib

import numpy as np
import pytest

from dos_jax.eval import probe as probe_lib
from dos_jax.interop import probe_init
from tests.interop import upstream

pytestmark = pytest.mark.system


def test_probe_init_from_upstream_checkpoint(tmp_path):
  torch = upstream.modules()[0]
  model = upstream.build("PT-v3m2", (8, 16, 16), (1, 1, 1), (1, 2, 2), 64, seed=3)
  path = str(tmp_path / "sonata_like.pth")
  torch.save({"state_dict": {f"module.teacher.backbone.{k}": v for k, v in upstream.state_dict(model).items()}},
             path)
  config = importlib.import_module("configs.synthetic_tiny").get_config("smoke")
  config, params = probe_init.init_from(config, path, teacher=True, up_cast_level=1, enc_num_head=(1, 2, 2),
                                        enc_patch_size=64)
  assert config.model.enc_channels == (8, 16, 16) and tuple(config.data.feat_keys) == ("coord", "color")
  np.testing.assert_array_equal(params["enc2"]["block0"]["norm1"]["scale"],
                                model.state_dict()["enc.enc2.block0.norm1.0.weight"].numpy())
  result = probe_lib.run_probe(config, str(tmp_path / "run"), steps=5, max_train_scenes=2, max_eval_scenes=1,
                               plots=False, encoder_params=params, encoder_source=f"pointcept checkpoint {path}")
  assert result["encoder"].startswith("pointcept checkpoint") and 0.0 <= result["miou"] <= 1.0
