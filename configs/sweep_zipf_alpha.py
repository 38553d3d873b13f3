r"""Zipf-alpha sweep: DOS pretraining at alpha in {0, 0.6, 1.3, 1.6, 2.0} (alpha=0 is uniform Sinkhorn).

  # one after another on this machine (synthetic_tiny by default), then a results table:
  python -m launch.sweep --config configs/sweep_zipf_alpha.py --workdir /tmp/dos_alpha
  # a paper dataset on a cluster: print one command per run, submit them, then collect the table:
  python -m launch.sweep --config configs/sweep_zipf_alpha.py:base=scannet --workdir /ckpt/alpha --mode commands
  python -m launch.sweep --config configs/sweep_zipf_alpha.py:base=scannet --workdir /ckpt/alpha --mode collect

`get_config(arg)` is the base experiment (`base=<config name>`, `smoke` to shrink it); `get_sweep()` lists the
named runs and their dotted-key overrides. `launch.sweep` trains and probes each run per seed and writes
`DIR/sweep.md` / `DIR/sweep.json`: mIoU, head/common/tail and the paired difference to `alpha1.3`.

Runtime: 5 x the base config (synthetic_tiny: a few minutes each on 2 CPU cores). Expected result (paper): probe
mIoU best for alpha in [1.3, 1.6]; alpha=0 uses prototypes most uniformly; alpha >= 2 may be unstable.
"""

import importlib

from configs import common

ALPHAS = (0.0, 0.6, 1.3, 1.6, 2.0)


def get_config(arg=None):
  arg = common.parse_arg(arg, base="synthetic_tiny", smoke=False)
  module = importlib.import_module(f"configs.{arg.base}")
  return module.get_config("smoke" if arg.smoke else None)


def get_sweep():
  return [{"name": f"alpha{alpha:g}", "groups": ("alpha",), "overrides": {"zipf_alpha": alpha},
           "random_init": alpha == 1.3} for alpha in ALPHAS]
