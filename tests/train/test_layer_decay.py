"""Layer-wise learning-rate decay (Sonata's per-block param groups) and the one-cycle schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import specs
from dos_jax.models import network
from dos_jax.train import schedules
from dos_jax.train import state as state_lib
from tests import train as helpers

DEPTHS = (2, 3, 1)


def _params():
  """A params tree with the encoder's names (`encoder/enc{e}/block{b}/...`) and the non-block parameters; every
  leaf the same [2, 2] matrix of ones, so one AdamW update is the same for every leaf before the per-block lr."""
  leaf = lambda: {"kernel": jnp.ones((2, 2), jnp.float32)}  # noqa: E731
  encoder = {"embedding": {"stem": leaf()}, "upcast": {"proj": leaf()}}
  for e, depth in enumerate(DEPTHS):
    stage = {f"block{b}": {"attn": {"qkv": leaf()}, "mlp": {"fc1": leaf()}} for b in range(depth)}
    if e > 0:
      stage["down"] = {"proj": leaf()}
    encoder[f"enc{e}"] = stage
  return {"encoder": encoder, "head": {"mlp0": leaf()}}


def _sonata_block_lr(base_lr, lr_decay, e, b):
  """pretrain-sonata-v1m1-0-base.py: param_dicts[f'enc{e}.block{b}.'].lr."""
  return base_lr * lr_decay ** (sum(DEPTHS) - sum(DEPTHS[:e]) - b - 1)


def test_one_update_scales_each_block_by_the_decay_to_its_depth_distance():
  config = helpers.tiny_config()
  config.optim.update(layer_decay=0.9, clip_norm=0.0)
  tx = state_lib.make_optimizer(specs.step_spec(config))
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  base = np.asarray(updates["head"]["mlp0"]["kernel"], np.float64)     # not a block: the base rate
  assert np.all(base < 0)
  tol = 2 * np.finfo(np.float32).eps
  for e, depth in enumerate(DEPTHS):
    for b in range(depth):
      expected = _sonata_block_lr(1.0, 0.9, e, b)
      for part in ("attn", "mlp"):
        leaf = updates["encoder"][f"enc{e}"][f"block{b}"][part]
        got = np.asarray(leaf["qkv" if part == "attn" else "fc1"]["kernel"], np.float64) / base
        np.testing.assert_allclose(got, expected, rtol=tol, atol=0, err_msg=f"enc{e}/block{b}/{part}")
  # Everything outside the blocks learns at the base rate (Sonata's default param group).
  for path in (("embedding", "stem"), ("upcast", "proj"), ("enc1", "down", "proj"), ("enc2", "down", "proj")):
    node = updates["encoder"]
    for k in path:
      node = node[k]
    np.testing.assert_array_equal(np.asarray(node["kernel"]), base)
  # The last block is the base rate, the first 0.9 ** (blocks - 1).
  assert _sonata_block_lr(1.0, 0.9, 2, 0) == 1.0 and _sonata_block_lr(1.0, 0.9, 0, 0) == 0.9 ** 5


def test_layer_decay_one_is_the_plain_optimizer_and_the_real_encoder_names_match():
  config = helpers.tiny_config()
  config.optim.update(layer_decay=1.0)
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  tx = state_lib.make_optimizer(specs.step_spec(config))
  updates, _ = tx.update(grads, tx.init(params), params)
  leaves = jax.tree.leaves(updates)
  assert all(np.array_equal(np.asarray(x), np.asarray(leaves[0])) for x in leaves)
  # The encoder's own parameter tree (shapes only): every block's leaves get a factor < 1 but the last block's.
  batch = helpers.make_batch(config, 1)
  shapes = jax.eval_shape(lambda r: network.init_params(r, batch, specs.model_spec(config)), jax.random.PRNGKey(0))
  factors = state_lib.layer_lr_factors(shapes, 0.9)
  flat = {"/".join(str(k.key) for k in path): f for path, f in jax.tree_util.tree_flatten_with_path(factors)[0]}
  blocks = sorted({k.split("/")[1] + "/" + k.split("/")[2] for k in flat
                   if k.startswith("encoder/enc") and "/block" in k}, key=lambda s: (int(s[3]), int(s.split("block")[1])))
  assert len(blocks) >= 3
  for i, block in enumerate(blocks):
    values = [f for k, f in flat.items() if k.startswith(f"encoder/{block}/")]
    assert values and values == pytest.approx([0.9 ** (len(blocks) - 1 - i)] * len(values)), block
  assert all(f == 1.0 for k, f in flat.items() if "/block" not in k)


def test_onecycle_schedule_is_torchs_one_cycle_cos():
  c = helpers.tiny_config()
  c.total_steps = 1000
  c.optim.update(lr=4e-3, warmup_frac=0.05, div_factor=10.0, final_div_factor=1000.0, schedule="onecycle")
  f = schedules.learning_rate(c)
  # torch.optim.lr_scheduler.OneCycleLR(anneal_strategy='cos'): start max/div, peak max after pct_start of the
  # steps, end max/(div*final_div); both phases are half-cosines: v(t) = lo + (hi - lo) (1 + cos(pi t/T)) / 2 ...
  def cos_anneal(start, end, frac):
    return end + (start - end) * (1 + np.cos(np.pi * frac)) / 2
  np.testing.assert_allclose(float(f(0)), 4e-4, rtol=1e-6)
  np.testing.assert_allclose(float(f(25)), cos_anneal(4e-4, 4e-3, 0.5), rtol=1e-5)
  np.testing.assert_allclose(float(f(50)), 4e-3, rtol=1e-6)
  np.testing.assert_allclose(float(f(525)), cos_anneal(4e-3, 4e-7, 0.5), rtol=1e-4)
  np.testing.assert_allclose(float(f(1000)), 4e-7, rtol=1e-4)
  c.optim.schedule = "warmup_cosine"
  assert float(schedules.learning_rate(c)(0)) == 0.0
