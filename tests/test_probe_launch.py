"""`python -m launch.probe` end to end: random-init encoder, 3 tiny Pointcept scenes, one subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dos_jax.data import scene as scene_lib
from tests import conftest


def _write_scenes(root, num=3, n=1500):
  rng = np.random.default_rng(0)
  for i in range(num):
    coord = rng.uniform(0, 3, (n, 3)).astype(np.float32)
    # Labels from geometry (ScanNet-20 ids 0..3), so a probe on positional features can learn them.
    seg = ((coord[:, 0] > 1.5).astype(np.int32) + 2 * (coord[:, 2] > 1.0)).astype(np.int32)
    scene = scene_lib.Scene(coord=coord, color=rng.uniform(size=(n, 3)).astype(np.float32), segment=seg)
    scene_lib.save_scene(scene, os.path.join(root, f"scene000{i}_00"), segment_key="segment20")


def test_probe_cli_random_init(tmp_path):
  data = tmp_path / "data"
  _write_scenes(str(data))
  workdir = tmp_path / "run"
  workdir.mkdir()
  # A supervised baseline already probed in this workdir: the result reports its % of it.
  (workdir / "probe_supervised.json").write_text(json.dumps({"miou": 0.5}))
  cmd = [sys.executable, "-m", "launch.probe", "--config", "configs/synthetic_tiny.py:smoke",
         "--workdir", str(workdir), "--data", str(data), "--steps", "20", "--config.data.dataset=scannet",
         "--noplots", "--prototype=3"]
  proc = subprocess.run(cmd, cwd=conftest.ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = json.loads(proc.stdout.strip().splitlines()[-1])
  with open(workdir / "probe.json") as f:
    saved = json.load(f)
  assert saved == last
  assert 0.0 <= saved["miou"] <= 1.0
  assert saved["encoder"].startswith("random init")
  assert saved["train_scenes"] == 2 and saved["eval_scenes"] == 1
  assert saved["num_classes"] == 20 and saved["num_points"] == 1500
  assert set(saved["per_class_iou"]) >= {"wall", "floor", "cabinet", "bed"}
  assert saved["relative"]["supervised_miou"] == 0.5
  assert saved["relative"]["percent_of_supervised"] == pytest.approx(200.0 * saved["miou"], abs=0.01)
  assert saved["collapse"]["num_prototypes"] == 64  # the smoke config's K, random-init head
  # Whole scenes reach the encoder (batches sized to their voxels): nothing dropped, and the file says so.
  assert saved["dropped"] == {"train_voxels": 0, "eval_voxels": 0, "eval_points": 0}
  assert (workdir / "probe_prototype3.png").stat().st_size > 1000  # one prototype's softmap, pictured
  # Bad input: a missing data folder is one clear error line and exit code 2.
  bad = subprocess.run(cmd[:7] + ["--data", str(tmp_path / "nope")], cwd=conftest.ROOT, capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 2
  assert "DataError" in bad.stderr and "nope" in bad.stderr


def test_restore_params_from_train_checkpoint(tmp_path):
  # A TrainState-shaped pytree saved by the training loop's Checkpointer; the probe takes params/teacher_params.
  import flax.struct  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dos_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from dos_jax.eval import probe  # pylint: disable=g-import-not-at-top

  @flax.struct.dataclass
  class State:
    step: jnp.ndarray
    params: dict
    teacher_params: dict
    opt_state: tuple

  assert probe.restore_params(str(tmp_path)) == (None, None)  # no checkpoint -> random init
  params = {"encoder": {"stem": {"kernel": jnp.arange(6.0).reshape(2, 3)}}, "head": {"prototypes": jnp.ones((4, 2))}}
  teacher = {"encoder": {"stem": {"kernel": -jnp.arange(6.0).reshape(2, 3)}}, "head": {"prototypes": jnp.zeros((4, 2))}}
  state = State(step=jnp.int32(7), params=params, teacher_params=teacher, opt_state=optax.adamw(1e-3).init(params))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  ckpt.save(3, state)
  ckpt.save(7, state)
  ckpt.close()
  restored, step = probe.restore_params(str(tmp_path))
  assert step == 7
  np.testing.assert_array_equal(restored["encoder"]["stem"]["kernel"], params["encoder"]["stem"]["kernel"])
  restored, _ = probe.restore_params(str(tmp_path), use_teacher=True)
  np.testing.assert_array_equal(restored["encoder"]["stem"]["kernel"], teacher["encoder"]["stem"]["kernel"])
