"""The training state pytree and the optimizer.

`TrainState` is everything a step reads and writes, so `train_step(state, batch, rng) -> (state, metrics)` is a
pure function and a checkpoint of the state is a complete resume point. The experiment config rides along as a
static (non-pytree) field: it is hashable (`FrozenConfigDict`), it fixes the compiled step, and it lets the step
evaluate its schedules and loss switches without a second argument.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dos_jax.models import network
from dos_jax.train import schedules

# Parameter names (path components) that never get weight decay, besides every 0-d/1-d leaf (biases, LayerNorm
# scales): prototypes live on the unit sphere (decay would only fight their normalisation) and the mask token is
# an input embedding, as in DINO/Sonata's param groups.
_NO_DECAY_NAMES = ("prototype", "mask_token", "norm")


@flax.struct.dataclass
class TrainState:
  """Everything the pure train step reads and writes.

  Attributes:
    step: i32[] number of steps taken (including skipped non-finite steps): the next batch's step index.
    params: the student's params pytree (`{'encoder': ..., 'head': ...}`, f32).
    teacher_params: the teacher's params, same structure; an EMA of `params`, never differentiated.
    opt_state: optax state of `make_optimizer(config)` for `params`.
    rng: u32[2] base PRNG key of the run (the loop derives per-step keys with `fold_in(rng, step)`).
    nonfinite_count: i32[] number of steps skipped because the loss or a gradient was not finite.
    config: the experiment config (static, hashable `FrozenConfigDict`; not a pytree leaf, not checkpointed).
  """

  step: jax.Array
  params: Any
  teacher_params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_count: jax.Array
  config: ml_collections.FrozenConfigDict = flax.struct.field(pytree_node=False)


def freeze_config(config) -> ml_collections.FrozenConfigDict:
  """A hashable copy of `config` (jit keys compiled steps on it)."""
  if isinstance(config, ml_collections.FrozenConfigDict):
    return config
  return ml_collections.FrozenConfigDict(config)


def decay_mask(params) -> Any:
  """Pytree of bools like `params`: True where AdamW applies weight decay.

  Decay applies to weight matrices/kernels (ndim >= 2) except prototypes and the mask token; never to biases,
  norm parameters or any other 1-d leaf.
  """

  def wants_decay(path, leaf) -> bool:
    names = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
    return jnp.ndim(leaf) >= 2 and not any(n in names for n in _NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(wants_decay, params)


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping (`optim.clip_norm`), then AdamW with scheduled learning rate and weight decay.

  `optax.inject_hyperparams` evaluates both schedules at the optimizer's own update count (so the opt state also
  records the values used, under `opt_state[1].hyperparams`). A step skipped by the non-finite guard keeps the old
  opt state, so its count (and the lr/wd schedules) lag `TrainState.step` by `nonfinite_count` steps.
  """
  clip = float(config.optim.clip_norm)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=schedules.learning_rate(config),
      weight_decay=schedules.weight_decay(config),
      b1=float(config.optim.b1), b2=float(config.optim.b2), mask=decay_mask)
  if clip > 0:
    return optax.chain(optax.clip_by_global_norm(clip), adamw)
  # clip_norm <= 0 disables clipping; an identity keeps the opt-state structure the same.
  return optax.chain(optax.identity(), adamw)


def create_train_state(config, rng: jax.Array, example_batch) -> TrainState:
  """A fresh state: student params from `network.init_params`, the teacher an exact copy, step 0.

  Traceable (no host side effects besides building the encoder module), so it can run under `jax.jit` with
  `out_shardings` or `jax.eval_shape` to get the abstract state for sharding and checkpoint restore.

  Args:
    config: experiment ConfigDict (or FrozenConfigDict).
    rng: PRNG key (u32[2]); split into the init key and the run's base key.
    example_batch: a `TrainBatch` (numpy or jax arrays; only shapes and dtypes matter) with leading [B, V].
  """
  config = freeze_config(config)
  init_rng, run_rng = jax.random.split(rng)
  params = network.init_params(init_rng, example_batch, config)
  # A separate copy: the teacher must not alias the student's buffers (the jitted step donates the state).
  teacher_params = jax.tree.map(jnp.copy, params)
  opt_state = make_optimizer(config).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, teacher_params=teacher_params,
                    opt_state=opt_state, rng=run_rng, nonfinite_count=jnp.zeros((), jnp.int32), config=config)
