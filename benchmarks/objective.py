"""Benchmark: Zipf-Sinkhorn + softmap KL, jit JAX vs the eager PyTorch reference, in one run.

    python -m benchmarks.objective [--points 65536] [--prototypes 1024] [--repeats 3] [--iters 3] [--alpha 1.3]
                                   [--out benchmarks/objective.json]

Both sides compute the same thing on the same float32 inputs: teacher logits -> Zipf-Sinkhorn targets
(stop-gradient) -> softmap KL against the student logits, one point set of N points x K prototypes, ~10% of the
rows padded. 'value' times the loss alone; 'value_and_grad' adds the gradient w.r.t. the student logits (JAX:
`jax.value_and_grad` under jit; torch: `.backward()`). JAX is timed twice: as `dos_loss` runs it
(`objective.zipf_softmap_kl`, keys `jax_value*`) and through the public functions composed
(`softmap_kl(stop_gradient(zipf_sinkhorn(...)))`, keys `jax_composed_*`). The torch side is the eager reference
`dos_jax.torch_ref.objective` (the DESIGN.md algorithm on a materialised log Q). Reported: median wall time of
`--repeats` runs (JAX after one compile-and-run call, reported as `*_first_call_s`), the torch/JAX speed-up
ratios, and the two losses. Prints one JSON object and writes it atomically to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from dos_jax import io as fileio
from dos_jax import objective
from dos_jax.torch_ref import objective as torch_objective


def _median_time(fn, repeats):
  times, _ = timing.call_times(fn, repeats)
  return statistics.median(times), times


def _inputs(num_points, num_protos, seed=0):
  rng = np.random.default_rng(seed)
  # Cosines in [-1, 1] at the paper's temperatures: τ_T = 0.07, τ_S = 0.1.
  teacher = (rng.uniform(-1, 1, (num_points, num_protos)) / 0.07).astype(np.float32)
  student = (rng.uniform(-1, 1, (num_points, num_protos)) / 0.1).astype(np.float32)
  valid = rng.random(num_points) < 0.9
  return teacher, student, valid


def jax_loss(student, teacher, valid, alpha, num_iters):
  """The benchmarked JAX computation, as `dos_loss` runs it (fused Sinkhorn + KL, targets not written out)."""
  return objective.zipf_softmap_kl(teacher, student, valid, alpha, num_iters)[0]


def jax_loss_composed(student, teacher, valid, alpha, num_iters):
  """The same through the public functions: materialised targets (stop-gradient), then softmap_kl."""
  targets = jax.lax.stop_gradient(objective.zipf_sinkhorn(teacher, valid, alpha, num_iters))
  return objective.softmap_kl(targets, student, valid)


def torch_loss(student, teacher, valid, alpha, num_iters):
  with torch.no_grad():
    targets = torch_objective.zipf_sinkhorn(teacher, valid, alpha, num_iters)
  return torch_objective.softmap_kl(targets, student, valid)


def run(num_points, num_protos, repeats, num_iters, alpha):
  teacher_np, student_np, valid_np = _inputs(num_points, num_protos)
  result = dict(points=num_points, prototypes=num_protos, sinkhorn_iters=num_iters, alpha=alpha, repeats=repeats,
                jax_version=jax.__version__, torch_version=torch.__version__, jax_backend=jax.default_backend(),
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(), machine=platform.machine(),
                load_average_start=os.getloadavg()[0])

  teacher, student, valid = jnp.asarray(teacher_np), jnp.asarray(student_np), jnp.asarray(valid_np)
  variants = (("value", jax_loss, False), ("value_and_grad", jax_loss, True),
              ("composed_value", jax_loss_composed, False), ("composed_value_and_grad", jax_loss_composed, True))
  for name, loss, with_grad in variants:
    fn = jax.jit(jax.value_and_grad(loss) if with_grad else loss, static_argnums=(4,))
    start = time.perf_counter()
    out = jax.block_until_ready(fn(student, teacher, valid, alpha, num_iters))
    result[f"jax_{name}_first_call_s"] = time.perf_counter() - start
    med, times = _median_time(lambda: jax.block_until_ready(fn(student, teacher, valid, alpha, num_iters)), repeats)
    result[f"jax_{name}_s"] = med
    result[f"jax_{name}_times_s"] = times
    if name == "value":
      jax_value = float(out)
  del out

  t_teacher, t_student, t_valid = (torch.from_numpy(teacher_np), torch.from_numpy(student_np),
                                   torch.from_numpy(valid_np))

  def torch_value():
    with torch.no_grad():
      return torch_loss(t_student, t_teacher, t_valid, alpha, num_iters)

  def torch_value_and_grad():
    student = t_student.clone().requires_grad_(True)
    loss = torch_loss(student, t_teacher, t_valid, alpha, num_iters)
    loss.backward()
    return loss.detach(), student.grad

  torch_out = float(torch_value())
  for name, fn in (("value", torch_value), ("value_and_grad", torch_value_and_grad)):
    med, times = _median_time(fn, repeats)
    result[f"torch_{name}_s"] = med
    result[f"torch_{name}_times_s"] = times
  for name in ("value", "value_and_grad"):
    result[f"speedup_{name}"] = result[f"torch_{name}_s"] / result[f"jax_{name}_s"]
    result[f"speedup_composed_{name}"] = result[f"torch_{name}_s"] / result[f"jax_composed_{name}_s"]
  result["loss_jax"] = jax_value
  result["loss_torch"] = torch_out
  result["loss_abs_diff"] = abs(jax_value - torch_out)
  result["load_average_end"] = os.getloadavg()[0]  # other processes on the machine skew absolute times
  result["target_speedup"] = 2.0
  result["meets_target"] = bool(min(result["speedup_value"], result["speedup_value_and_grad"]) >= 2.0)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--points", type=int, default=65536)
  parser.add_argument("--prototypes", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--alpha", type=float, default=1.3)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "objective.json"))
  args = parser.parse_args(argv)
  result = run(args.points, args.prototypes, args.repeats, args.iters, args.alpha)
  text = json.dumps(result, indent=2, sort_keys=True)
  print(text)
  if args.out:
    fileio.write_text(args.out, text + "\n")
  return result


if __name__ == "__main__":
  main()
