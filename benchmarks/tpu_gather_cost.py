r"""What the TPU compiler charges for the CPE's neighbour gather: its `bytes accessed` per gathered row.

  python -m benchmarks.tpu_gather_cost --config configs/scannet.py --config.batch_size=64 \
      --config.model.dtype=bfloat16 --out /tmp/tpu_gather_cost.json

Compiled for the topology (libtpu, no TPU needed), on one device's pack of the config's packed shapes:
- `rows`: a row gather x[index] of the stage-0 teacher's 27 x N_0 neighbour rows from [N_0, C], for several row
  widths C and dtypes: the compiler's bytes accessed per gathered row, against the row's own bytes.
- `stages`: per encoder stage, the CPE's gather + conv as the model runs it (`blocks.gather_rows`, then the
  [N, 27 C] x [27 C, C] matmul) against the same matmul on a dense [N, 27 C] input: the teacher's forward and the
  student's forward + backward, each per block and per step (x the stage's depth). The difference is what the
  gather (and its transpose) is charged.
- `forms`: stage 0's teacher gather + conv as the model runs it (`stages`' entry) and other ways to write it in
  XLA, each the same function of x, for what the compiler charges them (bytes) and estimates (cycles): without
  the batch axis, the source padded to 128 lanes, gathered along lanes of x^T, whole 8-row tiles, C-long slices
  of the flattened array, and the push (scatter-add) form.
The sum over stages is the share of the train step's `bytes accessed` (benchmarks/RESULTS.md) that is the CPE's
gathers. These are the compiler's cost-model numbers, not measurements.
"""

from __future__ import annotations

from dos_jax import compile_only

compile_only.use_compile_only_tpu()  # before JAX is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dos_jax import hlo_costs  # noqa: E402
from dos_jax import io  # noqa: E402
from dos_jax import schema  # noqa: E402
from dos_jax import variants  # noqa: E402
from dos_jax.models import blocks  # noqa: E402
from dos_jax.train import aot  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (packed).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology as libtpu names it.")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
flags.mark_flags_as_required(["config", "out"])

ROW_WIDTHS = ((16, "bfloat16"), (48, "bfloat16"), (128, "bfloat16"), (256, "bfloat16"), (48, "float32"))


def _costs(fn, *shapes, sharding) -> dict:
  """The compiler's bytes accessed and flops, and the parsed estimated cycles, of fn at `shapes`."""
  args = [jax.ShapeDtypeStruct(s, d, sharding=sharding) for s, d in shapes]
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  parsed = hlo_costs.parsed_totals(hlo_costs.instruction_costs(compiled.as_text()))
  return {"bytes_accessed": float(cost["bytes accessed"]), "flops": float(cost["flops"]),
          "estimated_cycles": parsed["estimated_cycles"]}


def _conv(gathered, kernel):
  return gathered.reshape(gathered.shape[:2] + (-1,)) @ kernel


def row_costs(n: int, sharding) -> list:
  """Bytes accessed per gathered row of x[index], index i32[27 n] into x[n, C], per (C, dtype)."""
  out = []
  for width, dtype in ROW_WIDTHS:
    c = _costs(lambda x, i: x[i], ((n, width), jnp.dtype(dtype)), ((27 * n,), jnp.int32), sharding=sharding)
    row_bytes = width * jnp.dtype(dtype).itemsize
    out.append({"channels": width, "dtype": dtype, "rows": 27 * n, "row_bytes": row_bytes,
                "charged_per_row": c["bytes_accessed"] / (27 * n),
                "charged_over_row_bytes": c["bytes_accessed"] / (27 * n) / row_bytes,
                "estimated_cycles": c["estimated_cycles"]})
  return out


def _flat_slices(flat, starts, size):
  """flat[starts[i] : starts[i] + size] for each i: a gather of C-long slices from a 1-D array."""
  dims = jax.lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(), start_index_map=(0,))
  return jax.lax.gather(flat, starts[:, None], dims, slice_sizes=(size,), mode="promise_in_bounds")


def form_costs(n: int, c: int, dtype, sharding, model: dict, dense: dict) -> dict:
  """Stage 0's teacher gather + conv, x[n, C], neighbours i32[n, 27] -> [n, C], written several ways (forward).

  `model` and `dense` are `stage_costs`' stage-0 teacher entries (the model's batched form, the dense conv),
  reported beside the other forms, not compiled again."""
  k = blocks.NUM_NEIGHBORS

  def padded(x):
    return jnp.pad(x, ((0, 1), (0, 0)))

  def rows(x, nb, w):      # the model's form without its batch axis
    return padded(x)[nb.reshape(-1)].reshape(n, k * c) @ w

  def rows_128(x, nb, w):  # rows_unbatched with the source rows padded to one 128-lane tile row
    return jnp.pad(x, ((0, 1), (0, 128 - c)))[nb.reshape(-1)][:, :c].reshape(n, k * c) @ w

  def lanes(x, nb, w):     # x^T [C, n], gathered along its lanes
    g = jnp.take(padded(x).T, nb.T.reshape(-1), axis=1).reshape(c * k, n)
    return (w.reshape(k, c, c).transpose(1, 0, 2).reshape(c * k, c).T @ g).T

  def flat(x, nb, w):      # C-long slices of the flattened array
    return _flat_slices(padded(x).reshape(-1), nb.reshape(-1) * c, c).reshape(n, k * c) @ w

  def push(x, nb, w):      # y[j, k] = x[j] W_k, scattered to the point whose k-neighbour j is (mirror offset)
    y = jnp.einsum("nc,kcd->nkd", x, w.reshape(k, c, c))
    out = jnp.zeros((n + 1, c), x.dtype).at[nb[:, ::-1].reshape(-1)].add(y.reshape(n * k, c), mode="drop")
    return out[:n]

  shapes = (((n, c), dtype), ((n, k), jnp.int32), ((k * c, c), dtype))
  out = {"model": model}
  out.update({name: _costs(fn, *shapes, sharding=sharding)
              for name, fn in (("rows_unbatched", rows), ("rows_padded_to_128_lanes", rows_128),
                               ("lanes_of_transpose", lanes), ("flat_slices", flat), ("push_scatter_add", push))})
  # Whole (8, C) tiles: the charge per gathered unit when the unit is a tile (not the same function: 27 n / 8 tiles).
  out["whole_8_row_tiles_gather_only"] = _costs(lambda x, i: x.reshape(n // 8, 8, c)[i], ((n // 8 * 8, c), dtype),
                                                ((k * n // 8,), jnp.int32), sharding=sharding)
  out["rows_gather_only"] = _costs(lambda x, i: x[i], ((n, c), dtype), ((k * n,), jnp.int32), sharding=sharding)
  out["dense_conv"] = dense
  return out


def stage_costs(config, sharding) -> dict:
  devices = aot.topology_devices(_TOPOLOGY.value)
  n_dev = schema.data_parallel_devices(config, len(devices))
  example = aot.example_batch(config, int(config.batch_size) // n_dev)
  arch = variants.upstream_architecture(config.model) or variants.variant_architecture(config.model.variant)
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  out = {}
  for s, c in enumerate(arch.channels):
    row = {"channels": c, "blocks": arch.depths[s]}
    for branch in ("teacher", "student"):
      n = int(getattr(example, branch).stages[s].valid.shape[1])
      x, nb, w = ((1, n, c), dtype), ((1, n, blocks.NUM_NEIGHBORS), jnp.int32), ((27 * c, c), dtype)
      dense = ((1, n, 27 * c), dtype)
      gather_conv = lambda x, nb, w: _conv(blocks.gather_rows(x, nb), w)  # noqa: E731
      if branch == "teacher":
        with_gather = _costs(gather_conv, x, nb, w, sharding=sharding)
        without = _costs(lambda d, w: d @ w, dense, w, sharding=sharding)
      else:
        with_gather = _costs(jax.grad(lambda x, w, nb: jnp.sum(gather_conv(x, nb, w).astype(jnp.float32) ** 2),
                                      argnums=(0, 1)), x, w, nb, sharding=sharding)
        without = _costs(jax.grad(lambda d, w: jnp.sum((d @ w).astype(jnp.float32) ** 2), argnums=(0, 1)),
                         dense, w, sharding=sharding)
      gather = with_gather["bytes_accessed"] - without["bytes_accessed"]
      row[branch] = {"slots": n, "gathered_bytes": 27 * n * c * jnp.dtype(dtype).itemsize,
                     "gather_conv": with_gather, "dense_conv": without, "gather_charged_per_block": gather,
                     "gather_charged_per_step": gather * arch.depths[s]}
    out[s] = row
  return out


def main(argv):
  del argv
  config = schema.validate(_CONFIG.value)
  devices = aot.topology_devices(_TOPOLOGY.value)
  sharding = jax.sharding.SingleDeviceSharding(devices[0])
  stages = stage_costs(config, sharding)
  n0 = stages[0]["teacher"]["slots"]
  total = sum(r[b]["gather_charged_per_step"] for r in stages.values() for b in ("teacher", "student"))
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  forms = form_costs(n0, stages[0]["channels"], dtype, sharding, stages[0]["teacher"]["gather_conv"],
                     stages[0]["teacher"]["dense_conv"])
  result = {"config": config_flags.get_config_filename(flags.FLAGS["config"]), "topology": _TOPOLOGY.value,
            "dtype": str(config.model.dtype), "rows": row_costs(n0, sharding), "stages": stages,
            "forms": forms,
            "cpe_gathers_charged_per_step": total,
            "note": "compiler cost model (bytes accessed), not measurements; teacher: forward, student: forward "
                    "+ backward (the gather's transpose is a scatter-add)"}
  io.write_json(_OUT.value, result)
  for r in result["rows"]:
    print(f"row gather C={r['channels']} {r['dtype']}: {r['charged_per_row']:.0f} B charged per {r['row_bytes']} B "
          f"row (x{r['charged_over_row_bytes']:.1f})")
  for s, r in stages.items():
    print(f"stage {s}: CPE gather charged {r['teacher']['gather_charged_per_step'] / 1e9:.1f} GB (teacher) + "
          f"{r['student']['gather_charged_per_step'] / 1e9:.1f} GB (student) per step, {r['blocks']} blocks")
  print(f"CPE gathers charged per step: {total / 1e9:.1f} GB")
  for name, c in forms.items():
    print(f"stage-0 teacher form {name}: {c['bytes_accessed'] / 1e9:.2f} GB, {c['estimated_cycles'] / 1e6:.2f} M cycles")


if __name__ == "__main__":
  app.run(main)
