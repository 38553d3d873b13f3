"""Evaluation inside training (big_vision's `config.evals`): evaluators the training loop runs every N steps.

Each entry of `config.evals` is one evaluator, off when its `every` is 0:

  evals.linear_probe  every N steps (and at the last step): `probe.run_probe` - the code of `launch.probe` - on the
                      live student's encoder and head, trained on the first `train_scenes` scenes of the config's
                      'train' split for `steps` probe steps and evaluated on `eval_scenes` of its 'val' split, with
                      the config's probe settings (probe.features, lr, schedule, ...); yields mIoU (head, common,
                      tail where the dataset has them) and the collapse metrics; its result JSON is kept as
                      DIR/evals/linear_probe_<step>.json.
  evals.collapse      every N steps: the collapse diagnostics of the head alone (`probe.run_collapse`; no probe).

`run(evaluator, config, params, workdir, step)` returns flat scalars named `eval/<evaluator>/<metric>`, which the
loop writes with the step's training metrics (metrics.jsonl, TensorBoard); `plot_curve` draws the probe's curve
over training from metrics.jsonl (DIR/eval_curve.png). The seed of the probe is the run's, so the points of the
curve differ only by the encoder.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping

import numpy as np

from dos_jax.eval import probe as probe_lib

NAMES = ("linear_probe", "collapse")
CURVE_FILE = "eval_curve.png"
_SCALARS = ("miou", "head", "common", "tail", "effective_prototypes", "used_prototypes",
            "collapsed_prototype_fraction", "collapsed_pair_fraction", "unclaimed_point_fraction")


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One entry of config.evals: its name (NAMES) and period in steps (0 = off)."""
  name: str
  every: int

  def due(self, step: int, total: int) -> bool:
    """Whether it runs after `step` steps: every `every` steps and at the last step (never at step 0)."""
    return self.every > 0 and step > 0 and (step % self.every == 0 or step == total)


def from_config(config) -> List[Evaluator]:
  """The evaluators a validated config switches on (those with every > 0)."""
  out = [Evaluator("linear_probe", int(config.evals.linear_probe.every)),
         Evaluator("collapse", int(config.evals.collapse.every))]
  return [e for e in out if e.every > 0]


def _host(tree):
  """A host copy of (replicated) device arrays; works for arrays spread over the processes of a job too."""
  import jax  # pylint: disable=g-import-not-at-top  (the module's own imports stay numpy-level)
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if hasattr(a, "addressable_data")
                      else np.asarray(a), tree)


def _scalars(prefix: str, result: Mapping[str, Any]) -> Dict[str, float]:
  out = {}
  for key in _SCALARS:
    value = result.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      out[f"{prefix}/{key}"] = float(value)
  return out


def run(evaluator: Evaluator, config, params, workdir: str, step: int) -> Dict[str, float]:
  """Runs one evaluator on the network `params` ({'encoder', 'head'}) at `step`; returns its flat scalars."""
  params = _host(params)
  prefix = f"eval/{evaluator.name}"
  if evaluator.name == "linear_probe":
    os.makedirs(os.path.join(workdir, "evals"), exist_ok=True)
    result = probe_lib.run_probe(
        config, workdir, mode="probe", steps=int(config.evals.linear_probe.steps),
        out_name=f"evals/linear_probe_{step:07d}.json", max_train_scenes=int(config.evals.linear_probe.train_scenes),
        max_eval_scenes=int(config.evals.linear_probe.eval_scenes), plots=False,
        encoder_params=params["encoder"], head_params=params["head"], encoder_source=f"training step {step}")
    return {**_scalars(prefix, result), **_scalars(prefix, result.get("collapse") or {})}
  if evaluator.name == "collapse":
    return _scalars(prefix, probe_lib.run_collapse(config, params["encoder"], params["head"],
                                                   int(config.evals.collapse.eval_scenes)))
  raise ValueError(f"evaluator {evaluator.name!r}: expected one of {NAMES}")


def plot_curve(metrics_file: str, path: str) -> str:
  """The in-training probe's mIoU (and head/common/tail) against the step, from a run's metrics.jsonl, as PNG."""
  from dos_jax.eval import plots  # pylint: disable=g-import-not-at-top  (matplotlib only when a figure is made)
  keys = [f"eval/linear_probe/{k}" for k in ("miou", "head", "common", "tail")]
  return plots.plot_eval_curve(metrics_file, path, keys, title="linear probe during training")
