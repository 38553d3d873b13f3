r"""Patch attention compiled for a TPU: XLA's formulation vs the flash kernel (`dos_jax.models.attention`), per stage.

  python -m benchmarks.tpu_attention --config configs/scannet.py --topology v5e:2x2 --out benchmarks/tpu_attention.json

For each encoder stage of the config (packed sequence length L, heads H, head width D, patch P, blocks per
stage), compiles for the topology (libtpu, no TPU needed) one device's attention core on its pack, exactly as
`SerializedAttention._packed` calls it ([L/P patches, P, H, D], segment masks), in two programs: the teacher's
forward and the student's forward + backward, once with XLA's `jax.nn.dot_product_attention` and once with
`attention.segment_attention` (the kernel). Reports the compiler's bytes accessed and flops of each, and their sums
over the blocks of the step (teacher forward + student forward/backward per block). Note: the compiler counts a
Pallas kernel's flops and bytes from the kernel's own cost estimate, so the flops of the kernel programs are not
comparable to XLA's; the attention flops are 4 L P H D per forward (QK^T and PV), 2.5x that forward + backward.
"""

from __future__ import annotations

import time

from dos_jax import compile_only

compile_only.use_compile_only_tpu()  # before JAX is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dos_jax import io  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.batching import spec as spec_lib  # noqa: E402
from dos_jax.models import attention  # noqa: E402
from dos_jax.train import aot  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (packed).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology as libtpu names it.")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
flags.mark_flags_as_required(["config", "out"])


def _cost(fn, args):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"bytes": float(cost["bytes accessed"]), "flops": float(cost["flops"]),
          "compile_s": round(time.perf_counter() - t0, 1)}


def stage_costs(mesh, length, heads, width, patch, dtype):
  """Compiler costs of one device's attention core at one stage: teacher forward, student forward + backward."""
  n = mesh.devices.size
  p = min(patch, length)
  groups = -(-length // p)
  shard = NamedSharding(mesh, P(mesh.axis_names))
  x = jax.ShapeDtypeStruct((groups * n, p, heads, width), dtype, sharding=shard)
  seg = jax.ShapeDtypeStruct((groups * n, p), jnp.int32, sharding=shard)

  def core(use_kernel):
    def attend(q, k, v, s):
      ref = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
          q, k, v, mask=(s[:, :, None] == s[:, None, :])[:, None])
      if not use_kernel:
        return ref(q, k, v)
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return attention.segment_attention(q, k, v, s, s, ref)
    return attend

  out = {"length": length, "heads": heads, "width": width, "patch": p, "patches_per_device": groups}
  for name, use_kernel in (("xla", False), ("kernel", True)):
    attend = core(use_kernel)
    fwd = lambda q, k, v, s, attend=attend: attend(q, k, v, s)  # noqa: E731
    grad = jax.grad(lambda q, k, v, s, attend=attend: jnp.sum(attend(q, k, v, s).astype(jnp.float32) ** 2),
                    argnums=(0, 1, 2))
    out[name] = {"teacher_forward": _cost(fwd, (x, x, x, seg)), "student_fwd_bwd": _cost(grad, (x, x, x, seg))}
  return out


def main(argv):
  del argv
  config = schema.validate(_CONFIG.value)
  spec = spec_lib.pipeline_spec(config)
  arch = variants.upstream_architecture(config.model) or variants.variant_architecture(config.model.variant)
  heads, channels, depths = arch.heads, arch.channels, arch.depths
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  mesh = Mesh(np.asarray(aot.topology_devices(_TOPOLOGY.value)), ("data",))
  packs = int(config.batch_size) // int(config.data.pack_scenes) // mesh.devices.size
  stages, totals = [], {"xla": 0.0, "kernel": 0.0}
  for s in range(len(channels)):
    width = channels[s] // heads[s]
    for branch, lengths in (("teacher", spec.pack.teacher_sequence), ("student", spec.pack.student_sequence)):
      row = stage_costs(mesh, lengths[s] * packs, heads[s], width, arch.patch_sizes[s], dtype)
      row.update(stage=s, branch=branch, blocks=depths[s])
      key = "teacher_forward" if branch == "teacher" else "student_fwd_bwd"
      for name in totals:
        totals[name] += depths[s] * row[name][key]["bytes"]
      stages.append(row)
      print(f"stage {s} {branch}: L={row['length']} H={heads[s]} D={width}: bytes per block xla "
            f"{row['xla'][key]['bytes'] / 1e9:.3f} GB, kernel {row['kernel'][key]['bytes'] / 1e9:.3f} GB")
  result = {"config": config_flags.get_config_filename(flags.FLAGS["config"]), "topology": _TOPOLOGY.value,
            "dtype": str(np.dtype(dtype)) if dtype != jnp.bfloat16 else "bfloat16", "packs_per_device": packs,
            "step_attention_bytes_per_device": totals, "stages": stages}
  io.write_json(_OUT.value, result)
  print(f"attention cores per step and device: XLA {totals['xla'] / 1e9:.1f} GB, kernel "
        f"{totals['kernel'] / 1e9:.1f} GB")


if __name__ == "__main__":
  app.run(main)
