"""`python -m launch.features --workdir DIR`: a PCA picture of a dos_jax run's own encoder, read from the run's
config.json and orbax checkpoint without torch (upstream `.pth` files: tests/interop/test_features_launch.py)."""

import json
import sys

import jax
import pytest

from configs import synthetic_tiny
from dos_jax import checkpoint
from dos_jax import schema
from dos_jax import specs
from dos_jax.batching import pipeline
from dos_jax.batching import spec as batch_spec
from dos_jax.data import catalog
from dos_jax.models import encoder
from dos_jax.train import state as state_lib
from launch import features


def _run_folder(workdir):
  """What launch.train leaves: config.json and a checkpoint of a TrainState (here the initial one, saved as step
  1, so no train step needs compiling)."""
  config = synthetic_tiny.get_config("smoke")
  config.data.num_scenes, config.data.num_workers = 4, 0
  config = schema.validate(config)
  checkpoint.prepare_workdir(str(workdir), config, write=True)
  with pipeline.TrainIterator(batch_spec.pipeline_spec(config), catalog.scene_source(config.data, "train"),
                              start_step=0) as batches:
    batch = next(batches)
  state = state_lib.create_train_state(specs.step_spec(config), jax.random.PRNGKey(0), batch)
  ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
  ckpt.save(1, state)
  ckpt.close()
  return config


@pytest.mark.system
def test_features_of_a_workdir_without_torch(tmp_path, monkeypatch, capsys):
  config = _run_folder(tmp_path / "run")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as without torch
  assert features.main(["--workdir", str(tmp_path / "run")]) == 0
  summary = json.loads((tmp_path / "run" / "features.json").read_text())
  scene = catalog.scene_source(config.data, "val", seed=int(config.seed))[0]
  assert summary["step"] == 1 and summary["branch"] == "student"
  assert summary["points"] == scene.coord.shape[0]  # every original point of the run's first validation scene
  assert summary["width"] == encoder.output_dim(specs.model_spec(config))
  png = (tmp_path / "run" / "features.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
  # Not a run folder: one line, exit 2.
  assert features.main(["--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("ConfigError: ") and "config.json: not found" in err and "\n" not in err
