"""Linear probing of frozen point features: a softmax-regression classifier trained with optax AdamW.

The probe is split so each piece is testable alone:
  * `fit_linear_probe(features, labels, ...)` -> params and `predict(params, features)`: pure linear algebra on
    per-point feature matrices (no encoder needed).
  * `extract_features(apply_fn, params, scenes, cfg)` runs a frozen encoder over scenes and maps the stage-0
    features back to every original point.
  * `train_supervised(config, scenes, steps)`: the same encoder + a linear head trained end to end with labels,
    the upper reference the probe is reported against ("% of supervised").

The classifier is affine in the raw features: it standardises them with the TRAINING set's mean/std (stored in the
params, so still a linear map) because encoder features of different stages have very different scales and AdamW
on raw features would need a per-run learning rate.
"""

from __future__ import annotations

import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dos_jax.errors import ConfigError, DataError

Params = Dict[str, jax.Array]


def class_weights(labels, num_classes: int, class_balanced: bool, ignore_index: int = -1) -> np.ndarray:
  """Per-class loss weights f32[C].

  Unbalanced: 1 for every class. Class-balanced: w_c = n / (C_present * n_c) for classes present in `labels`
  (0 for absent ones), so every present class carries the same total weight n / C_present and the average weight
  of a labelled point stays 1 (the learning rate means the same in both modes).

  Args:
    labels: int[M] training labels, `ignore_index` for unlabelled points.
    num_classes: C.
    class_balanced: weighting mode.
    ignore_index: label value that is not trained on.
  """
  labels = np.asarray(labels).reshape(-1)
  labels = labels[labels != ignore_index]
  if not class_balanced:
    return np.ones(num_classes, np.float32)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)[:num_classes]
  present = counts > 0
  w = np.zeros(num_classes, np.float64)
  w[present] = counts.sum() / (present.sum() * counts[present])
  return w.astype(np.float32)


def init_probe(features, num_classes: int, seed: int = 0) -> Params:
  """Probe params for features f32[M, D]: mean f32[D], inv_std f32[D], w f32[D, C] (small random), b f32[C]."""
  features = np.asarray(features, np.float32)
  mean = features.mean(0)
  std = features.std(0)
  inv_std = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0).astype(np.float32)
  d = features.shape[1]
  w = jax.random.normal(jax.random.PRNGKey(seed), (d, num_classes), jnp.float32) * (0.01 / np.sqrt(max(d, 1)))
  return {"mean": jnp.asarray(mean), "inv_std": jnp.asarray(inv_std), "w": w,
          "b": jnp.zeros((num_classes,), jnp.float32)}


def logits(params: Params, features) -> jax.Array:
  """f32[M, C] class scores for features f32[M, D]."""
  x = (jnp.asarray(features, jnp.float32) - params["mean"]) * params["inv_std"]
  return x @ params["w"] + params["b"]


def _loss(trainable, frozen, x, y, w_class):
  params = dict(frozen, **trainable)
  logp = jax.nn.log_softmax(logits(params, x))
  labelled = y >= 0
  y_safe = jnp.where(labelled, y, 0)
  nll = -jnp.take_along_axis(logp, y_safe[:, None], axis=1)[:, 0]
  w = jnp.where(labelled, w_class[y_safe], 0.0)
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)


@functools.partial(jax.jit, static_argnames=("tx", "batch_points"))
def _train_chunk(trainable, opt_state, frozen, feats, labels, w_class, key, start, num, *, tx, batch_points):
  """Runs `num` (traced) AdamW steps from step `start`; minibatches are uniform samples of `batch_points` rows."""

  def body(i, carry):
    trainable, opt_state, _ = carry
    if batch_points is None:
      x, y = feats, labels
    else:
      idx = jax.random.randint(jax.random.fold_in(key, start + i), (batch_points,), 0, feats.shape[0])
      x, y = feats[idx], labels[idx]
    loss, grads = jax.value_and_grad(_loss)(trainable, frozen, x, y, w_class)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  return jax.lax.fori_loop(0, num, body, (trainable, opt_state, jnp.zeros((), jnp.float32)))


def fit_linear_probe(features, labels, num_classes: int, steps: int = 300, lr: float = 1e-2,
                     class_balanced: bool = False, seed: int = 0, batch_points: Optional[int] = 65536,
                     weight_decay: float = 1e-4, ignore_index: int = -1, progress: bool = False,
                     chunk: int = 25) -> Params:
  """Trains a linear classifier on frozen features.

  Args:
    features: f32[M, D] per-point features.
    labels: i32[M] labels in [0, num_classes) or `ignore_index` (not trained on).
    num_classes: C.
    steps: AdamW steps (cosine-decayed learning rate).
    lr: peak learning rate.
    class_balanced: weight the cross-entropy by `class_weights(..., True)`.
    seed: PRNG seed (initial weights and minibatch sampling).
    batch_points: points per step, sampled uniformly with replacement; None or >= #labelled points = full batch.
    weight_decay: AdamW decoupled weight decay on w (not on the bias).
    ignore_index: label value that is not trained on.
    progress: show a tqdm bar.
    chunk: steps per compiled call (the progress bar advances per chunk).
  Returns:
    params for `predict` / `logits`.
  Raises:
    DataError: shapes disagree, no labelled point, or a label outside [0, C).
  """
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels).reshape(-1).astype(np.int32)
  if features.ndim != 2 or features.shape[0] != labels.shape[0]:
    raise DataError(f"linear probe: features {features.shape} and labels {labels.shape} do not match ([M, D], [M])")
  keep = labels != ignore_index
  features, labels = features[keep], labels[keep]
  if labels.size == 0:
    raise DataError("linear probe: no labelled point to train on (all labels are the ignore label)")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(f"linear probe: label {int(labels.max() if labels.max() >= num_classes else labels.min())} "
                    f"outside [0, {num_classes}): set config.probe.num_classes to cover the dataset's labels")
  if steps < 0 or lr <= 0:
    raise ConfigError(f"config.probe.steps={steps} / config.probe.lr={lr}: expected steps >= 0 and lr > 0")
  params = init_probe(features, num_classes, seed)
  w_class = jnp.asarray(class_weights(labels, num_classes, class_balanced))
  if batch_points is not None and batch_points >= labels.shape[0]:
    batch_points = None
  schedule = optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01)
  tx = optax.adamw(schedule, weight_decay=weight_decay, mask={"w": True, "b": False})
  trainable = {"w": params["w"], "b": params["b"]}
  frozen = {"mean": params["mean"], "inv_std": params["inv_std"]}
  opt_state = tx.init(trainable)
  feats, labs = jnp.asarray(features), jnp.asarray(labels)
  key = jax.random.PRNGKey(seed + 1)
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=steps, desc="linear probe", unit="step", leave=False)
  done = 0
  while done < steps:
    num = min(chunk, steps - done)
    trainable, opt_state, loss = _train_chunk(trainable, opt_state, frozen, feats, labs, w_class, key,
                                              jnp.int32(done), jnp.int32(num), tx=tx, batch_points=batch_points)
    done += num
    if bar is not None:
      bar.update(num)
      bar.set_postfix(loss=f"{float(loss):.4f}")
  if bar is not None:
    bar.close()
  return dict(frozen, **trainable)


@jax.jit
def _predict_chunk(params, x):
  return jnp.argmax(logits(params, x), axis=-1).astype(jnp.int32)


def predict(params: Params, features, chunk: int = 262144) -> np.ndarray:
  """i32[M] arg-max class of each feature row f32[M, D] (evaluated in chunks to bound memory)."""
  features = np.asarray(features, np.float32)
  out = [np.asarray(_predict_chunk(params, features[i:i + chunk])) for i in range(0, features.shape[0], chunk)]
  return np.concatenate(out) if out else np.zeros((0,), np.int32)
