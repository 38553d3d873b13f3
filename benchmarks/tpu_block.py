r"""One PTv3 block per encoder stage compiled for a TPU at the train step's packed shapes: where a block's time goes.

  python -m benchmarks.tpu_block --config configs/scannet.py --topology v5e:2x2 --config.batch_size=64 \
      --out /tmp/tpu_block.json [--stages 0,1]

For each stage of the config, builds that stage's `blocks.Block` (channels, heads, patch, dtype of the config)
and compiles for the topology (libtpu, no TPU needed), on one device's pack of a synthetic batch, two programs:
the teacher's forward and the student's forward + backward (grads of params and input). Per program it reports
the compiler's bytes accessed and flops, the sum of its per-kernel estimated cycles, the parsed HBM bytes
(`hlo_costs.instruction_costs`), the estimated cycles by part (CPE, serialization gathers, attention, ...:
`benchmarks.tpu_parts.part_of`) and how many `pad` ops the attention's serialization left (a pad of a
sequence copies it whole; round 8 removed them). A block compiles in ~1 minute, a full step in 16-30, so this
is the loop for trying a change to the block. The blocks' sum is not the step (no fusion across blocks, no
stem, pooling, upcast, head or loss).
"""

from __future__ import annotations

import collections

from dos_jax import compile_only

compile_only.use_compile_only_tpu()  # before JAX is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import tpu_parts  # noqa: E402
from dos_jax import hlo_costs  # noqa: E402
from dos_jax import io  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.models import blocks  # noqa: E402
from dos_jax.train import aot  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (packed).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology as libtpu names it.")
_STAGES = flags.DEFINE_list("stages", None, "Encoder stages to compile (default: all).")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
flags.mark_flags_as_required(["config", "out"])


def _abstract(tree, sharding):
  """Arrays or shape structs -> shape structs on `sharding`."""
  return jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), np.dtype(v.dtype), sharding=sharding), tree)


def program_costs(compiled) -> dict:
  """The compiler's totals, the parsed ones and the estimated cycles by part of one compiled block program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  text = compiled.as_text()
  rows = hlo_costs.instruction_costs(text)
  parts = collections.Counter()
  for r in rows:
    # A block compiled alone has no model path in its op names: prefix one so part_of reads the module scopes.
    parts[tpu_parts.part_of("PointTransformerV3/enc0/block0/" + r["op_name"].split("Block/", 1)[-1],
                                r["opcode"])] += r["cycles"]
  parsed = hlo_costs.parsed_totals(rows)
  return {"bytes_accessed": float(cost["bytes accessed"]), "flops": float(cost["flops"]),
          "estimated_cycles": parsed["estimated_cycles"], "hbm_bytes": parsed["hbm_bytes"],
          "cycles_by_part": dict(parts.most_common()),
          "attention_pads": sum(1 for r in rows if r["opcode"] == "pad" and "attn._packed" in r["op_name"])}


def block_costs(config, topology: str, stages=None) -> dict:
  """{stage: {'teacher_forward': costs, 'student_fwd_bwd': costs, ...}} for one device of `topology`."""
  devices = aot.topology_devices(topology)
  n = schema.data_parallel_devices(config, len(devices))
  example = aot.example_batch(config, int(config.batch_size) // n)
  arch = variants.upstream_architecture(config.model) or variants.variant_architecture(config.model.variant)
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  mesh = Mesh(np.asarray(devices[:1]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  out = {}
  for s in (range(len(arch.channels)) if stages is None else stages):
    block = blocks.Block(arch.channels[s], arch.heads[s], arch.patch_sizes[s], order_index=0,
                         mlp_ratio=float(config.model.get("mlp_ratio", 4.0)), drop_path=0.1, dtype=dtype)
    row = {"channels": arch.channels[s], "heads": arch.heads[s], "blocks": arch.depths[s]}
    for branch, program in (("teacher", "teacher_forward"), ("student", "student_fwd_bwd")):
      stage = getattr(example, branch).stages[s]
      # The block's input in the compute dtype, as the encoder's residual stream is: a float32 input would add a
      # cast in front of the CPE's gather that the step does not have (round 10: it made a cast-then-gather
      # change look 18% cheaper per block that left the whole step unchanged).
      x = jax.ShapeDtypeStruct((stage.valid.shape[0], stage.valid.shape[1], arch.channels[s]), dtype,
                               sharding=sharding)
      params = jax.eval_shape(lambda stage=stage, x=x: block.init(jax.random.key(0), jnp.zeros(x.shape), stage, False))
      args = (_abstract(params, sharding), x, _abstract(stage, sharding))
      if program == "teacher_forward":
        fn = lambda p, x, st: block.apply(p, x, st, False)  # noqa: E731
      else:
        fn = jax.grad(lambda p, x, st: jnp.sum(block.apply(p, x, st, False).astype(jnp.float32) ** 2),
                      argnums=(0, 1))
      with jax.set_mesh(mesh):  # the packed attention takes the TPU kernel only under a mesh, as in the step
        compiled = jax.jit(fn).lower(*args).compile()
      row[program] = program_costs(compiled)
      row[f"{branch}_slots"] = int(stage.valid.shape[1])
    out[s] = row
  return out


def main(argv):
  del argv
  config = schema.validate(_CONFIG.value)
  stages = None if _STAGES.value is None else [int(s) for s in _STAGES.value]
  result = {"config": config_flags.get_config_filename(flags.FLAGS["config"]), "topology": _TOPOLOGY.value,
            "dtype": str(config.model.dtype), "stages": block_costs(config, _TOPOLOGY.value, stages)}
  io.write_json(_OUT.value, result)
  for s, row in result["stages"].items():
    for program in ("teacher_forward", "student_fwd_bwd"):
      c = row[program]
      print(f"stage {s} {program}: {c['estimated_cycles'] / 1e6:.2f} M cycles, {c['bytes_accessed'] / 1e9:.3f} GB "
            f"accessed, {c['hbm_bytes'] / 1e9:.3f} GB HBM; x {row['blocks']} blocks")


if __name__ == "__main__":
  app.run(main)
