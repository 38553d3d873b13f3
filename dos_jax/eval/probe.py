"""The linear probe as a library: `run_probe(config, workdir, ...)` is what `python -m launch.probe` calls.

Restores the encoder from the latest checkpoint in DIR/checkpoints (the student's params; `use_teacher` for the
EMA teacher's) and refuses a workdir without one (ConfigError), or probes a random-init encoder when asked to
(mode 'random_init': DIR/probe_random_init.json, `"encoder": "random init"`), or takes encoder params handed in
(`encoder_params`, e.g. loaded from an upstream checkpoint). Extracts frozen per-point features of every voxel,
fits a linear classifier (AdamW, config.probe.*), and evaluates it by mIoU on held-out scenes; writes the result
dict atomically to DIR/probe.json (see OUT_NAMES for the other modes) and figures beside it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from dos_jax import checkpoint
from dos_jax import io as fileio
from dos_jax import specs
from dos_jax.batching import eval_batch
from dos_jax.batching import spec as spec_lib
from dos_jax.batching.spec import BatchSpec
from dos_jax.data import catalog
from dos_jax.data import sources
from dos_jax.errors import ConfigError, DataError
from dos_jax.eval import collapse
from dos_jax.eval import linear_probe
from dos_jax.eval import miou
from dos_jax.eval import splits
from dos_jax.models import encoder
from dos_jax.models import heads
from dos_jax.models.spec import ModelSpec

OUT_NAMES = {"probe": "probe.json", "random_init": "probe_random_init.json", "supervised": "probe_supervised.json"}
_SEGMENT_KEYS = {"scannet": "segment20", "scannet200": "segment200"}


# ----------------------------------------------------------------------------------------------- scenes


def _load_all(source) -> List[Any]:
  return [source[i] for i in range(len(source))]


def probe_scenes(config, data: Optional[str], eval_data: Optional[str], max_train: Optional[int] = None,
                 max_eval: Optional[int] = None):
  """(probe-training scenes, evaluation scenes, class names, groups, description) for a probe run.

  `data`/`eval_data` are Pointcept folders read with the dataset's label file (config.data.dataset); without
  `eval_data` the room-level split `sources.split_scenes(names, config.probe.train_fraction, seed=0)` is used (seed
  fixed so that every encoder of a comparison is probed on the same scenes). Without `data`, the config's source
  splits 'train' and 'val'.
  """
  dataset = config.data.dataset
  segment_key = config.data.segment_key
  if data:
    source = sources.pointcept_source(data, "all", dataset, segment_key)
    if eval_data:
      train = _load_all(source) if max_train is None else [source[i] for i in range(min(max_train, len(source)))]
      eval_source = sources.pointcept_source(eval_data, "all", dataset, segment_key)
      evals = _load_all(eval_source)
      desc = f"{data} (train) / {eval_data} (eval)"
    else:
      train_idx, eval_idx = sources.split_scenes([str(x) for x in source.items],
                                                 float(config.probe.train_fraction), seed=0)
      train = [source[i] for i in train_idx[:max_train]]
      evals = [source[i] for i in eval_idx]
      desc = f"{data} (room-level split {len(train_idx)}/{len(eval_idx)})"
  else:
    if eval_data:
      raise ConfigError("--eval-data needs --data (the probe-training scenes)")
    source = catalog.scene_source(config.data, "train", seed=int(config.seed))
    eval_source = catalog.scene_source(config.data, "val", seed=int(config.seed))
    train = [source[i] for i in range(len(source) if max_train is None else min(max_train, len(source)))]
    evals = [eval_source[i] for i in range(len(eval_source))]
    desc = f"{source.name} / {eval_source.name}"
  evals = evals[:max_eval] if max_eval else evals
  names = source.class_names or splits.class_names(dataset, source.num_classes or int(config.probe.num_classes),
                                                   config.data.kind)
  groups = source.groups or splits.class_groups(dataset, config.data.kind)
  return train, evals, tuple(names), dict(groups), desc


# ----------------------------------------------------------------------------------------------- encoder params


def restore_params(workdir: str, use_teacher: bool = False) -> Tuple[Optional[Dict[str, Any]], Optional[int]]:
  """({'encoder': ..., 'head': ...}, step) from the latest checkpoint in DIR/checkpoints, or (None, None).

  Reads through `dos_jax.checkpoint.Checkpointer` (the trainer's own orbax wrapper) without an abstract
  target: the saved TrainState comes back as nested dicts, and the student's `params` (or `teacher_params`) are
  taken from it.
  """
  ckpt_dir = os.path.join(os.path.abspath(workdir), checkpoint.CHECKPOINT_DIR)
  if not os.path.isdir(ckpt_dir) or not any(n.isdigit() for n in os.listdir(ckpt_dir)):
    return None, None
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      return None, None
    tree = ckpt.restore(None, step)
  finally:
    ckpt.close()
  key = "teacher_params" if use_teacher else "params"
  tree = tree.get("default", tree) if isinstance(tree, dict) else tree
  params = tree.get(key) if isinstance(tree, dict) else getattr(tree, key, None)
  if params is None or "encoder" not in params:
    raise DataError(f"{ckpt_dir}/{step}: checkpoint has no {key}/encoder subtree")
  return params, int(step)


# ----------------------------------------------------------------------------------------------- the probe


@functools.lru_cache(maxsize=8)
def _eval_apply(model_spec: ModelSpec):
  """The jitted eval-mode encoder of a spec, one per spec: repeated probes in one process (the in-training
  evaluators) reuse its compilations instead of tracing a fresh function each time."""
  return jax.jit(functools.partial(encoder.apply, train=False, spec=model_spec))


def _head(model_spec: ModelSpec) -> heads.DOSHead:
  return heads.DOSHead(hidden_dim=model_spec.head_hidden, out_dim=model_spec.head_dim,
                       num_prototypes=model_spec.num_prototypes)


def _head_scores(model_spec: ModelSpec, student_temp: float, head_params,
                 feats: List[np.ndarray]) -> List[np.ndarray]:
  """Prototype logits cos/tau_S f32[m, K] of each scene's stage-0 features f32[m, D] (for the collapse metrics).

  `model_spec` gives the head's widths and K (head_hidden, head_dim, num_prototypes); `student_temp` is tau_S.
  """
  fn = _head_fn(model_spec, float(student_temp))
  return [np.asarray(fn(head_params, f)) for f in feats]


@functools.lru_cache(maxsize=8)
def _head_fn(model_spec: ModelSpec, student_temp: float):
  head = _head(model_spec)
  return jax.jit(lambda p, x: head.apply({"params": p}, x) / student_temp)


def _init_head(model_spec: ModelSpec, feat_dim: int, seed: int):
  """Random-init head params for encoder features of width `feat_dim` (the collapse metrics of a random init)."""
  feat = jnp.zeros((1, feat_dim), jnp.float32)
  return _head(model_spec).init({"params": jax.random.PRNGKey(seed + 7)}, feat)["params"]


def _checkpoint_params(workdir: str, use_teacher: bool) -> Tuple[Dict[str, Any], int]:
  """(params, step) of DIR's latest checkpoint for mode 'probe'; a workdir without one is refused (a probe of a
  random-init encoder is asked for by name, mode 'random_init', and written under its own name)."""
  restored, step = restore_params(workdir, use_teacher)
  if restored is None:
    raise ConfigError(f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}: no checkpoint to probe. Pretrain into "
                      "this workdir first (python -m launch.train --config ... --workdir DIR with the same DIR), or "
                      f"pass --random-init to probe a random-init encoder (written to {OUT_NAMES['random_init']}).")
  return restored, step


def _encoder_params(mode: str, restored: Optional[Dict[str, Any]], step: Optional[int], use_teacher: bool,
                    encoder_source: str, model_spec: ModelSpec, batch_spec: BatchSpec,
                    train_scenes: Sequence, batch_size: int, capacity: Optional[int],
                    seed: int) -> Tuple[Any, Any, Dict[str, Any]]:
  """(encoder params, head params or None, result fields 'encoder' [+ 'checkpoint_step']) of a probe run.

  Mode 'random_init': a random-init encoder and head (the head for the collapse metrics). Mode 'probe': `restored`
  ({'encoder': ..., 'head': ...} of DIR's checkpoint at `step`, or {'encoder': ..., 'head': ... or None} handed in with step None,
  described by `encoder_source`). `model_spec` describes the encoder and the head.
  """
  if mode == "random_init":
    example, _ = eval_batch.make_labeled_batch(train_scenes[:1] * batch_size, batch_spec, capacity=capacity)
    enc_params = encoder.init(jax.random.PRNGKey(seed), example.points, model_spec)
    return enc_params, _init_head(model_spec, encoder.output_dim(model_spec), seed), {"encoder": "random init"}
  if step is None:
    return restored["encoder"], restored.get("head"), {"encoder": encoder_source}
  return restored["encoder"], restored.get("head"), {
      "encoder": f"checkpoint step {step} ({'teacher' if use_teacher else 'student'})", "checkpoint_step": step}


def _linear_probe(apply_fn, enc_params, train_scenes: Sequence, eval_scenes: Sequence, batch_spec: BatchSpec,
                  batch_size: int, capacity: Optional[int], num_classes: int, progress: bool, **fit):
  """(predicted labels i32[M], evaluation Features, dropped counts) of a linear probe on frozen features.

  The probe trains on the grid-sampled (stage-0) points, as Pointcept's linear probing does, and is evaluated on
  every original point. `apply_fn` gives the features the probe reads (probe.features); `fit`: `linear_probe.fit_linear_probe`'s
  optimisation arguments.
  """
  tr = linear_probe.extract_features(apply_fn, enc_params, train_scenes, batch_spec, batch_size, capacity, progress,
                                     map_to_points=False)
  probe_params = linear_probe.fit_linear_probe(tr.features, tr.labels, num_classes, progress=progress, **fit)
  dropped = {"train_voxels": tr.dropped_voxels}
  del tr
  ev = linear_probe.extract_features(apply_fn, enc_params, eval_scenes, batch_spec, batch_size, capacity, progress)
  pred = linear_probe.predict(probe_params, ev.features)
  dropped.update(eval_voxels=ev.dropped_voxels, eval_points=ev.dropped_points)
  if any(dropped.values()):
    logging_line(f"WARNING: {dropped['train_voxels']} probe-training and {dropped['eval_voxels']} evaluation "
                 f"voxels did not fit the capacity {capacity} and were left out ({dropped['eval_points']} "
                 "evaluation points took a neighbour's feature); drop --capacity / config.probe.capacity to "
                 "size batches to whole scenes")
  return pred, ev, dropped


def _collapse(model_spec: ModelSpec, student_temp: float, zipf_alpha: float, head_params, ev, num_classes: int,
              groups, workdir: str, plots: bool, prototypes: Sequence[int]) -> Dict[str, Any]:
  """The collapse report of the head's prototype scores on the evaluation scenes, and the figures asked for."""
  scores = _head_scores(model_spec, student_temp, head_params, ev.stage0)
  report = collapse.collapse_report(scores, ev.stage0_labels, num_classes, groups)
  if not (plots or prototypes):
    return report
  # matplotlib is imported only when a figure is asked for (the probe itself does not need it).
  from dos_jax.eval import plots as plots_lib  # pylint: disable=g-import-not-at-top
  first = ev.features[ev.offsets[0]:ev.offsets[1]]
  first_scores = np.asarray(_head_scores(model_spec, student_temp, head_params, [first])[0])
  if plots:
    plots_lib.plot_rank_frequency(report["usage_by_rank"], zipf_alpha,
                                  os.path.join(workdir, "probe_rank_frequency.png"),
                                  num_prototypes=model_spec.num_prototypes)
    plots_lib.plot_topdown(ev.coords[0], first_scores.argmax(1), os.path.join(workdir, "probe_topdown.png"),
                           title="arg-max prototype (first evaluation scene)")
  for k in prototypes:
    if not 0 <= int(k) < first_scores.shape[1]:
      raise ConfigError(f"--prototype {k}: expected an id in [0, {first_scores.shape[1]})")
    plots_lib.plot_softmap(ev.coords[0], first_scores[:, int(k)], os.path.join(workdir, f"probe_prototype{int(k)}.png"),
                           title=f"prototype {int(k)}: softmap on the first evaluation scene")
  return report


def run_probe(config, workdir: str, data: Optional[str] = None, eval_data: Optional[str] = None,
              mode: str = "probe", use_teacher: bool = False, steps: Optional[int] = None,
              out_name: Optional[str] = None, max_train_scenes: Optional[int] = None,
              max_eval_scenes: Optional[int] = None, capacity: Optional[int] = None, plots: bool = True,
              seed: Optional[int] = None, progress: bool = False, print_json: bool = False,
              prototypes: Sequence[int] = (), encoder_params: Optional[Any] = None,
              encoder_source: str = "given params", head_params: Optional[Any] = None) -> Dict[str, Any]:
  """Linear probe (mode 'probe' | 'random_init') or supervised baseline ('supervised'); returns the result dict.

  `config` is a validated experiment config (`dos_jax.schema.validate`); its ModelSpec and BatchSpec are decoded
  once here and handed to the layers below, which do not read the config. Read here: data.* (where the scenes
  are), probe.* (features, steps, lr, weight_decay, schedule, standardize, class_balanced, batch_points, capacity,
  train_fraction), batch_size, seed, optim.lr /
  weight_decay_start / clip_norm (the supervised baseline), student_temp and zipf_alpha (the collapse report).

  Writes the result atomically to DIR/<out_name> (default OUT_NAMES[mode]) and, when `print_json`, prints it as
  the last stdout line. `prototypes`: for each id k, DIR/probe_prototype<k>.png pictures prototype k's softmap on
  the first evaluation scene (`plots.plot_softmap`). `encoder_params` (mode 'probe'): probe these encoder params
  instead of restoring DIR's checkpoint (`encoder_source` says where they came from, for the result; e.g.
  `dos_jax.interop.probe_init.init_from` for an upstream checkpoint); `head_params` with them: the projector /
  prototypes of the same network, for the collapse metrics (the in-training evaluators pass the live state's).
  """
  if mode not in OUT_NAMES:
    raise ConfigError(f"probe mode {mode!r}: expected one of {sorted(OUT_NAMES)}")
  if not workdir:
    raise ConfigError("--workdir is empty: pass the run directory (its checkpoints are probed, output goes there)")
  workdir = os.path.abspath(workdir)
  start = time.time()
  restored, step = None, None
  if mode == "probe":  # before anything is read or written: a workdir with nothing to probe is refused at once
    restored, step = (({"encoder": encoder_params, "head": head_params}, None) if encoder_params is not None
                      else _checkpoint_params(workdir, use_teacher))
  os.makedirs(workdir, exist_ok=True)
  model_spec, batch_spec = specs.model_spec(config), spec_lib.batch_spec(config)
  seed = int(config.seed if seed is None else seed)
  steps = int(config.probe.steps if steps is None else steps)
  capacity = capacity or config.probe.capacity

  train_scenes, eval_scenes, names, groups, source = probe_scenes(config, data, eval_data, max_train_scenes,
                                                                  max_eval_scenes)
  if not train_scenes or not eval_scenes:
    raise DataError(f"{source}: need at least one probe-training and one evaluation scene "
                    f"(got {len(train_scenes)} and {len(eval_scenes)}); add scenes or pass --eval-data")
  num_classes = len(names)
  for s in list(train_scenes) + list(eval_scenes):
    if s.segment is not None and np.max(s.segment, initial=-1) >= num_classes:
      raise DataError(f"{s.name}: label {int(np.max(s.segment))} >= {num_classes} classes of dataset "
                      f"{config.data.dataset!r}; set config.data.dataset to the scenes' label set")

  apply_fn = _eval_apply(model_spec)
  # What the linear probe reads (probe.features): 'stages', every stage's raw features up-cast to stage 0 and
  # concatenated (Sonata's probe input), or 'projected', the encoder's output (what the pretraining head reads).
  stages = config.probe.features == "stages"
  probe_fn = _eval_apply(encoder.all_stages_spec(model_spec)) if stages else apply_fn
  batch_size = max(1, int(config.batch_size))
  result: Dict[str, Any] = {"mode": mode}
  if mode == "supervised":
    params = linear_probe.train_supervised(
        model_spec, batch_spec, train_scenes, steps, num_classes, batch_size=batch_size, lr=float(config.optim.lr),
        weight_decay=float(config.optim.weight_decay_start), clip_norm=float(config.optim.clip_norm), seed=seed,
        capacity=capacity, progress=progress)
    ev = linear_probe.extract_features(apply_fn, params["encoder"], eval_scenes, batch_spec, batch_size, capacity,
                                       progress)
    lin = params["linear"]
    pred = np.asarray(jax.jit(lambda f: (f @ lin["w"] + lin["b"]).argmax(-1))(ev.features))
    head_params = None
    result["encoder"] = "supervised (encoder + linear head trained with labels)"
  else:
    enc_params, head_params, info = _encoder_params(mode, restored, step, use_teacher, encoder_source,
                                                    model_spec, batch_spec, train_scenes, batch_size,
                                                    capacity, seed)
    result.update(info)
    logging_line(f"encoder: {result['encoder']}; {len(train_scenes)} probe-training / {len(eval_scenes)} "
                 f"evaluation scenes from {source}")
    pred, ev, result["dropped"] = _linear_probe(
        probe_fn, enc_params, train_scenes, eval_scenes, batch_spec, batch_size, capacity, num_classes, progress,
        steps=steps, lr=float(config.probe.lr), class_balanced=bool(config.probe.class_balanced), seed=seed,
        batch_points=int(config.probe.batch_points), weight_decay=float(config.probe.weight_decay),
        schedule=str(config.probe.schedule), standardize=bool(config.probe.standardize))
    result["probe_features"] = f"{config.probe.features} ({ev.features.shape[1]} channels)"

  conf = miou.confusion_matrix(pred, ev.labels, num_classes)
  result.update(miou.segmentation_metrics(conf, names, groups))
  if head_params is not None:
    # The collapse metrics score the head on the features it was trained on (the encoder's output).
    head_ev = ev if not stages else linear_probe.extract_features(apply_fn, enc_params, eval_scenes, batch_spec,
                                                                  batch_size, capacity, progress)
    result["collapse"] = _collapse(model_spec, float(config.student_temp), float(config.zipf_alpha), head_params,
                                   head_ev, num_classes, groups, workdir, plots, prototypes)
  result.update({
      "dataset": config.data.dataset, "num_classes": num_classes, "train_scenes": len(train_scenes),
      "eval_scenes": len(eval_scenes), "data": source,
      "probe": {"steps": steps, "lr": float(config.optim.lr if mode == "supervised" else config.probe.lr),
                "class_balanced": bool(config.probe.class_balanced) and mode != "supervised", "seed": seed,
                "features": config.probe.features if mode != "supervised" else "supervised",
                "schedule": config.probe.schedule, "weight_decay": float(config.probe.weight_decay),
                "standardize": bool(config.probe.standardize)},
      "zipf_alpha": float(config.zipf_alpha), "seconds": round(time.time() - start, 1)})
  result["relative"] = _relative(workdir, mode)
  sup = result["relative"].get("supervised_miou")
  if sup and result.get("miou") is not None:  # top level: the number a reader of the file looks for
    result["percent_of_supervised"] = round(100.0 * result["miou"] / sup, 2)
  text = json.dumps(result, sort_keys=False)
  fileio.write_text(os.path.join(workdir, out_name or OUT_NAMES[mode]), text + "\n")
  if print_json:
    print(text, flush=True)
  return result


def _relative(workdir: str, mode: str) -> Dict[str, Any]:
  """mIoU of the baselines already probed in `workdir`: {'supervised_miou', 'random_init_miou'} where present."""
  out: Dict[str, Any] = {}
  for other in ("supervised", "random_init"):
    path = os.path.join(workdir, OUT_NAMES[other])
    if other == mode or not os.path.exists(path):
      continue
    try:
      with open(path) as f:
        out[f"{other}_miou"] = json.load(f).get("miou")
    except (OSError, ValueError):
      continue
  return out


def logging_line(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run_collapse(config, encoder_params, head_params, max_eval_scenes: Optional[int] = None) -> Dict[str, Any]:
  """The collapse report of a network's head (`collapse.collapse_report`) on the config's evaluation scenes
  (`probe_scenes` without --data: the 'val' split), without fitting a probe; what `run_probe` reports under
  'collapse', for the in-training evaluator of that name."""
  model_spec, batch_spec = specs.model_spec(config), spec_lib.batch_spec(config)
  _, eval_scenes, names, groups, _ = probe_scenes(config, None, None, max_train=0, max_eval=max_eval_scenes)
  ev = linear_probe.extract_features(_eval_apply(model_spec), encoder_params, eval_scenes, batch_spec,
                                     max(1, int(config.batch_size)), config.probe.capacity, map_to_points=False)
  return _collapse(model_spec, float(config.student_temp), float(config.zipf_alpha), head_params, ev, len(names),
                   groups, "", False, ())
