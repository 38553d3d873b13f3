"""Linear probing of frozen point features: a softmax-regression classifier trained with optax AdamW.

The probe is split so each piece is testable alone:
  * `fit_linear_probe(features, labels, ...)` -> params and `predict(params, features)`: pure linear algebra on
    per-point feature matrices (no encoder needed).
  * `extract_features(apply_fn, params, scenes, batch_spec)` runs a frozen encoder over scenes and maps the
    stage-0 features back to every original point.
  * `train_supervised(model_spec, batch_spec, scenes, steps, num_classes, batch_size=, lr=, ...)`: the same encoder
    + a linear head trained end to end with labels, the upper reference the probe is reported against
    ("% of supervised").

They take decoded specs (`dos_jax.specs.model_spec(config)`, `dos_jax.batching.spec.batch_spec(config)`) and
explicit optimisation arguments, not the experiment config: `dos_jax.eval.probe.run_probe` decodes them once.

The classifier is affine in the raw features. By default it standardises them with the TRAINING set's mean/std
(stored in the params, so still a linear map): encoder features of different stages have very different scales, and
a few hundred AdamW steps on raw features would need a per-run learning rate (Sonata's probe, a plain nn.Linear,
trains for ~800 epochs instead). `standardize=False` is the plain layer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from dos_jax.batching import eval_batch
from dos_jax.batching.spec import BatchSpec
from dos_jax.errors import DataError
from dos_jax.models import encoder
from dos_jax.models.spec import ModelSpec

ProbeParams = Dict[str, jax.Array]


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


def init_probe(features, num_classes: int, seed: int = 0, standardize: bool = True) -> ProbeParams:
  """Probe params for features f32[M, D]: mean f32[D], inv_std f32[D], w f32[D, C] (small random), b f32[C].

  standardize=False: mean 0 and inv_std 1, i.e. the plain `x @ w + b` of Sonata's probe (nn.Linear)."""
  features = np.asarray(features, np.float32)
  if standardize:
    mean = features.mean(0)
    std = features.std(0)
    inv_std = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0).astype(np.float32)
  else:
    mean = np.zeros(features.shape[1], np.float32)
    inv_std = np.ones(features.shape[1], np.float32)
  d = features.shape[1]
  w = jax.random.normal(jax.random.PRNGKey(seed), (d, num_classes), jnp.float32) * (0.01 / np.sqrt(max(d, 1)))
  return {"mean": jnp.asarray(mean), "inv_std": jnp.asarray(inv_std), "w": w,
          "b": jnp.zeros((num_classes,), jnp.float32)}


def logits(params: ProbeParams, features) -> jax.Array:
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


PROBE_SCHEDULES = ("onecycle", "cosine")


def probe_schedule(name: str, lr: float, steps: int) -> optax.Schedule:
  """The probe's learning rate over its `steps`: 'onecycle' (Sonata's linear probe: torch OneCycleLR, cos,
  pct_start 0.05, div_factor 10, final_div_factor 1000, compressed to the probe's steps) or 'cosine' (the earlier
  probe: cosine decay from lr to lr / 100, no warm-up)."""
  if name == "onecycle":
    return optax.cosine_onecycle_schedule(max(steps, 1), lr, pct_start=0.05, div_factor=10.0, final_div_factor=1000.0)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01)
  raise ValueError(f"schedule={name!r}: expected one of {PROBE_SCHEDULES}")


@functools.lru_cache(maxsize=16)
def _probe_tx(schedule: str, lr: float, steps: int, weight_decay: float) -> optax.GradientTransformation:
  """AdamW of the probe (decay on w only). Cached: `_train_chunk` is jitted with the transformation as a static
  argument, so an equal one must be the same object for repeated probes to reuse the compilation."""
  return optax.adamw(probe_schedule(schedule, lr, steps), weight_decay=weight_decay, mask={"w": True, "b": False})


def fit_linear_probe(features, labels, num_classes: int, steps: int = 300, lr: float = 1e-2,
                     class_balanced: bool = False, seed: int = 0, batch_points: Optional[int] = 65536,
                     weight_decay: float = 1e-4, ignore_index: int = -1, progress: bool = False,
                     chunk: int = 25, schedule: str = "cosine", standardize: bool = True) -> ProbeParams:
  """Trains a linear classifier on frozen features.

  Args:
    features: f32[M, D] per-point features.
    labels: i32[M] labels in [0, num_classes) or `ignore_index` (not trained on).
    num_classes: C.
    steps: AdamW steps.
    lr: peak learning rate.
    class_balanced: weight the cross-entropy by `class_weights(..., True)`.
    seed: PRNG seed (initial weights and minibatch sampling).
    batch_points: points per step, sampled uniformly with replacement; None or >= #labelled points = full batch.
    weight_decay: AdamW decoupled weight decay on w (not on the bias).
    ignore_index: label value that is not trained on.
    progress: show a tqdm bar.
    chunk: steps per compiled call (the progress bar advances per chunk).
    schedule: the learning rate over the steps (`probe_schedule`: 'onecycle' | 'cosine').
    standardize: scale the features by the training set's mean / std inside the (still affine) classifier.
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
    raise ValueError(f"steps={steps} / lr={lr}: expected steps >= 0 and lr > 0")
  params = init_probe(features, num_classes, seed, standardize)
  w_class = jnp.asarray(class_weights(labels, num_classes, class_balanced))
  if batch_points is not None and batch_points >= labels.shape[0]:
    batch_points = None
  tx = _probe_tx(schedule, float(lr), int(steps), float(weight_decay))
  trainable = {"w": params["w"], "b": params["b"]}
  frozen = {"mean": params["mean"], "inv_std": params["inv_std"]}
  opt_state = tx.init(trainable)
  feats, labs = jnp.asarray(features), jnp.asarray(labels)
  key = jax.random.PRNGKey(seed + 1)
  bar = tqdm.tqdm(total=steps, desc="linear probe", unit="step", leave=False) if progress else None
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


def predict(params: ProbeParams, features, chunk: int = 262144) -> np.ndarray:
  """i32[M] arg-max class of each feature row f32[M, D] (evaluated in chunks to bound memory)."""
  features = np.asarray(features, np.float32)
  out = [np.asarray(_predict_chunk(params, features[i:i + chunk])) for i in range(0, features.shape[0], chunk)]
  return np.concatenate(out) if out else np.zeros((0,), np.int32)


# --------------------------------------------------------------------------------------- frozen-encoder features


@dataclasses.dataclass
class Features:
  """Frozen-encoder features of a list of scenes.

  Attributes:
    features: f32[M, D] feature of every ORIGINAL point (its stage-0 voxel representative's feature), scenes
      concatenated in order.
    labels: i32[M] label of every original point (-1 = ignore / unlabelled scene).
    offsets: i64[S + 1] scene s owns rows offsets[s]:offsets[s+1].
    stage0: per scene f32[m_s, D] features of the real stage-0 points (one per voxel), for prototype metrics.
    stage0_labels: per scene i32[m_s] labels of those points.
    coords: per scene f32[n_s, 3] original coordinates (for renders).
    dropped_voxels, dropped_points: voxels left out of the encoder's input (and original points that took a
      neighbour's feature because of it), summed over scenes; 0 unless a fixed `capacity` was too small.
  """

  features: np.ndarray
  labels: np.ndarray
  offsets: np.ndarray
  stage0: List[np.ndarray]
  stage0_labels: List[np.ndarray]
  coords: List[np.ndarray]
  dropped_voxels: int = 0
  dropped_points: int = 0


def _scene_batches(scenes: Sequence, batch_size: int):
  """Groups of `batch_size` scenes; the last group is padded by repeating its last scene (fixed shapes)."""
  for start in range(0, len(scenes), batch_size):
    group = list(scenes[start:start + batch_size])
    real = len(group)
    group += [group[-1]] * (batch_size - real)
    yield group, real


def extract_features(apply_fn: Callable, params: Any, scenes: Sequence, batch_spec: BatchSpec, batch_size: int = 2,
                     capacity: Optional[int] = None, progress: bool = False, map_to_points: bool = True) -> Features:
  """Runs a frozen encoder over `scenes` and maps its stage-0 features back to every original point.

  Args:
    apply_fn: (params, points: batched PointSet) -> f32[B, N_0, D] (e.g. encoder.apply with train=False and the
      ModelSpec bound); jitted here unless it already is.
    params: encoder params.
    scenes: list of `Scene` (segment may be None: labels are then -1).
    batch_spec: the batching (grid, feature keys, stage layout of the encoder; `batching.spec.batch_spec`).
    batch_size: scenes per encoder call.
    capacity: None (default): every batch is sized to hold every voxel of its scenes (`make_labeled_batch`
      capacity='fit'; a few power-of-two shapes, one compile each), so the encoder sees whole scenes at the
      density it was trained at. An int fixes the stage-0 capacity: larger scenes then keep a deterministic voxel
      subset, dropped voxels map to their nearest kept point, and `dropped_*` count them.
    progress: tqdm bar over scenes.
    map_to_points: False keeps `features`/`labels`/`offsets` at the stage-0 points (one per voxel, as Pointcept
      trains on grid-sampled points): much smaller, used for the probe's training set; `coords` is then empty.
  """
  # Reuse a caller's jitted function across calls (train and eval scenes share one compilation).
  fn = apply_fn if hasattr(apply_fn, "lower") else jax.jit(apply_fn)
  feats, labels, offsets, stage0, stage0_labels, coords = [], [], [0], [], [], []
  report = {}
  bar = _bar(progress, len(scenes), "features")
  for group, real in _scene_batches(scenes, batch_size):
    batch, inverses = eval_batch.make_labeled_batch(group, batch_spec, capacity=capacity or "fit", report=report)
    out = np.asarray(fn(params, batch.points), np.float32)
    valid = np.asarray(batch.points.valid)
    for b in range(real):
      scene = group[b]
      stage0.append(out[b][valid[b]])
      stage0_labels.append(np.asarray(batch.segment[b], np.int32)[valid[b]])
      if map_to_points:
        feats.append(out[b][inverses[b]])
        n = scene.num_points
        labels.append(np.full(n, -1, np.int32) if scene.segment is None else np.asarray(scene.segment, np.int32))
        coords.append(np.asarray(scene.coord, np.float32))
      else:
        feats.append(stage0[-1])
        labels.append(stage0_labels[-1])
      offsets.append(offsets[-1] + feats[-1].shape[0])
    if bar is not None:
      bar.update(real)
  if bar is not None:
    bar.close()
  if not feats:
    raise DataError("extract_features: no scenes given")
  return Features(np.concatenate(feats), np.concatenate(labels), np.asarray(offsets, np.int64), stage0,
                  stage0_labels, coords, int(report.get("dropped_voxels", 0)),
                  int(report.get("dropped_points", 0)))


def _bar(progress: bool, total: int, desc: str):
  if not progress:
    return None
  return tqdm.tqdm(total=total, desc=desc, unit="scene" if desc == "features" else "step", leave=False)


# --------------------------------------------------------------------------------------- supervised baseline


def train_supervised(model_spec: ModelSpec, batch_spec: BatchSpec, scenes: Sequence, steps: int, num_classes: int,
                     *, batch_size: int, lr: float, weight_decay: float, clip_norm: float, seed: int = 0,
                     capacity: Optional[int] = None, progress: bool = False) -> Dict[str, Any]:
  """The supervised reference: the same encoder + a linear head trained end to end with cross-entropy.

  Each step takes `batch_size` scenes (a seeded epoch permutation; at most the number of scenes), one unaugmented
  view each, and trains on the labelled stage-0 points: AdamW with peak learning rate `lr` (linear warm-up over
  steps // 20, cosine decay to lr / 100), decoupled `weight_decay`, gradients clipped to global norm `clip_norm`.
  (`run_probe` passes config.batch_size, config.optim.lr, config.optim.weight_decay_start, config.optim.clip_norm.)

  Args:
    model_spec: the encoder (`dos_jax.specs.model_spec`; its head fields are not used), or anything else the
      encoder builds from (`run_probe` passes config.model until a ModelSpec carries upstream architectures).
    batch_spec: the batching (`dos_jax.batching.spec.batch_spec`).
    scenes: labelled `Scene`s.
    steps: optimiser steps.
    num_classes: C; every label must be < C.
    batch_size, lr, weight_decay, clip_norm: the optimisation (see above).
    seed: PRNG seed (initial params, drop path, scene order).
    capacity: fixed stage-0 capacity per scene (None: sized to the scene's voxels).
    progress: tqdm bar over steps.
  Returns:
    params {'encoder': ..., 'linear': {'w': f32[D, C], 'b': f32[C]}}; `supervised_logits` applies them.
  Raises:
    DataError: no scene, or a label >= num_classes.
  """
  if not scenes:
    raise DataError("train_supervised: no training scenes")
  batch_size = max(1, min(int(batch_size), len(scenes)))
  # Views are unaugmented, so each scene's padded point set is built once.
  cached = [eval_batch.make_labeled_batch([s], batch_spec, capacity=capacity)[0] for s in scenes]
  for b in cached:
    seg = np.asarray(b.segment)
    if seg.max() >= num_classes:
      raise DataError(f"train_supervised: label {int(seg.max())} >= num_classes={num_classes}; set "
                      "config.probe.num_classes")

  def stack(idx):
    return jax.tree.map(lambda *xs: np.concatenate(xs), *[cached[i] for i in idx])

  rng = jax.random.PRNGKey(seed)
  first = stack(range(batch_size))
  enc_params = encoder.init(rng, first.points, model_spec)
  dim = encoder.output_dim(model_spec)
  w = jax.random.normal(jax.random.fold_in(rng, 1), (dim, num_classes), jnp.float32) / np.sqrt(dim)
  params = {"encoder": enc_params, "linear": {"w": w, "b": jnp.zeros((num_classes,), jnp.float32)}}
  lr = float(lr)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), max(steps, 2), lr * 0.01)
  tx = optax.chain(optax.clip_by_global_norm(float(clip_norm)), optax.adamw(schedule, weight_decay=float(weight_decay)))
  opt_state = tx.init(params)

  def loss_fn(p, batch, key):
    logit = supervised_logits(p, batch.points, model_spec, train=True, rng=key)
    y = batch.segment
    ok = (y >= 0) & batch.points.valid
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logit), jnp.where(ok, y, 0)[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(ok, nll, 0.0)) / jnp.maximum(ok.sum(), 1)

  @jax.jit
  def step(p, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, batch, key)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  order = np.random.default_rng(seed)
  perm, pos = order.permutation(len(scenes)), 0
  bar = _bar(progress, steps, "supervised")
  for t in range(steps):
    idx = []
    for _ in range(batch_size):
      if pos == len(perm):
        perm, pos = order.permutation(len(scenes)), 0
      idx.append(int(perm[pos]))
      pos += 1
    params, opt_state, loss = step(params, opt_state, stack(idx), jax.random.fold_in(rng, t + 2))
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f"{float(loss):.4f}")
  if bar is not None:
    bar.close()
  return params


def supervised_logits(params, points, model_spec: ModelSpec, train: bool = False, rng=None) -> jax.Array:
  """f32[B, N_0, C] class scores of the supervised model (`train_supervised`'s params) on a batched PointSet."""
  feat = encoder.apply(params["encoder"], points, train=train, rng=rng, spec=model_spec)
  return feat @ params["linear"]["w"] + params["linear"]["b"]
