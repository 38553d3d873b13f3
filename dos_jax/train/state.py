"""The training state pytree and the optimizer.

`TrainState` is everything a step reads and writes (arrays only), so `train_step(state, batch, rng, spec=spec)`
is a pure function and a checkpoint of the state is a complete resume point. What the step computes with (loss
switches, schedules, optimizer, model) is the `dos_jax.specs.StepSpec` the step is jitted with, not part of the
state: the state carries no config.
"""

from __future__ import annotations

import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dos_jax import specs
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
    opt_state: optax state of `make_optimizer(spec)` for `params`.
    rng: u32[2] base PRNG key of the run (the loop derives per-step keys with `fold_in(rng, step)`).
    nonfinite_count: i32[] number of steps skipped because the loss or a gradient was not finite.
  """

  step: jax.Array
  params: Any
  teacher_params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_count: jax.Array


def decay_mask(params) -> Any:
  """Pytree of bools like `params`: True where AdamW applies weight decay.

  Decay applies to weight matrices/kernels (ndim >= 2) except prototypes and the mask token; never to biases,
  norm parameters or any other 1-d leaf.
  """

  def wants_decay(path, leaf) -> bool:
    names = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
    return jnp.ndim(leaf) >= 2 and not any(n in names for n in _NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(wants_decay, params)


_BLOCK = re.compile(r"^enc(\d+)/block(\d+)(/|$)")


def layer_lr_factors(params, layer_decay: float) -> Any:
  """Pytree of Python floats like `params`: each leaf's learning-rate multiplier under layer-wise decay.

  As Sonata's param groups (pretrain-sonata-v1m1-0-base.py): the parameters of encoder block b of stage e get
  layer_decay ** (sum(depths) - sum(depths[:e]) - b - 1), i.e. the last block of the last stage 1 and each block
  below it one more factor; every other parameter (embedding, pooling layers, up-cast projection, projector,
  prototypes) the base rate. The depths are read from the params' `encoder/enc{e}/block{b}` names.
  """
  blocks = []  # (stage, block) of every encoder block, in depth order
  for stage_name, stage in params.get("encoder", {}).items():
    for block_name in stage if isinstance(stage, dict) else ():
      match = _BLOCK.match(f"{stage_name}/{block_name}")
      if match:
        blocks.append((int(match.group(1)), int(match.group(2))))
  rank = {b: i for i, b in enumerate(sorted(blocks))}
  total = len(blocks)

  def factor(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if len(names) > 2 and names[0] == "encoder":
      match = _BLOCK.match("/".join(names[1:3]))
      if match:
        return float(layer_decay) ** (total - rank[(int(match.group(1)), int(match.group(2)))] - 1)
    return 1.0

  return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_layer_decay(layer_decay: float) -> optax.GradientTransformation:
  """Multiplies each update by its `layer_lr_factors` multiplier: after AdamW (whose update is already
  -lr * (adam direction + weight_decay * param)), this is exactly a per-block learning rate, weight decay included,
  as torch's per-group lr. layer_decay = 1: the identity."""
  if float(layer_decay) == 1.0:
    return optax.identity()

  def scale(updates, params):
    del params
    return jax.tree.map(lambda u, f: u * f, updates, layer_lr_factors(updates, layer_decay))

  return optax.stateless(scale)


def make_optimizer(spec: specs.StepSpec) -> optax.GradientTransformation:
  """Global-norm clipping (`optim.clip_norm`), AdamW with scheduled learning rate and weight decay, then the
  layer-wise learning-rate decay (`optim.layer_decay`, `scale_by_layer_decay`).

  `optax.inject_hyperparams` evaluates both schedules at the optimizer's own update count (so the opt state also
  records the values used, under `opt_state[1].hyperparams`: the base rate). A step skipped by the non-finite
  guard keeps the old opt state, so its count (and the lr/wd schedules) lag `TrainState.step` by
  `nonfinite_count` steps.
  """
  clip = float(spec.optim.clip_norm)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=schedules.learning_rate(spec),
      weight_decay=schedules.weight_decay(spec),
      b1=float(spec.optim.b1), b2=float(spec.optim.b2), mask=decay_mask)
  # clip_norm <= 0 disables clipping; an identity keeps the opt-state structure the same.
  first = optax.clip_by_global_norm(clip) if clip > 0 else optax.identity()
  return optax.chain(first, adamw, scale_by_layer_decay(spec.optim.layer_decay))


def create_train_state(spec: specs.StepSpec, rng: jax.Array, example_batch) -> TrainState:
  """A fresh state: student params from `network.init_params`, the teacher an exact copy, step 0.

  Traceable (no host side effects besides building the encoder module), so it can run under `jax.jit` with
  `out_shardings` or `jax.eval_shape` to get the abstract state for sharding and checkpoint restore.

  Args:
    spec: the StepSpec (its model and optimizer).
    rng: PRNG key (u32[2]); split into the init key and the run's base key.
    example_batch: a `TrainBatch` (numpy or jax arrays; only shapes and dtypes matter) with leading [B, V].
  """
  init_rng, run_rng = jax.random.split(rng)
  params = network.init_params(init_rng, example_batch, spec.model)
  # A separate copy: the teacher must not alias the student's buffers (the jitted step donates the state).
  teacher_params = jax.tree.map(jnp.copy, params)
  opt_state = make_optimizer(spec).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, teacher_params=teacher_params,
                    opt_state=opt_state, rng=run_rng, nonfinite_count=jnp.zeros((), jnp.int32))
