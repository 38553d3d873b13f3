"""Checkpoints and workdir safety: round trips, keep-N, kill during a save, SIGTERM flag, config fingerprints."""

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import types

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import synthetic_tiny
from dos_jax import checkpoint
from dos_jax.errors import ConfigError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@flax.struct.dataclass
class _State:
  """A TrainState-shaped pytree (params, optax state, PRNG key, counters) for checkpoint mechanics only."""
  step: jax.Array
  params: dict
  opt_state: object
  rng: jax.Array


def _state(step: int, seed: int = 0) -> _State:
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  params = {"w": jax.random.normal(k1, (5, 3)), "b": jax.random.normal(k2, (3,))}
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  # One real update, so the moments are non-trivial and a restore that zeroed them would be caught.
  _, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  return _State(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state,
                rng=jax.random.PRNGKey(seed + 100))


def _assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.system
def test_save_restore_round_trip_and_keep_n(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, every=2)
  states = {s: _state(s, seed=s) for s in range(1, 6)}
  saved = [s for s in range(1, 6) if ckpt.maybe_save(s, states[s])]
  assert saved == [2, 4]
  assert ckpt.save(5, states[5]) and not ckpt.save(5, states[5])  # an explicit save; a second one is a no-op
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [4, 5] and ckpt.latest_step() == 5
  abstract = jax.eval_shape(lambda: states[5])
  _assert_trees_equal(ckpt.restore(abstract), states[5])
  _assert_trees_equal(ckpt.restore(abstract, step=4), states[4])
  ckpt.close()


def test_restore_places_arrays_on_the_requested_sharding(tmp_path):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("data",))
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = _state(3)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(3, state)
  ckpt.wait_until_finished()
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), jax.eval_shape(lambda: state))
  restored = ckpt.restore(abstract)
  _assert_trees_equal(restored, state)
  assert all(x.sharding == rep for x in jax.tree.leaves(restored))
  ckpt.close()


_KILL_CHILD = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from dos_jax import checkpoint
    ckpt = checkpoint.Checkpointer(sys.argv[1], keep=2, every=1)
    big = jnp.zeros((8 * 1024 * 1024,), jnp.float32)  # 32 MB: a save takes long enough to be interrupted
    for step in range(1, 1000):
      ckpt.save(step, {"w": big + step, "step": jnp.asarray(step)})
      print(f"issued {step}", flush=True)
      ckpt.wait_until_finished()
""")


@pytest.mark.system
def test_sigkill_during_save_never_leaves_a_visible_corrupt_checkpoint(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, workdir], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  for line in proc.stdout:
    if line.startswith("issued 3"):  # the async write of step 3 is in flight
      proc.kill()
      break
  proc.wait(timeout=60)
  ckpt_dir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  leftovers = [n for n in os.listdir(ckpt_dir) if not n.isdigit()]
  assert any("tmp" in n for n in leftovers), f"the kill should have interrupted a save: {os.listdir(ckpt_dir)}"

  ckpt = checkpoint.Checkpointer(workdir, keep=2)
  steps = ckpt.all_steps()
  assert steps and 3 not in steps and max(steps) == 2
  for step in steps:  # every visible checkpoint is complete and holds exactly what was saved
    abstract = {"w": jax.ShapeDtypeStruct((8 * 1024 * 1024,), jnp.float32),
                "step": jax.ShapeDtypeStruct((), jnp.int32)}
    restored = ckpt.restore(abstract, step)
    assert int(restored["step"]) == step and np.all(np.asarray(restored["w"]) == step)
  assert all(n.isdigit() for n in os.listdir(ckpt_dir)), "temporary directories are cleaned up on start"
  ckpt.close()


def test_preemption_flag_catches_sigterm_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  with checkpoint.PreemptionFlag() as flag:
    assert not flag.is_set()
    os.kill(os.getpid(), signal.SIGTERM)  # would kill pytest without the handler
    assert flag.is_set() and flag.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_first_ctrl_c_is_a_notice_and_a_second_quits_at_once():
  """SIGINT sets the flag (and says so through on_signal) like SIGTERM; it also puts back the OS default action, so
  a second Ctrl-C terminates the process at once, even inside a compile."""
  before = signal.getsignal(signal.SIGINT)
  said = []
  with checkpoint.PreemptionFlag((signal.SIGTERM, signal.SIGINT), on_signal=said.append) as flag:
    assert signal.getsignal(signal.SIGINT) not in (before, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)  # pytest's own handler would raise KeyboardInterrupt here
    assert flag.is_set() and flag.signum == signal.SIGINT and said == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the next one: the default action, termination
  assert signal.getsignal(signal.SIGINT) is before


# ------------------------------------------------------------------------------------------- workdir safety


def _config(**overrides):
  c = synthetic_tiny.get_config("smoke")
  c.update_from_flattened_dict(overrides)
  return c


def _fake_checkpoint(workdir):
  os.makedirs(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "3"))


def test_prepare_workdir_records_the_config_atomically(tmp_path):
  workdir = str(tmp_path / "run")
  checkpoint.prepare_workdir(workdir, _config())
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    stored = json.load(f)
  assert stored["fingerprint"] == checkpoint.config_fingerprint(_config())
  assert stored["config"]["zipf_alpha"] == 1.3 and stored["config"]["data"]["capacity"] == 1024
  assert sorted(os.listdir(workdir)) == [checkpoint.CONFIG_FILE]  # no temp or probe files left behind


def test_fingerprint_ignores_run_length_but_not_the_method():
  base = checkpoint.config_fingerprint(_config())
  assert checkpoint.config_fingerprint(_config(total_steps=500, log_every=7, checkpoint_every=9)) == base
  for key, value in [("zipf_alpha", 1.6), ("model.variant", "small"), ("data.grid_size", 0.05), ("seed", 1),
                     ("optim.lr", 1e-3), ("num_prototypes", 32)]:
    assert checkpoint.config_fingerprint(_config(**{key: value})) != base, key


def test_workdir_with_another_configs_checkpoints_is_refused(tmp_path):
  workdir = str(tmp_path)
  checkpoint.prepare_workdir(workdir, _config())
  _fake_checkpoint(workdir)
  with pytest.raises(ConfigError, match=r"different config.*zipf_alpha: 1\.3 -> 1\.6.*new --workdir"):
    checkpoint.prepare_workdir(workdir, _config(zipf_alpha=1.6))
  # The stored config is untouched by the refused run.
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    assert json.load(f)["config"]["zipf_alpha"] == 1.3
  # Extending the run (more steps, other logging) is fine and is recorded.
  checkpoint.prepare_workdir(workdir, _config(total_steps=12, log_every=1))
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    assert json.load(f)["config"]["total_steps"] == 12


def test_config_change_before_any_checkpoint_is_allowed(tmp_path):
  workdir = str(tmp_path)
  checkpoint.prepare_workdir(workdir, _config())
  checkpoint.prepare_workdir(workdir, _config(zipf_alpha=1.6))  # nothing to mix yet


def test_checkpoints_without_a_config_record_are_refused(tmp_path):
  _fake_checkpoint(str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds checkpoints but no config\.json"):
    checkpoint.prepare_workdir(str(tmp_path), _config())


def test_missing_parent_and_file_workdirs_are_refused(tmp_path):
  with pytest.raises(ConfigError, match=r"parent directory .*nope does not exist"):
    checkpoint.prepare_workdir(str(tmp_path / "nope" / "run"), _config())
  assert not (tmp_path / "nope").exists()
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ConfigError, match=r"exists and is not a directory"):
    checkpoint.prepare_workdir(str(tmp_path / "afile"), _config())
  with pytest.raises(ConfigError, match=r"--workdir is empty"):
    checkpoint.prepare_workdir("", _config())


def test_read_only_workdir_is_refused(tmp_path):
  if os.geteuid() == 0:
    # root ignores permission bits; sysfs refuses writes even to root.
    existing, missing = "/sys/kernel", "/sys/dos_jax_test_run"
  else:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    existing, missing = str(ro), str(ro / "run")
  with pytest.raises(ConfigError, match=r"is not writable"):
    checkpoint.prepare_workdir(existing, _config())
  with pytest.raises(ConfigError, match=r"cannot create it"):
    checkpoint.prepare_workdir(missing, _config())


# ------------------------------------------------------------------------------------------- damaged checkpoints


def _files(step_dir):
  return [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names]


def _truncate_data(step_dir):
  """A full disk / lost node: every array data file cut to half its length."""
  data = [f for f in _files(step_dir) if f"{os.sep}d{os.sep}" in f]
  assert data, _files(step_dir)
  for f in data:
    os.truncate(f, os.path.getsize(f) // 2)


def _delete_data(step_dir):
  import shutil  # pylint: disable=g-import-not-at-top
  dirs = [d for d, _, _ in os.walk(step_dir) if os.path.basename(d) == "d"]
  assert dirs
  for d in dirs:
    shutil.rmtree(d)


def _garble_metadata(step_dir):
  meta = [f for f in _files(step_dir) if os.path.basename(f) == "_METADATA"]
  assert meta
  for f in meta:
    with open(f, "w") as fh:
      fh.write("{not json")


def _saved(workdir, steps):
  ckpt = checkpoint.Checkpointer(workdir, keep=len(steps))
  states = {s: _state(s, seed=s) for s in steps}
  for s in steps:
    ckpt.save(s, states[s])
  ckpt.wait_until_finished()
  ckpt.close()
  return states


@pytest.mark.parametrize("damage", [_truncate_data, _delete_data, _garble_metadata])
def test_damaged_newest_checkpoint_is_skipped_and_kept_aside(tmp_path, damage, caplog):
  workdir = str(tmp_path)
  states = _saved(workdir, [1, 2, 3])
  damage(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "3"))
  ckpt = checkpoint.Checkpointer(workdir, keep=3)
  assert ckpt.latest_step() == 3
  step, restored = ckpt.restore_newest_intact(jax.eval_shape(lambda: states[3]))
  assert step == 2
  _assert_trees_equal(restored, states[2])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  (warning,) = [m for m in warnings if m.startswith("checkpoint step 3 ")]  # one line for the damaged step
  assert "cannot be restored (" in warning and "resuming from step 2" in warning, warning
  assert len(warning.splitlines()) == 1 and len(warning) < 800, warning
  # Kept aside (not deleted), out of orbax's sight, so the resumed run saves step 3 again.
  aside = os.path.join(workdir, checkpoint.DAMAGED_DIR, "3")
  assert os.path.isdir(aside) and _files(aside)
  assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
  assert ckpt.save(3, states[3])
  ckpt.wait_until_finished()
  _assert_trees_equal(ckpt.restore(jax.eval_shape(lambda: states[3]), 3), states[3])
  ckpt.close()


def test_no_intact_checkpoint_is_one_clear_error_and_nothing_moves(tmp_path):
  workdir = str(tmp_path)
  states = _saved(workdir, [1, 2])
  for s in (1, 2):
    _truncate_data(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(s)))
  ckpt = checkpoint.Checkpointer(workdir, keep=2)
  with pytest.raises(checkpoint.NoRestorableCheckpointError) as e:
    ckpt.restore_newest_intact(jax.eval_shape(lambda: states[2]))
  msg = str(e.value)
  assert "\n" not in msg and f"no checkpoint in {ckpt.directory} can be restored" in msg
  assert "step 2: " in msg and "step 1: " in msg and len(msg) < 1500
  assert ckpt.all_steps() == [1, 2] and not os.path.exists(os.path.join(workdir, checkpoint.DAMAGED_DIR))
  ckpt.close()


def test_a_checkpoint_holding_another_step_is_not_intact(tmp_path):
  workdir = str(tmp_path)
  ckpt = checkpoint.Checkpointer(workdir, keep=3)
  ckpt.save(1, _state(1))
  ckpt.save(2, _state(7))  # state.step=7 in directory 2: not what a resume at step 2 needs
  ckpt.wait_until_finished()
  step, restored = ckpt.restore_newest_intact(jax.eval_shape(lambda: _state(1)))
  assert step == 1 and int(restored.step) == 1
  ckpt.close()


def _leave_unretrieved_failure(coro_fn=None, future_error=None):
  """Leaves a failed task (running `coro_fn()`) or a future failed with `future_error` that nobody retrieves, then
  collects it (asyncio reports it from the object's finalizer)."""
  loop = asyncio.new_event_loop()
  try:
    if coro_fn is not None:
      failed = loop.create_task(coro_fn())
      loop.run_until_complete(asyncio.sleep(0.01))
    else:
      failed = loop.create_future()
      failed.set_exception(future_error)
    assert failed.done()
  finally:
    loop.close()
  del failed
  gc.collect()


def test_restore_noise_filter_drops_only_unretrieved_orbax_reads(caplog):
  """After a failed restore, orbax's sibling `async_deserialize` tasks and tensorstore's read futures die
  unretrieved; asyncio's reports of them are dropped (one error line is the whole report), while any other
  unretrieved task or future is still reported."""
  async def async_deserialize():  # the name orbax's coroutine has
    raise ValueError("OUT_OF_RANGE: truncated")

  async def some_other_task():
    raise ValueError("a real bug elsewhere")

  tensorstore_error = ValueError("OUT_OF_RANGE: Error opening \"zarr\" driver [tensorstore_spec='{}']")
  checkpoint._silence_closed_loop_callbacks()  # pylint: disable=protected-access
  with caplog.at_level("ERROR", logger="asyncio"):
    _leave_unretrieved_failure(async_deserialize)
    _leave_unretrieved_failure(future_error=tensorstore_error)
    assert not [r for r in caplog.records if r.name == "asyncio"]
    _leave_unretrieved_failure(some_other_task)
    _leave_unretrieved_failure(future_error=KeyError("another real bug"))
    reported = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(reported) == 2, reported
  assert reported[0].startswith("Task exception was never retrieved") and "some_other_task" in reported[0]
  assert reported[1].startswith("Future exception was never retrieved")


def test_restore_noise_filter_drops_only_closed_loop_errors():
  """The unraisable "Event loop is closed" of a read's late callback is dropped; other unraisable errors are not."""
  seen = []
  previous, sys.unraisablehook = sys.unraisablehook, lambda u: seen.append(u.exc_value)
  try:
    checkpoint._silence_closed_loop_callbacks()  # pylint: disable=protected-access
    hook = sys.unraisablehook
    for error in (RuntimeError("Event loop is closed"), RuntimeError("something else")):
      hook(types.SimpleNamespace(exc_value=error))
  finally:
    sys.unraisablehook = previous
  assert [str(e) for e in seen] == ["something else"]
