r"""Where a TPU train step's time, HBM bytes and flops go: per-kernel costs of the compiled program, by part of the model.

  python -m benchmarks.tpu_breakdown --config configs/scannet.py --topology v5e:2x2 --config.batch_size=16 \
      --out benchmarks/tpu_breakdown_scannet_v5e.json [--save_hlo /tmp/step.hlo.txt]
  python -m benchmarks.tpu_breakdown --hlo /tmp/step.hlo.txt --out ...      # re-read a saved program

Compiles the training step ahead of time for the topology (`dos_jax.train.aot`, libtpu; as `launch.compile`),
then splits the compiled HLO's kernels (`hlo_costs.instruction_costs`) into the parts below by the op names
JAX records (Flax module paths and the step's named scopes). Per part:
- cycles: the TPU compiler's own per-kernel estimate (`estimated_cycles`; fusions only: gathers, Pallas kernels
  and memory-space copies carry none). Where the compiler's cost model puts the step's time.
- hbm_bytes: each kernel's operands and output that live in HBM, once (arrays placed in VMEM excluded).
  The totals also give them at their tiled sizes (`parsed_hbm_tiled_bytes`: a 48-channel row moves 128 lanes).
- bytes: the same in any memory space; flops: of its dots and arithmetic.
Writes one small JSON: the `launch.compile` report (when compiling), each part's totals and shares, the parsed
totals beside the compiler's own, and the 25 kernels with the most estimated cycles. The shares are what the
report is for: the compiler's `bytes accessed` also counts VMEM reads and re-reads, so no parsed total equals it.
"""

from __future__ import annotations

from dos_jax import compile_only

compile_only.use_compile_only_tpu()  # before JAX is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks.tpu_parts import part_of, stage_of  # noqa: E402
from dos_jax import compile_report  # noqa: E402
from dos_jax import hlo_costs  # noqa: E402
from dos_jax import io  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology as libtpu names it.")
_HLO = flags.DEFINE_string("hlo", None, "Analyse this saved HLO text instead of compiling.")
_SAVE_HLO = flags.DEFINE_string("save_hlo", None, "Also save the compiled HLO text here (large; not in the repo).")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
flags.mark_flags_as_required(["out"])

_SUMMED = ("bytes", "hbm_bytes", "flops", "cycles")


def _tally(rows, keys, totals) -> dict:
  """{key: bytes, hbm_bytes, flops, cycles, kernels and their shares of the totals} over the rows with a
  non-empty key."""
  groups = {}
  for r, key in zip(rows, keys):
    if key:
      g = groups.setdefault(key, dict.fromkeys(_SUMMED + ("kernels",), 0))
      for k in _SUMMED:
        g[k] += r[k]
      g["kernels"] += 1
  for g in groups.values():
    for k in _SUMMED:
      g[f"{k}_share"] = round(g[k] / (totals[k] or 1), 4)
  return groups


def breakdown(hlo_text: str) -> dict:
  rows = hlo_costs.instruction_costs(hlo_text)
  parts = [part_of(r["op_name"], r["opcode"]) for r in rows]
  totals = {k: sum(r[k] for r in rows) for k in _SUMMED}
  by_part = _tally(rows, parts, totals)
  by_stage = _tally(rows, [stage_of(r["op_name"]) for r in rows], totals)
  top = sorted(range(len(rows)), key=lambda i: -rows[i]["cycles"])[:25]
  parsed = hlo_costs.parsed_totals(rows)
  return {"parsed_bytes": totals["bytes"], "parsed_hbm_bytes": parsed["hbm_bytes"],
          "parsed_hbm_tiled_bytes": parsed["hbm_tiled_bytes"],
          "parsed_flops": totals["flops"], "estimated_cycles": parsed["estimated_cycles"],
          "kernels": parsed["kernels"], "kernels_with_cycles": parsed["kernels_with_cycles"],
          "parts": dict(sorted(by_part.items(), key=lambda kv: -kv[1]["cycles"])),
          "encoder_stages": dict(sorted(by_stage.items())),
          "top_kernels": [{"part": parts[i], "opcode": rows[i]["opcode"], "cycles": rows[i]["cycles"],
                           "bytes": rows[i]["bytes"], "hbm_bytes": rows[i]["hbm_bytes"], "flops": rows[i]["flops"],
                           "op_name": rows[i]["op_name"][:160]} for i in top]}


def main(argv):
  del argv
  result = {}
  if _HLO.value:
    with open(_HLO.value) as f:
      text = f.read()
    result["hlo"] = _HLO.value
  else:
    from dos_jax import schema  # pylint: disable=g-import-not-at-top
    from dos_jax.train import aot  # pylint: disable=g-import-not-at-top
    config = schema.validate(_CONFIG.value)
    compiled = aot.compile_train_step(config, aot.topology_devices(_TOPOLOGY.value))
    text = compiled.compiled.as_text()
    result["report"] = compiled.report(compile_report.chip_spec(_TOPOLOGY.value), hlo_text=text,
                                       config=config_flags.get_config_filename(flags.FLAGS["config"]),
                                       topology=_TOPOLOGY.value)
    if _SAVE_HLO.value:
      io.write_text(_SAVE_HLO.value, text)
  result["breakdown"] = breakdown(text)
  io.write_json(_OUT.value, result)
  for name, p in result["breakdown"]["parts"].items():
    print(f"{name:45s} cycles {100 * p['cycles_share']:5.1f}%  HBM bytes {100 * p['hbm_bytes_share']:5.1f}%  "
          f"bytes {100 * p['bytes_share']:5.1f}%  flops {100 * p['flops_share']:5.1f}%  kernels {p['kernels']}")


if __name__ == "__main__":
  app.run(main)
