r"""Linear probe of a pretrained encoder: `python -m launch.probe --config configs/<name>.py --workdir DIR`.

Restores the encoder from the latest checkpoint in DIR/checkpoints (the student's params; `--teacher` for the EMA
teacher's), or uses a random-init encoder when there is none (the output says which). Extracts frozen per-point
features, fits a linear classifier (AdamW, config.probe.*), and evaluates it by mIoU on held-out scenes. Prints one
final JSON line (miou, head/common/tail where the dataset defines them, per-class IoU, collapse metrics) and writes
it atomically to DIR/probe.json.

  python -m launch.probe --config configs/synthetic_tiny.py --workdir /tmp/dos_tiny
  python -m launch.probe --config configs/scannet.py --workdir DIR --data /data/scannet_pointcept
  python -m launch.probe --config configs/scannet.py --workdir DIR --data TRAIN_DIR --eval-data VAL_DIR
  python -m launch.probe --config configs/synthetic_tiny.py --workdir DIR --random-init   # -> probe_random_init.json
  python -m launch.probe --config configs/synthetic_tiny.py --workdir DIR --supervised    # -> probe_supervised.json

Data: `--data` is a folder of Pointcept-format scene folders (coord.npy, color.npy, segment*.npy; see
dos_jax.data.load_scene). Without `--eval-data`, a deterministic ~config.probe.train_fraction of its scenes train
the probe and the rest evaluate it; re-scans `sceneXXXX_YY` of one room stay on the same side. Without `--data`,
the config's data source is used: split 'train' for the probe and 'val' for evaluation.

The logic is `run_probe(config, workdir, ...)` (importable; flags are only defined when run as a script).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dos_jax.errors import ConfigError, DataError

OUT_NAMES = {"probe": "probe.json", "random_init": "probe_random_init.json", "supervised": "probe_supervised.json"}
_SEGMENT_KEYS = {"scannet": "segment20", "scannet200": "segment200"}


# ----------------------------------------------------------------------------------------------- scenes


def find_scene_dirs(root: str) -> List[str]:
  """Scene folders (those holding coord.npy) at `root` itself or up to two levels below, sorted by path."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: data folder does not exist" if not os.path.exists(root) else
                    f"{root}: not a folder (expected a folder of Pointcept scene folders)")
  if os.path.isfile(os.path.join(root, "coord.npy")):
    return [root]
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
    if "coord.npy" in filenames:
      found.append(dirpath)
      dirnames[:] = []
    elif depth >= 2:
      dirnames[:] = []
  if not found:
    raise DataError(f"{root}: no scene folder with coord.npy found (expected Pointcept scene folders; convert raw "
                    "data with dos_jax.data.pointcept)")
  return sorted(found)


def load_scenes(root: str, config) -> List[Any]:
  from dos_jax.data import scene as scene_lib  # pylint: disable=g-import-not-at-top
  key = _SEGMENT_KEYS.get(config.data.dataset)
  out = []
  for d in find_scene_dirs(root):
    use = key if key and os.path.isfile(os.path.join(d, key + ".npy")) else None
    out.append(scene_lib.load_scene(d, segment_key=use))
  return out


def _source_scenes(config, split: str, limit: Optional[int]) -> List[Any]:
  from dos_jax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.scene_source(config.data, split)
  n = len(source) if limit is None else min(len(source), int(limit))
  return [source[i] for i in range(n)]


# ----------------------------------------------------------------------------------------------- encoder params


def restore_params(workdir: str, use_teacher: bool = False) -> Tuple[Optional[Dict[str, Any]], Optional[int]]:
  """({'encoder': ..., 'head': ...}, step) from the latest checkpoint in DIR/checkpoints, or (None, None).

  Restores the raw pytree (no abstract target needed: only the params are used) and takes the student's `params`
  (or `teacher_params`).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir) or not any(n.isdigit() for n in os.listdir(ckpt_dir)):
    return None, None
  manager = ocp.CheckpointManager(ckpt_dir)
  step = manager.latest_step()
  if step is None:
    return None, None
  try:
    tree = manager.restore(step)
  except Exception:  # pylint: disable=broad-except
    tree = manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    manager.close()
  key = "teacher_params" if use_teacher else "params"
  tree = tree.get("default", tree) if isinstance(tree, dict) else tree
  params = tree.get(key) if isinstance(tree, dict) else getattr(tree, key, None)
  if params is None or "encoder" not in params:
    raise DataError(f"{ckpt_dir}/{step}: checkpoint has no {key}/encoder subtree")
  return params, int(step)


# ----------------------------------------------------------------------------------------------- the probe


def _atomic_write(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _num_classes(config, names: Sequence[str]) -> int:
  if config.data.dataset in ("synthetic", "scannet", "scannet200", "s3dis", "semantickitti"):
    return len(names)
  return int(config.probe.num_classes)


def _head_scores(config, head_params, feats: List[np.ndarray]) -> List[np.ndarray]:
  """Prototype logits cos/tau_S f32[m, K] of each scene's stage-0 features (for the collapse metrics)."""
  import jax  # pylint: disable=g-import-not-at-top
  from dos_jax.models import heads  # pylint: disable=g-import-not-at-top
  head = heads.DOSHead(hidden_dim=int(config.model.head_hidden), out_dim=int(config.model.head_dim),
                       num_prototypes=int(config.num_prototypes))
  fn = jax.jit(lambda p, x: head.apply({"params": p}, x) / float(config.student_temp))
  return [np.asarray(fn(head_params, f)) for f in feats]


def _init_head(config, seed: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dos_jax.models import encoder, heads  # pylint: disable=g-import-not-at-top
  head = heads.DOSHead(hidden_dim=int(config.model.head_hidden), out_dim=int(config.model.head_dim),
                       num_prototypes=int(config.num_prototypes))
  feat = jnp.zeros((1, encoder.output_dim(config.model)), jnp.float32)
  return head.init({"params": jax.random.PRNGKey(seed + 7)}, feat)["params"]


def run_probe(config, workdir: str, data: Optional[str] = None, eval_data: Optional[str] = None,
              mode: str = "probe", use_teacher: bool = False, steps: Optional[int] = None,
              out_name: Optional[str] = None, max_train_scenes: Optional[int] = None,
              max_eval_scenes: Optional[int] = None, capacity: Optional[int] = None, plots: bool = True,
              seed: Optional[int] = None, progress: bool = False, print_json: bool = False) -> Dict[str, Any]:
  """Linear probe (mode 'probe' | 'random_init') or supervised baseline ('supervised'); returns the result dict.

  Writes the result atomically to DIR/<out_name> (default OUT_NAMES[mode]) and, when `print_json`, prints it as
  the last stdout line.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from dos_jax.batching import pipeline  # pylint: disable=g-import-not-at-top
  from dos_jax.eval import collapse, linear_probe, miou, plots as plots_lib, splits  # pylint: disable=g-import-not-at-top
  from dos_jax.models import encoder  # pylint: disable=g-import-not-at-top

  if mode not in OUT_NAMES:
    raise ConfigError(f"probe mode {mode!r}: expected one of {sorted(OUT_NAMES)}")
  if not workdir:
    raise ConfigError("--workdir is empty: pass the run directory (its checkpoints are probed, output goes there)")
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  seed = int(config.seed if seed is None else seed)
  steps = int(config.probe.steps if steps is None else steps)
  capacity = capacity or config.probe.get("capacity", None) or None

  # Scenes.
  if data:
    scenes = load_scenes(data, config)
    if eval_data:
      train_scenes, eval_scenes = scenes, load_scenes(eval_data, config)
    else:
      train_idx, eval_idx = splits.split_scenes([s.name for s in scenes], float(config.probe.train_fraction), seed)
      train_scenes, eval_scenes = [scenes[i] for i in train_idx], [scenes[i] for i in eval_idx]
    source = data
  else:
    if eval_data:
      raise ConfigError("--eval-data needs --data (the probe-training scenes)")
    train_scenes = _source_scenes(config, "train", max_train_scenes)
    eval_scenes = _source_scenes(config, "val", max_eval_scenes)
    source = f"config.data ({config.data.format})"
  train_scenes = train_scenes[:max_train_scenes] if max_train_scenes else train_scenes
  eval_scenes = eval_scenes[:max_eval_scenes] if max_eval_scenes else eval_scenes
  if not train_scenes or not eval_scenes:
    raise DataError(f"{source}: need at least one probe-training and one evaluation scene "
                    f"(got {len(train_scenes)} and {len(eval_scenes)}); add scenes or pass --eval-data")
  names = splits.class_names(config.data.dataset, int(config.probe.num_classes), config.data.kind)
  num_classes = _num_classes(config, names)
  groups = splits.class_groups(config.data.dataset, config.data.kind)
  for s in list(train_scenes) + list(eval_scenes):
    if s.segment is not None and np.max(s.segment, initial=-1) >= num_classes:
      raise DataError(f"{s.name}: label {int(np.max(s.segment))} >= {num_classes} classes of dataset "
                      f"{config.data.dataset!r}; set config.data.dataset / config.probe.num_classes to match")

  apply_fn = jax.jit(functools.partial(encoder.apply, train=False, model_cfg=config.model))
  batch_size = max(1, int(config.batch_size))
  result: Dict[str, Any] = {"mode": mode}
  head_params = None
  if mode == "supervised":
    params = linear_probe.train_supervised(config, train_scenes, steps, num_classes, seed=seed, capacity=capacity,
                                           progress=progress)
    ev = linear_probe.extract_features(apply_fn, params["encoder"], eval_scenes, config, batch_size, capacity,
                                       progress)
    lin = params["linear"]
    pred = np.asarray(jax.jit(lambda f: (f @ lin["w"] + lin["b"]).argmax(-1))(ev.features))
    result["encoder"] = "supervised (encoder + linear head trained with labels)"
  else:
    restored, step = (None, None) if mode == "random_init" else restore_params(workdir, use_teacher)
    if restored is None:
      example, _ = pipeline.make_labeled_batch(train_scenes[:1] * batch_size, config, capacity=capacity)
      enc_params = encoder.init(jax.random.PRNGKey(seed), example.points, config.model)
      try:
        head_params = _init_head(config, seed)
      except ImportError as e:  # the prototype head is only needed for the collapse metrics
        result["collapse"] = f"unavailable ({e})"
      result["encoder"] = "random init" + ("" if mode == "random_init" else " (no checkpoint in workdir)")
    else:
      enc_params, head_params = restored["encoder"], restored.get("head")
      result["encoder"] = f"checkpoint step {step} ({'teacher' if use_teacher else 'student'})"
      result["checkpoint_step"] = step
    logging_line(f"encoder: {result['encoder']}; {len(train_scenes)} probe-training / {len(eval_scenes)} "
                 f"evaluation scenes from {source}")
    tr = linear_probe.extract_features(apply_fn, enc_params, train_scenes, config, batch_size, capacity, progress)
    probe_params = linear_probe.fit_linear_probe(
        tr.features, tr.labels, num_classes, steps=steps, lr=float(config.probe.lr),
        class_balanced=bool(config.probe.class_balanced), seed=seed,
        batch_points=int(config.probe.batch_points), progress=progress)
    del tr
    ev = linear_probe.extract_features(apply_fn, enc_params, eval_scenes, config, batch_size, capacity, progress)
    pred = linear_probe.predict(probe_params, ev.features)

  conf = miou.confusion_matrix(pred, ev.labels, num_classes)
  result.update(miou.segmentation_metrics(conf, names, groups))
  if head_params is not None:
    try:
      scores = _head_scores(config, head_params, ev.stage0)
      result["collapse"] = collapse.collapse_report(scores, ev.stage0_labels, num_classes, groups)
      if plots:
        usage = result["collapse"]["usage_by_rank"]
        plots_lib.plot_rank_frequency(usage, float(config.zipf_alpha),
                                      os.path.join(workdir, "probe_rank_frequency.png"))
        first = ev.features[ev.offsets[0]:ev.offsets[1]]
        assign = np.asarray(_head_scores(config, head_params, [first])[0]).argmax(1)
        plots_lib.plot_topdown(ev.coords[0], assign, os.path.join(workdir, "probe_topdown.png"),
                               title="arg-max prototype (first evaluation scene)")
    except ImportError as e:  # the head module is optional for the probe itself
      result["collapse"] = f"unavailable ({e})"
  result.update({
      "dataset": config.data.dataset, "num_classes": num_classes, "train_scenes": len(train_scenes),
      "eval_scenes": len(eval_scenes), "data": source,
      "probe": {"steps": steps, "lr": float(config.probe.lr), "class_balanced": bool(config.probe.class_balanced),
                "seed": seed},
      "zipf_alpha": float(config.zipf_alpha), "seconds": round(time.time() - start, 1)})
  text = json.dumps(result, sort_keys=False)
  _atomic_write(os.path.join(workdir, out_name or OUT_NAMES[mode]), text + "\n")
  if print_json:
    print(text, flush=True)
  return result


def logging_line(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- CLI


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/synthetic_tiny.py[:smoke].",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints in DIR/checkpoints; output written here).")
  flags.DEFINE_string("data", None, "Folder of Pointcept scene folders (default: the config's data source).")
  flags.DEFINE_string("eval-data", None, "Folder of Pointcept scene folders to evaluate on.")
  flags.DEFINE_bool("supervised", False, "Train the supervised baseline (encoder + linear head) instead.")
  flags.DEFINE_bool("random-init", False, "Probe a random-init encoder even if DIR has checkpoints.")
  flags.DEFINE_bool("teacher", False, "Probe the EMA teacher's encoder instead of the student's.")
  flags.DEFINE_integer("steps", None, "Probe (or supervised) steps; default config.probe.steps.")
  flags.DEFINE_string("out", None, "Output file name in DIR (default by mode: " + ", ".join(OUT_NAMES.values()) + ").")
  flags.DEFINE_integer("max-train-scenes", None, "Use at most this many probe-training scenes.")
  flags.DEFINE_integer("max-eval-scenes", None, "Use at most this many evaluation scenes.")
  flags.DEFINE_integer("capacity", None, "Stage-0 points per scene for feature extraction (default "
                       "config.probe.capacity if set, else config.data.capacity).")
  flags.DEFINE_bool("plots", True, "Also write DIR/probe_topdown.png and DIR/probe_rank_frequency.png.")
  flags.DEFINE_integer("seed", None, "Probe seed (default config.seed).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  mode = "supervised" if f.supervised else ("random_init" if f["random-init"].value else "probe")
  try:
    run_probe(f.config, f.workdir, data=f.data, eval_data=f["eval-data"].value, mode=mode, use_teacher=f.teacher,
              steps=f.steps, out_name=f.out, max_train_scenes=f["max-train-scenes"].value,
              max_eval_scenes=f["max-eval-scenes"].value, capacity=f.capacity, plots=f.plots, seed=f.seed,
              progress=True, print_json=True)
  except (ConfigError, DataError) as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=g-import-not-at-top
  _define_flags()
  _app.run(main)
