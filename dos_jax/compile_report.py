"""Reading a compiled step without running it: memory per chip, the compiler's cost, a roofline, HLO op counts.

Pure functions over what `jax.jit(...).lower(...).compile()` returns (any object with `memory_analysis()`,
`cost_analysis()` and `as_text()`), so they work for a TPU compiled ahead of time on a CPU machine
(`dos_jax.train.aot`), a CPU compile, or a stand-in object in tests.

  chip = compile_report.chip_spec("v5e:2x2")                      # the chip table entry for a topology name
  report = compile_report.build(compiled, chip, devices=4, devices_per_chip=1, scenes_per_step=16)
  print(compile_report.one_line(report))

Numbers are per chip. The compiler's `memory_analysis` and `cost_analysis` describe one device's program (SPMD:
every device runs the same one); a chip with several devices in the topology (v4: its two TensorCores are two
devices) holds and runs `devices_per_chip` of them.

The roofline step time is max(flops / peak, bytes / bandwidth) with the chip's bf16 peak and HBM bandwidth: a
lower bound for the step on that chip, and the MFU it implies (model flops / peak over that time) an upper bound.
The compiler's `optimal_seconds` is reported only when positive (it can come out negative on large steps).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional

from dos_jax import hlo_costs

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures of a TPU generation (Cloud TPU documentation).

  Attributes:
    name: the generation as topology names spell it ('v5e').
    hbm_gib: HBM per chip, GiB.
    peak_tflops: bf16 peak, TFLOP/s per chip.
    hbm_gbps: HBM bandwidth, GB/s (1e9 bytes) per chip.
  """
  name: str
  hbm_gib: float
  peak_tflops: float
  hbm_gbps: float


CHIPS: Dict[str, Chip] = {c.name: c for c in (
    Chip("v4", hbm_gib=32, peak_tflops=275, hbm_gbps=1200),
    Chip("v5e", hbm_gib=16, peak_tflops=197, hbm_gbps=819),
    Chip("v5p", hbm_gib=95, peak_tflops=459, hbm_gbps=2765),
    Chip("v6e", hbm_gib=32, peak_tflops=918, hbm_gbps=1640),
)}
# Other spellings of the generations (topology-name prefixes and `device.device_kind`).
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "tpu v5 lite": "v5e", "tpu v5e": "v5e", "tpu v5p": "v5p",
            "tpu v5": "v5p", "tpu v4": "v4", "tpu v6 lite": "v6e", "tpu v6e": "v6e", "v6": "v6e"}


def chip_spec(name: str) -> Optional[Chip]:
  """The table entry for a topology name ('v5e:2x2', 'v5litepod-16') or a device kind ('TPU v5 lite'); None if
  the generation is not in the table."""
  key = str(name).strip().lower()
  key = re.split(r"[:=_\-]", key, maxsplit=1)[0] if not key.startswith("tpu ") else key
  return CHIPS.get(_ALIASES.get(key, key))


# ------------------------------------------------------------------------------------------------ the report
def _cost(compiled) -> Dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return dict(cost or {})


def memory_per_device(compiled) -> Dict[str, int]:
  """Bytes of one device's program by kind (XLA's memory_analysis) and their total: arguments + outputs -
  aliased (donated state buffers that the outputs reuse are counted once) + temporaries + generated code."""
  m = compiled.memory_analysis()
  kinds = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "alias": int(getattr(m, "alias_size_in_bytes", 0) or 0), "temp": int(m.temp_size_in_bytes),
           "generated_code": int(getattr(m, "generated_code_size_in_bytes", 0) or 0)}
  kinds["total"] = kinds["argument"] + kinds["output"] - kinds["alias"] + kinds["temp"] + kinds["generated_code"]
  return kinds


def roofline(flops: float, bytes_accessed: float, chip: Chip) -> Dict[str, Any]:
  """Per-chip step-time bound max(flops / peak, bytes / bandwidth), which of the two binds, and the implied MFU
  (flops / peak over that time, a fraction)."""
  compute_s = float(flops) / (chip.peak_tflops * 1e12)
  memory_s = float(bytes_accessed) / (chip.hbm_gbps * 1e9)
  step_s = max(compute_s, memory_s)
  return {"compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
          "bound": "memory" if memory_s > compute_s else "compute",
          "mfu": compute_s / step_s if step_s > 0 else 0.0,
          "flops_per_byte": float(flops) / float(bytes_accessed) if bytes_accessed else None}


def build(compiled, chip: Chip, devices: int, devices_per_chip: int = 1, scenes_per_step: Optional[int] = None,
          hlo_text: Optional[str] = None, **extra) -> Dict[str, Any]:
  """The report of one compiled step (a JSON-ready dict; `one_line` prints it).

  Args:
    compiled: a compiled JAX program (memory_analysis / cost_analysis / as_text).
    chip: the target chip's table entry.
    devices: devices of the mesh the step runs on; chips = devices / devices_per_chip.
    devices_per_chip: devices the topology gives each chip (v4: 2).
    scenes_per_step: global scenes per step (for scenes/s per chip), or None.
    hlo_text: the compiled HLO text (default: `compiled.as_text()`).
    extra: more top-level keys (config, topology, compile_seconds, ...).
  """
  dpc = int(devices_per_chip)
  chips = max(1, int(devices) // dpc)
  mem = {k: v * dpc for k, v in memory_per_device(compiled).items()}
  cost = _cost(compiled)
  text = compiled.as_text() if hlo_text is None else hlo_text
  rows = hlo_costs.instruction_costs(text)
  totals = hlo_costs.parsed_totals(rows)
  # XLA's cost analysis counts a while loop's body once (a 10-step lax.scan of a 1024^3 matmul reports 1/10 of
  # its flops); scale its totals by the parsed program's per-step / once-per-loop ratio (1 without loops).
  once = {k: sum(r[k] / r["runs"] for r in rows) for k in ("flops", "bytes")}
  loop_scale = {k: (sum(r[k] for r in rows) / once[k]) if once[k] else 1.0 for k in once}
  compiler = {"flops_per_chip": float(cost.get("flops", 0.0)) * dpc,
              "bytes_accessed_per_chip": float(cost.get("bytes accessed", 0.0)) * dpc, "loop_scale": loop_scale}
  flops = compiler["flops_per_chip"] * loop_scale["flops"]
  bytes_accessed = compiler["bytes_accessed_per_chip"] * loop_scale["bytes"]
  optimal = cost.get("optimal_seconds")
  hbm = int(chip.hbm_gib * GIB)
  line = roofline(flops, bytes_accessed, chip)
  parsed_hbm = totals["hbm_bytes"] * dpc
  parsed_tiled = totals["hbm_tiled_bytes"] * dpc
  report = dict(extra)
  report.update({
      "chip": dataclasses.asdict(chip), "devices": int(devices), "chips": chips, "devices_per_chip": dpc,
      "fits": mem["total"] <= hbm, "hbm_bytes_per_chip": hbm, "memory_per_chip": mem,
      "flops_per_chip": flops, "bytes_accessed_per_chip": bytes_accessed,
      "compiler_loop_bodies_once": compiler,
      "optimal_seconds": float(optimal) if optimal is not None and float(optimal) > 0 else None,
      "roofline": line, "ops": hlo_costs.op_summary(text),
      # From the compiled HLO (`instruction_costs`): HBM traffic with each kernel touching its HBM arrays once
      # (VMEM-resident arrays excluded; the compiler's bytes accessed counts those too), the roofline on it (a
      # lower bound), the same at the arrays' tiled sizes (what HBM moves: a 48-channel row fills 128 lanes), and
      # the sum of the compiler's per-kernel cycle estimates (fusions only).
      "parsed": {"hbm_bytes_per_chip": parsed_hbm, "roofline_hbm": roofline(flops, parsed_hbm, chip),
                 "hbm_tiled_bytes_per_chip": parsed_tiled, "roofline_hbm_tiled": roofline(flops, parsed_tiled, chip),
                 "estimated_cycles": totals["estimated_cycles"], "kernels_with_cycles": totals["kernels_with_cycles"],
                 "kernels": totals["kernels"]}})
  if scenes_per_step is not None:
    report["scenes_per_step"] = int(scenes_per_step)
    report["scenes_per_chip"] = int(scenes_per_step) / chips
    report["scenes_per_s_per_chip"] = (int(scenes_per_step) / chips / line["step_s"]) if line["step_s"] else None
  return report


_REQUIRED = re.compile(r"memory required for HLO temporaries \(([\d.]+)([KMGT])\)\D+available HBM \(([\d.]+)([KMGT])\)")


def refused(error: Exception, chip: Chip, config: str, topology: str) -> Dict[str, Any]:
  """The report of a step the TPU compiler refused for lack of HBM (`fits` False, no costs): its message and,
  when it states them, the temporaries it needed and the HBM it had (bytes, per device)."""
  text = str(error)
  report = {"config": config, "topology": topology, "chip": dataclasses.asdict(chip), "fits": False,
            "hbm_bytes_per_chip": int(chip.hbm_gib * GIB), "compiler": text[:500]}
  m = _REQUIRED.search(text)
  if m:
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    report["required_temp_bytes"] = int(float(m.group(1)) * scale[m.group(2)])
    report["available_bytes"] = int(float(m.group(3)) * scale[m.group(4)])
  return report


def _gib(x: float) -> str:
  return f"{x / GIB:.2f}"


def one_line(r: Mapping[str, Any]) -> str:
  """The report as the one line `launch.compile` prints."""
  m, line, ops, chip = r["memory_per_chip"], r["roofline"], r["ops"], r["chip"]
  head = f"{r.get('config', '?')} on {r.get('topology', chip['name'])} ({r['chips']} chips)"
  fits = "FITS" if r["fits"] else "DOES NOT FIT"
  parts = [
      f"{head}: {fits} HBM, {_gib(m['total'])} of {chip['hbm_gib']:g} GiB per chip (arguments {_gib(m['argument'])}"
      f" + outputs {_gib(m['output'])} - aliased {_gib(m['alias'])} + temp {_gib(m['temp'])} + code "
      f"{_gib(m['generated_code'])} GiB)",
      f"{r['flops_per_chip'] / 1e12:.3g} TFLOP and {r['bytes_accessed_per_chip'] / 1e9:.4g} GB accessed per chip "
      "and step",
      f"roofline {line['step_s']:.4g} s/step ({line['bound']}-bound), MFU <= {100 * line['mfu']:.1f}%"]
  if r.get("parsed"):
    tiled = r["parsed"].get("hbm_tiled_bytes_per_chip")
    tiled_line = r["parsed"].get("roofline_hbm_tiled") or {}
    tiles = (f", {tiled / 1e9:.4g} GB in whole tiles: roofline {tiled_line['step_s']:.4g} s, MFU <= "
             f"{100 * tiled_line['mfu']:.1f}%" if tiled is not None else "")
    parts.append(f"HBM traffic parsed from the program {r['parsed']['hbm_bytes_per_chip'] / 1e9:.4g} GB "
                 f"(roofline {r['parsed']['roofline_hbm']['step_s']:.4g} s{tiles}), compiler-estimated "
                 f"{r['parsed']['estimated_cycles'] / 1e6:.4g} M cycles")
  if r.get("optimal_seconds"):
    parts.append(f"compiler optimal {r['optimal_seconds']:.4g} s")
  if r.get("scenes_per_s_per_chip") is not None:
    parts.append(f"{r['scenes_per_chip']:g} scenes/chip/step, <= {r['scenes_per_s_per_chip']:.3g} scenes/s/chip")
  parts.append(f"collectives {ops['collectives']}, gathers {ops['gathers']}, scatters {ops['scatters']}, sorts "
               f"{ops['sorts']}, while loops {ops['while_loops']}")
  if r.get("compile_seconds") is not None:
    parts.append(f"compiled in {r['compile_seconds']:.0f} s")
  return "; ".join(parts)
