r"""Patch attention compiled for a TPU: XLA's formulation vs the two TPU kernels (`dos_jax.models.attention`), per stage.

  python -m benchmarks.tpu_attention --config configs/scannet.py --topology v5e:2x2 --out benchmarks/tpu_attention.json

For each encoder stage of the config (packed sequence length L, heads H, head width D, patch P, blocks per
stage), compiles for the topology (libtpu, no TPU needed) one device's attention core on its pack, exactly as
`SerializedAttention._packed` calls it ([L/P patches, P, H, D], segment masks), in two programs: the teacher's
forward or the student's forward + backward (the one the branch runs), with XLA's `jax.nn.dot_product_attention`
and with `attention.segment_attention` under each TPU kernel: the generic Pallas flash kernel and the project's
positions-minor `patch_kernel`. Reports the compiler's bytes accessed and flops of each, and their sums
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


KERNELS = ("xla", "flash", "patch")  # XLA's formulation; attention.segment_attention with either TPU kernel


def stage_costs(mesh, length, heads, width, patch, dtype, program):
  """Compiler costs of one device's attention core at one stage, for one program: 'teacher_forward' or
  'student_fwd_bwd' (only the one the branch runs is compiled)."""
  n = mesh.devices.size
  p = min(patch, length)
  groups = -(-length // p)
  shard = NamedSharding(mesh, P(mesh.axis_names))
  x = jax.ShapeDtypeStruct((groups * n, p, heads, width), dtype, sharding=shard)
  seg = jax.ShapeDtypeStruct((groups * n, p), jnp.int32, sharding=shard)

  def core(kernel):
    def attend(q, k, v, s):
      ref = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
          q, k, v, mask=(s[:, :, None] == s[:, None, :])[:, None])
      if kernel == "xla":
        return ref(q, k, v)
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return attention.segment_attention(q, k, v, s, s, ref, kernel=kernel)
    return attend

  out = {"length": length, "heads": heads, "width": width, "patch": p, "patches_per_device": groups}
  for kernel in KERNELS:
    attend = core(kernel)
    if program == "teacher_forward":
      fn = attend
    else:
      fn = jax.grad(lambda q, k, v, s, attend=attend: jnp.sum(attend(q, k, v, s).astype(jnp.float32) ** 2),
                    argnums=(0, 1, 2))
    out[kernel] = {program: _cost(fn, (x, x, x, seg))}
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
  stages, totals = [], dict.fromkeys(KERNELS, 0.0)
  for s in range(len(channels)):
    width = channels[s] // heads[s]
    for branch, lengths in (("teacher", spec.pack.teacher_sequence), ("student", spec.pack.student_sequence)):
      key = "teacher_forward" if branch == "teacher" else "student_fwd_bwd"
      row = stage_costs(mesh, lengths[s] * packs, heads[s], width, arch.patch_sizes[s], dtype, key)
      row.update(stage=s, branch=branch, blocks=depths[s])
      for name in totals:
        totals[name] += depths[s] * row[name][key]["bytes"]
      stages.append(row)
      print(f"stage {s} {branch}: L={row['length']} H={heads[s]} D={width}: bytes per block "
            + ", ".join(f"{name} {row[name][key]['bytes'] / 1e9:.3f} GB" for name in KERNELS))
  result = {"config": config_flags.get_config_filename(flags.FLAGS["config"]), "topology": _TOPOLOGY.value,
            "dtype": str(np.dtype(dtype)) if dtype != jnp.bfloat16 else "bfloat16", "packs_per_device": packs,
            "step_attention_bytes_per_device": totals, "stages": stages}
  io.write_json(_OUT.value, result)
  print("attention cores per step and device: " + ", ".join(f"{name} {totals[name] / 1e9:.1f} GB"
                                                            for name in KERNELS))


if __name__ == "__main__":
  app.run(main)
