"""`python -m launch.probe` end to end: random-init encoder, 3 tiny Pointcept scenes, one subprocess; and the
refusal of a workdir without a checkpoint (in process)."""

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


@pytest.mark.system
def test_probe_cli_random_init(tmp_path):
  data = tmp_path / "data"
  _write_scenes(str(data))
  workdir = tmp_path / "run"
  workdir.mkdir()
  # A supervised baseline already probed in this workdir: the result reports its % of it.
  (workdir / "probe_supervised.json").write_text(json.dumps({"miou": 0.5}))
  cmd = [sys.executable, "-m", "launch.probe", "--config", "configs/synthetic_tiny.py:smoke",
         "--workdir", str(workdir), "--data", str(data), "--steps", "20", "--config.data.dataset=scannet",
         "--noplots", "--prototype=3", "--random-init"]
  proc = subprocess.run(cmd, cwd=conftest.ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = json.loads(proc.stdout.strip().splitlines()[-1])
  with open(workdir / "probe_random_init.json") as f:
    saved = json.load(f)
  assert saved == last and not (workdir / "probe.json").exists()
  assert 0.0 <= saved["miou"] <= 1.0
  assert saved["encoder"] == "random init" and saved["mode"] == "random_init"
  assert "encoder: random init;" in proc.stderr  # the console says it too
  assert saved["train_scenes"] == 2 and saved["eval_scenes"] == 1
  assert saved["num_classes"] == 20 and saved["num_points"] == 1500
  assert set(saved["per_class_iou"]) >= {"wall", "floor", "cabinet", "bed"}
  assert saved["relative"]["supervised_miou"] == 0.5
  assert saved["percent_of_supervised"] == pytest.approx(200.0 * saved["miou"], abs=0.01)  # top level (README)
  assert saved["collapse"]["num_prototypes"] == 64  # the smoke config's K, random-init head
  # Whole scenes reach the encoder (batches sized to their voxels): nothing dropped, and the file says so.
  assert saved["dropped"] == {"train_voxels": 0, "eval_voxels": 0, "eval_points": 0}
  assert (workdir / "probe_prototype3.png").stat().st_size > 1000  # one prototype's softmap, pictured
  # Bad input: a missing data folder is one clear error line and exit code 2.
  bad = subprocess.run(cmd[:7] + ["--random-init", "--data", str(tmp_path / "nope")], cwd=conftest.ROOT,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert "DataError" in bad.stderr and "nope" in bad.stderr
  # Without --random-init, this workdir (no checkpoint) is refused in one line.
  refused = subprocess.run(cmd[:7], cwd=conftest.ROOT, capture_output=True, text=True, timeout=120)
  assert refused.returncode == 2 and refused.stderr.startswith("ConfigError: ") and "--random-init" in refused.stderr
  assert len(refused.stderr.strip().splitlines()) == 1


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


def test_probe_of_a_workdir_without_checkpoint_is_refused(tmp_path):
  """Without --random-init, a workdir with nothing to probe stops before anything is read or written (a typo in
  --workdir must not yield a random-init probe.json that a summary would read as pretrained)."""
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  from dos_jax import schema  # pylint: disable=g-import-not-at-top
  from dos_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from dos_jax.eval import probe  # pylint: disable=g-import-not-at-top
  config = schema.validate(synthetic_tiny.get_config("smoke"))
  workdir = tmp_path / "dos_tiny"
  with pytest.raises(ConfigError, match=r"dos_tiny/checkpoints: no checkpoint to probe.*--random-init"):
    probe.run_probe(config, str(workdir))
  assert not workdir.exists()
  workdir.mkdir()
  (workdir / "checkpoints").mkdir()
  with pytest.raises(ConfigError, match="no checkpoint to probe"):
    probe.run_probe(config, str(workdir))
  assert os.listdir(workdir) == ["checkpoints"]
