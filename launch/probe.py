r"""Linear probe of a pretrained encoder: `python -m launch.probe --config configs/<name>.py --workdir DIR`.

Restores the encoder from the latest checkpoint in DIR/checkpoints (the student's params; `--teacher` for the EMA
teacher's); a workdir without a checkpoint is refused (one line, exit 2) unless `--random-init` asks for a
random-init encoder, whose result goes to DIR/probe_random_init.json with "encoder": "random init". Extracts
frozen per-point features, fits a linear classifier (AdamW, config.probe.*), and evaluates it by mIoU on held-out
scenes. Prints one final JSON line (miou, head/common/tail where the dataset defines them, per-class IoU,
percent_of_supervised when DIR/probe_supervised.json exists, collapse metrics) and writes it atomically to
DIR/probe.json.

  python -m launch.probe --config configs/synthetic_tiny.py --workdir /tmp/dos_jax_quickstart   # after quickstart.sh
  python -m launch.probe --config configs/scannet.py --workdir DIR --data /data/scannet_pointcept
  python -m launch.probe --config configs/scannet.py --workdir DIR --data TRAIN_DIR --eval-data VAL_DIR
  python -m launch.probe --config configs/synthetic_tiny.py --workdir DIR --random-init   # -> probe_random_init.json
  python -m launch.probe --config configs/synthetic_tiny.py --workdir DIR --supervised    # -> probe_supervised.json
  python -m launch.probe --config configs/scannet.py --workdir DIR --data D --init-from sonata.pth  # upstream encoder

`--init-from PATH` probes the encoder of an upstream Pointcept PTv3 / Sonata checkpoint
(`dos_jax.interop.pointcept.load_checkpoint`; `--teacher` takes Sonata's teacher branch): config.model takes the
checkpoint's architecture, data.feat_keys its input width (6: coord, color; 9: + normal); `--up-cast-level 2`
probes Sonata's head (1,088 channels at base) instead of every level (`--enc-num-head`, `--enc-patch-size` when the
checkpoint's config differs from Sonata's defaults).

Data: `--data` is a folder of Pointcept-format scene folders (coord.npy, color.npy, segment*.npy; see
dos_jax.data.load_scene). Without `--eval-data`, a deterministic ~config.probe.train_fraction of its scenes train
the probe and the rest evaluate it; re-scans `sceneXXXX_YY` of one room stay on the same side. Without `--data`,
the config's data source is used: split 'train' for the probe and 'val' for evaluation.

The logic is `dos_jax.eval.probe.run_probe(config, workdir, ...)` (and `dos_jax.interop.probe_init.init_from` for
`--init-from`); this file holds the flags.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dos_jax import schema
from dos_jax.errors import ConfigError, DataError
from dos_jax.eval import probe as probe_lib
from launch import cli
from launch import console

OUT_NAMES = probe_lib.OUT_NAMES


def _define_flags():
  # Defined when run as a program only, so that importing this module defines no absl flags.
  config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/synthetic_tiny.py[:smoke].",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints in DIR/checkpoints; output written here).")
  flags.DEFINE_string("data", None, "Folder of Pointcept scene folders (default: the config's data source).")
  flags.DEFINE_string("eval-data", None, "Folder of Pointcept scene folders to evaluate on.")
  flags.DEFINE_bool("supervised", False, "Train the supervised baseline (encoder + linear head) instead.")
  flags.DEFINE_bool("random-init", False, "Probe a random-init encoder (-> DIR/probe_random_init.json).")
  flags.DEFINE_bool("teacher", False, "Probe the EMA teacher's encoder instead of the student's.")
  flags.DEFINE_integer("steps", None, "Probe (or supervised) steps; default config.probe.steps.", lower_bound=1)
  flags.DEFINE_string("out", None, "Output file name in DIR (default by mode: " + ", ".join(OUT_NAMES.values()) + ").")
  flags.DEFINE_integer("max-train-scenes", None, "Use at most this many probe-training scenes.")
  flags.DEFINE_integer("max-eval-scenes", None, "Use at most this many evaluation scenes.")
  flags.DEFINE_integer("capacity", None, "Fixed stage-0 points per scene for feature extraction (default "
                       "config.probe.capacity if set, else sized to every voxel of each batch's scenes).")
  flags.DEFINE_bool("plots", True, "Also write DIR/probe_topdown.png and DIR/probe_rank_frequency.png.")
  flags.DEFINE_integer("seed", None, "Probe seed (default config.seed).")
  flags.DEFINE_list("prototype", [], "Prototype ids whose softmap on the first evaluation scene is pictured "
                    "(DIR/probe_prototype<k>.png), e.g. --prototype 0,5.")
  flags.DEFINE_string("init-from", None, "Probe the encoder of this upstream Pointcept PTv3 / Sonata checkpoint.")
  flags.DEFINE_integer("up-cast-level", 0, "--init-from: levels the up-cast concatenates (0 = all; Sonata: 2).")
  flags.DEFINE_list("enc-num-head", [], "--init-from: heads per stage (default C // 16).")
  flags.DEFINE_integer("enc-patch-size", None, "--init-from: attention patch size (default 1024).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  mode = "supervised" if f.supervised else ("random_init" if f["random-init"].value else "probe")
  try:
    config, extra = schema.validate(f.config), {}  # the gate; the effective config is what the probe uses
    if f["init-from"].value:
      # Imported only for --init-from: the upstream checkpoint reader is not needed otherwise.
      from dos_jax.interop import probe_init  # pylint: disable=g-import-not-at-top
      overrides = {}
      if f["enc-num-head"].value:
        overrides["enc_num_head"] = tuple(int(h) for h in f["enc-num-head"].value)
      if f["enc-patch-size"].value:
        overrides["enc_patch_size"] = f["enc-patch-size"].value
      config, params = probe_init.init_from(config, f["init-from"].value, f.teacher, f["up-cast-level"].value,
                                            **overrides)
      extra = dict(encoder_params=params, encoder_source=f"pointcept checkpoint {f['init-from'].value}")
    probe_lib.run_probe(config, f.workdir, data=f.data, eval_data=f["eval-data"].value, mode=mode,
                        use_teacher=f.teacher, steps=f.steps, out_name=f.out,
                        max_train_scenes=f["max-train-scenes"].value, max_eval_scenes=f["max-eval-scenes"].value,
                        capacity=f.capacity, plots=f.plots, seed=f.seed, progress=True, print_json=True,
                        prototypes=[int(k) for k in f.prototype], **extra)
  except (ConfigError, DataError) as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  # JAX's backend probe and orbax's per-restore INFO lines: keep the console to our progress and result.
  console.quiet_libraries()
  console.route_absl_through_tqdm()
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)  # a bad command line: one line, exit 2
