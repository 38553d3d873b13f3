r"""Oracle probe on hand-made local-geometry features (no encoder): is each class learnable from shape at this grid?

  python -m launch.geometry_probe --config configs/ablation_tiny.py:kind=longtail --config.seed=0 --out /tmp/g.json

Same probe-training / evaluation scenes as `launch.probe` with the config (its data source's 'train' / 'val'
splits, or `--data` as there), same grid (config.data.grid_size), learning rate (config.probe.lr) and class weighting
(config.probe.class_balanced unless `--unweighted`); the features are `dos_jax.eval.geometry_probe.local_geometry_features`. Prints mIoU,
head/common/tail and per-class IoU, and writes the result JSON to `--out` when given.
"""

from __future__ import annotations

import json
import os
import sys

from dos_jax import io as fileio
from dos_jax import schema
from dos_jax.errors import ConfigError, DataError
from dos_jax.eval import geometry_probe
from dos_jax.eval import probe as probe_lib
from launch import cli
from launch import console


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/ablation_tiny.py:kind=longtail.",
                                  lock_config=True)
  flags.DEFINE_string("data", None, "Folder of Pointcept scene folders (default: the config's data source).")
  flags.DEFINE_integer("steps", 150, "Full-batch AdamW steps of the linear probe.")
  flags.DEFINE_bool("unweighted", False, "Unweighted cross-entropy even if config.probe.class_balanced.")
  flags.DEFINE_string("out", None, "Write the result JSON here (atomically).")
  flags.mark_flags_as_required(["config"])


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  console.quiet_libraries()
  f = flags.FLAGS
  try:
    config = schema.validate(f.config)  # the gate; the effective config is what the probe reads
    train, evals, names, groups, desc = probe_lib.probe_scenes(config, f.data, None)
  except (ConfigError, DataError) as e:  # bad input: one line, exit 2
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 2
  balanced = bool(config.probe.class_balanced) and not f.unweighted
  result = geometry_probe.geometry_probe(train, evals, len(names), float(config.data.grid_size), names, groups,
                                         steps=int(f.steps), lr=float(config.probe.lr), class_balanced=balanced,
                                         seed=int(config.seed))
  result["data"] = desc
  pct = lambda x: "-" if x is None or x != x else f"{100 * x:.1f}"  # noqa: E731  (NaN: group absent)
  print(f"geometry oracle on {desc}: mIoU {pct(result['miou'])}, " +
        ", ".join(f"{g} {pct(result.get(g))}" for g in groups), flush=True)
  print("per class: " + ", ".join(f"{n} {pct(v)}" for n, v in result["per_class_iou"].items()), flush=True)
  if f.out:
    fileio.write_text(os.path.abspath(f.out), json.dumps(result) + "\n")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main, argv=sys.argv, flags_parser=cli.parse_flags)  # a bad command line: one line, exit 2
