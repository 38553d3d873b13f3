r"""Train step of `synthetic_tiny`: jitted JAX `train_step` vs the eager PyTorch reference, and the input pipeline's
supply vs the step's demand, measured in one run (CPU).

  python -m benchmarks.train_step [--steps 5] [--pipeline-seconds 3] [--config-arg smoke] \
      [--out benchmarks/train_step.json]

JAX: `dos_jax.train.step.train_step` jitted once (state donated), on step 0's batch from the real input pipeline
(`configs/synthetic_tiny.py`: packs of views filled by budget, teacher = full views, student = visible points);
compile time is `lower().compile()`; the step time is the median of `--steps` steps after a warm-up.
PyTorch: the same views (those the budget fill put in the packs), each padded to its per-view capacities as a
PyTorch user batches them (`per_view_batch`), through the reference modules, eager: teacher encoder + head under
no_grad, student encoder + head, `dos_jax.torch_ref.objective.dos_loss`, backward, `torch.optim.AdamW` step and an
EMA update of the teacher; the weights are the JAX state's, converted (`dos_jax.torch_ref.convert`), so the first
losses agree up to drop path (off in synthetic_tiny).
Input pipeline: `benchmarks/input_pipeline.py`'s measurement of `TrainIterator` (2 worker threads) on the same
config and scenes; supply/demand = pipeline scenes/s / (batch_size / JAX step time), > 1 means data keeps up.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import input_pipeline  # noqa: E402
from benchmarks import timing  # noqa: E402
from configs import synthetic_tiny  # noqa: E402
from dos_jax import io as fileio  # noqa: E402
from dos_jax import specs  # noqa: E402
from dos_jax.batching import pipeline  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.batching import train_views  # noqa: E402


class TorchHead:
  """Projector Linear-GELU-Linear, L2 normalisation, cosine to L2-normalised prototypes (as DOSHead)."""

  def __init__(self, head_params, torch, device="cpu"):
    self.torch = torch
    t = lambda a: torch.tensor(np.asarray(a), device=device, requires_grad=True)
    self.w_in, self.b_in = t(np.asarray(head_params["proj_in"]["kernel"]).T), t(head_params["proj_in"]["bias"])
    self.w_out, self.b_out = t(np.asarray(head_params["proj_out"]["kernel"]).T), t(head_params["proj_out"]["bias"])
    self.prototypes = t(head_params["prototypes"])

  def parameters(self):
    return [self.w_in, self.b_in, self.w_out, self.b_out, self.prototypes]

  def __call__(self, feat):
    f = self.torch.nn.functional
    h = f.linear(f.gelu(f.linear(feat, self.w_in, self.b_in)), self.w_out, self.b_out)
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    protos = self.prototypes / self.prototypes.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return h @ protos.T


def per_view_batch(spec, scenes):
  """The views of step 0's packs in the per-view padded layout a PyTorch reference takes: a TrainView with leading
  axes [B, V] (B = the scenes the budget fill put in the packs), each view at its own capacities
  (`train_views.stack_views`). The JAX step gets the same views as packs (`pipeline.process_batches`)."""
  examples = pipeline.global_examples(spec, scenes)
  members = [e for k in range(spec.packs_per_step) for e in pipeline.pack_members(spec, examples, k)]
  return train_views.stack_views([e.views for e in members])


def torch_step_fn(state, batch, config, device: str = "cpu"):
  """An eager torch train step closure at the size of `state`, initialised from the JAX params, on `device`;
  `batch`: the step's views in the per-view layout (`per_view_batch`)."""
  import torch  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import convert  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import encoder as tenc  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import objective as tobj  # pylint: disable=g-import-not-at-top
  from dos_jax.train import schedules  # pylint: disable=g-import-not-at-top

  params = jax.device_get(state.params)
  in_ch = int(batch.student.feat.shape[-1])
  student = tenc.PointTransformerV3.from_variant(config.model.variant, in_channels=in_ch)
  student.load_state_dict(convert.flax_to_torch_state_dict(params["encoder"]))
  teacher = tenc.PointTransformerV3.from_variant(config.model.variant, in_channels=in_ch)
  teacher.load_state_dict(student.state_dict())
  teacher.requires_grad_(False)
  student, teacher = student.to(device), teacher.to(device)
  head, t_head = TorchHead(params["head"], torch, device), TorchHead(params["head"], torch, device)
  opt = torch.optim.AdamW(list(student.parameters()) + head.parameters(), lr=float(config.optim.lr),
                          weight_decay=float(schedules.weight_decay(config)(0)))
  flat = lambda tree: jax.tree.map(lambda x: x.reshape((-1,) + tuple(x.shape[2:])), tree)
  to_dev = lambda tree: jax.tree.map(lambda x: x.to(device), tree)
  t_student = to_dev(tenc.points_to_torch(flat(batch.student)))
  t_teacher = to_dev(tenc.points_to_torch(flat(batch.teacher)))
  b, v = batch.student.coord.shape[:2]
  idx = {k: torch.from_numpy(np.asarray(getattr(batch, k))).to(device) for k in
         ("target_index", "target_valid", "cross_index", "cross_valid")}
  s_valid = torch.from_numpy(np.asarray(batch.student.valid)).to(device)
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  # Step-0 values of the schedules (the torch step is timed, not trained: constants are equal work).
  momentum = float(schedules.ema_momentum(config)(0))
  teacher_temp = float(schedules.teacher_temperature(config)(0))

  def step():
    with torch.no_grad():
      t_cos = t_head(teacher(t_teacher)).reshape(b, v, -1, int(config.num_prototypes))
    s_cos = head(student(t_student)).reshape(b, v, -1, int(config.num_prototypes))
    s_cos = torch.where(s_valid.unsqueeze(-1), s_cos, torch.zeros((), device=device))
    loss, _ = tobj.dos_loss(s_cos, t_cos, idx["target_index"], idx["target_valid"], idx["cross_index"],
                            idx["cross_valid"], s_valid, teacher_temp=teacher_temp,
                            student_temp=float(config.student_temp), alpha=float(config.zipf_alpha),
                            num_iters=int(config.sinkhorn_iters), normalization=config.normalization,
                            cross_view=bool(config.cross_view))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
      for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(momentum).add_(ps, alpha=1 - momentum)
      for pt, ps in zip(t_head.parameters(), head.parameters()):
        pt.mul_(momentum).add_(ps, alpha=1 - momentum)
    sync()
    return float(loss)

  return step


def _median_time(fn, steps):
  times, out = timing.call_times(fn, steps)
  return statistics.median(times), times, out


def run(config, steps: int, pipeline_seconds: float, with_torch: bool = True, torch_device: str = "cpu"):
  """Returns the result dict (see the module docstring)."""
  from dos_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from dos_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  scenes, origin = input_pipeline._synthetic_source(config, 8)  # pylint: disable=protected-access
  pipeline_spec = spec_lib.pipeline_spec(config)
  batch = pipeline.process_batches(pipeline_spec, scenes)[0]
  result = {"config": "synthetic_tiny", "variant": config.model.variant, "batch_size": int(config.batch_size),
            "packs": int(batch.student.valid.shape[0]), "views_in_packs": int(np.sum(batch.view_valid)),
            "student_slots": int(batch.student.valid.shape[-1]), "teacher_slots": int(batch.teacher.valid.shape[-1]),
            "num_prototypes": int(config.num_prototypes), "scene_source": origin, "cpu_count": os.cpu_count(),
            "load_average_start": round(os.getloadavg()[0], 2), "jax_version": jax.__version__}

  spec = specs.step_spec(config)
  state = state_lib.create_train_state(spec, jax.random.key(int(config.seed)), batch)
  batch_j = jax.device_put(batch)
  step_fn = jax.jit(functools.partial(step_lib.train_step, spec=spec), donate_argnums=0)
  rng = jax.random.key(1)
  torch_step = None
  if with_torch:  # before donation consumes the params
    views = per_view_batch(pipeline_spec, scenes)
    result["torch_views"] = int(np.prod(views.student.valid.shape[:2]))
    torch_step = torch_step_fn(state, views, config, torch_device)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch_j, rng).compile()
  result["jax_compile_s"] = round(time.perf_counter() - start, 3)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batch_j, rng)
    return float(jax.block_until_ready(metrics["loss"]))

  result["jax_first_loss"] = jax_step()
  med, times, _ = _median_time(jax_step, steps)
  result.update(jax_step_s=round(med, 5), jax_step_times_s=[round(t, 5) for t in times])

  if torch_step is not None:
    import torch  # pylint: disable=g-import-not-at-top
    result["torch_threads"] = torch.get_num_threads()
    result["torch_device"] = torch_device
    result["torch_version"] = torch.__version__
    result["torch_first_loss"] = torch_step()
    med, times, _ = _median_time(torch_step, steps)
    result.update(torch_step_s=round(med, 5), torch_step_times_s=[round(t, 5) for t in times])
    result["speedup_jax_over_torch"] = round(result["torch_step_s"] / result["jax_step_s"], 2)

  if pipeline_seconds > 0:
    supply = input_pipeline._measure(config, scenes, 2, pipeline_seconds, "thread")  # pylint: disable=protected-access
    demand = config.batch_size / result["jax_step_s"]
    result["pipeline"] = dict(supply, demand_scenes_per_s=round(demand, 2),
                              supply_over_demand=round(supply["scenes_per_s"] / demand, 2))
  result["load_average_end"] = round(os.getloadavg()[0], 2)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--pipeline-seconds", type=float, default=3.0)
  parser.add_argument("--config-arg", default=None, help="argument of configs/synthetic_tiny.py, e.g. 'smoke'")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--torch-device", default="cpu", help="device of the torch reference (cpu, cuda)")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "train_step.json"))
  args = parser.parse_args(argv)
  config = synthetic_tiny.get_config(args.config_arg)
  result = run(config, args.steps, args.pipeline_seconds, with_torch=not args.no_torch,
               torch_device=args.torch_device)
  fileio.write_json(args.out, result, indent=1)
  os.chmod(args.out, 0o644)
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
