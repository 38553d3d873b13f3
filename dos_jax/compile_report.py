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
from collections import Counter
from typing import Any, Dict, Mapping, Optional

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


# ------------------------------------------------------------------------------------------------ HLO op counts
# One HLO instruction: `%name = <type> opcode(operands), attrs` (`ROOT` first for a computation's result). The
# type may be a tuple and carries layouts such as {1,0:T(8,128)}; opcodes are lower-case words, so the first
# lower-case `word(` after the `=` is the opcode.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?<![\w.%\-])([a-z][a-z0-9\-]*)\(")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
               "collective-broadcast", "ragged-all-to-all")


def opcode_counts(hlo_text: str) -> Counter:
  """Instructions per opcode over every computation of an HLO module's text (fused computations included).

  Async pairs count once: `all-reduce-start` counts as `all-reduce`, the `-done` / `-update` halves not at all.
  """
  counts: Counter = Counter()
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    op = _OPCODE.search(m.group(1))
    if not op:
      continue
    name = op.group(1)
    if name.endswith("-done") or name.endswith("-update"):
      continue
    counts[name[:-len("-start")] if name.endswith("-start") else name] += 1
  return counts


def op_summary(hlo_text: str) -> Dict[str, int]:
  """The counts the report shows: collectives (all kinds), gathers, scatters, sorts, while loops, custom calls,
  fusions, and each collective kind that occurs."""
  c = opcode_counts(hlo_text)
  out = {"collectives": sum(c[k] for k in COLLECTIVES), "gathers": c["gather"], "scatters": c["scatter"],
         "sorts": c["sort"], "while_loops": c["while"], "custom_calls": c["custom-call"], "fusions": c["fusion"],
         "instructions": sum(c.values())}
  out.update({k.replace("-", "_"): c[k] for k in COLLECTIVES if c[k]})
  return out


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
  flops = float(cost.get("flops", 0.0)) * dpc
  bytes_accessed = float(cost.get("bytes accessed", 0.0)) * dpc
  optimal = cost.get("optimal_seconds")
  hbm = int(chip.hbm_gib * GIB)
  line = roofline(flops, bytes_accessed, chip)
  text = compiled.as_text() if hlo_text is None else hlo_text
  totals = parsed_totals(instruction_costs(text))
  parsed_hbm = totals["hbm_bytes"] * dpc
  report = dict(extra)
  report.update({
      "chip": dataclasses.asdict(chip), "devices": int(devices), "chips": chips, "devices_per_chip": dpc,
      "fits": mem["total"] <= hbm, "hbm_bytes_per_chip": hbm, "memory_per_chip": mem,
      "flops_per_chip": flops, "bytes_accessed_per_chip": bytes_accessed,
      "optimal_seconds": float(optimal) if optimal is not None and float(optimal) > 0 else None,
      "roofline": line, "ops": op_summary(text),
      # From the compiled HLO (`instruction_costs`): HBM traffic with each kernel touching its HBM arrays once
      # (VMEM-resident arrays excluded; the compiler's bytes accessed counts those too), the roofline on it (a
      # lower bound), and the sum of the compiler's per-kernel cycle estimates (fusions only).
      "parsed": {"hbm_bytes_per_chip": parsed_hbm, "roofline_hbm": roofline(flops, parsed_hbm, chip),
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
    parts.append(f"HBM traffic parsed from the program {r['parsed']['hbm_bytes_per_chip'] / 1e9:.4g} GB "
                 f"(roofline {r['parsed']['roofline_hbm']['step_s']:.4g} s), compiler-estimated "
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


# ------------------------------------------------------------------------------------------------ per instruction
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|f8e\w+|c64|c128)\[([\d,]*)\]")
_BITS = {"pred": 8, "bf16": 16, "c64": 64, "c128": 128}
_CALLED = re.compile(r"\b(calls|body|condition|to_apply|branch_computations)=\{?(%[\w.\-]+(?:,\s*%[\w.\-]+)*)\}?")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
         "replica-id", "opt-barrier", "while", "conditional", "call", "iota"}
_ELEMENTWISE_FLOPS = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "exponential", "log", "tanh",
                      "rsqrt", "sqrt", "power", "erf", "compare", "select", "negate", "abs", "logistic",
                      "exponential-minus-one", "log-plus-one", "clamp", "sine", "cosine", "floor", "ceil",
                      "round-nearest-even", "sign", "atan2", "remainder", "and", "or", "not", "xor"}


# An array's memory space follows its layout's tiles, e.g. `{1,0:T(8,128)S(1)}`: S(1) is the TPU core's VMEM,
# S(2) its scalar memory; no S(..) (or S(0)) is HBM.
_ARRAY_IN_SPACE = re.compile(_ARRAY.pattern + r"(\{[^}]*\})?")
_ON_CHIP = re.compile(r"S\([1-9]\d*\)")
# Asynchronous transfers between memory spaces: the start moves the array, the done only waits for it.
_TRANSFER_START = {"copy-start", "slice-start"}
_TRANSFER_DONE = {"copy-done", "slice-done"}
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_NO_ESTIMATE = 2 ** 62  # some kernels carry int64-max-like values: "unknown", not a cost (seen on v5p)


def _estimated_cycles(attrs: str) -> int:
  """The TPU compiler's own estimate of a kernel's cycles (its backend config), 0 where it gives none."""
  m = _CYCLES.search(attrs)
  cycles = int(m.group(1)) if m else 0
  return cycles if cycles < _NO_ESTIMATE else 0


def _array_elements_and_bytes(dtype: str, dims: str):
  n = 1
  for d in filter(None, dims.split(",")):
    n *= int(d)
  bits = _BITS.get(dtype) or int(re.sub(r"\D", "", dtype.split("e")[0]) or 8)
  return n, n * bits // 8


def _elements_and_bytes(type_text: str):
  elements, nbytes = 0, 0
  for dtype, dims in _ARRAY.findall(type_text):
    n, b = _array_elements_and_bytes(dtype, dims)
    elements += n
    nbytes += b
  return elements, nbytes


def _hbm_bytes(type_text: str) -> int:
  """Bytes of the arrays in `type_text` that live in HBM (arrays placed in VMEM / scalar memory excluded)."""
  return sum(_array_elements_and_bytes(dtype, dims)[1] for dtype, dims, layout in _ARRAY_IN_SPACE.findall(type_text)
             if not _ON_CHIP.search(layout))


def parsed_totals(rows) -> Dict[str, int]:
  """Totals of `instruction_costs` rows: HBM bytes, estimated cycles, kernels with a cycle estimate, kernels."""
  return {"hbm_bytes": sum(r["hbm_bytes"] for r in rows), "estimated_cycles": sum(r["cycles"] for r in rows),
          "kernels_with_cycles": sum(1 for r in rows if r["cycles"]), "kernels": len(rows)}


def _dims(type_text: str):
  m = _ARRAY.search(type_text)
  return [int(d) for d in m.group(2).split(",") if d] if m else []


def _convolution_contraction(ins, shapes) -> int:
  """Multiply-adds per output element of an HLO convolution: the lhs input features (the 'f' of its dim_labels)
  over feature_group_count, times the window taps over real input (e.g. `dim_labels=bf_io->bf`: a matmul over f;
  `bf0_i0o->bf0, window={size=48}` on a spatial extent of 48: a matmul over f x 48)."""
  lhs = _dims(shapes.get(ins["operands"][0], "")) if ins["operands"] else []
  labels = re.search(r"dim_labels=(\w+)_", ins["attrs"])
  if not labels or "f" not in labels.group(1) or len(lhs) != len(labels.group(1)):
    return 1
  features = lhs[labels.group(1).index("f")]
  groups = re.search(r"feature_group_count=(\d+)", ins["attrs"])
  features //= int(groups.group(1)) if groups else 1
  # Each spatial dim contributes the window taps that can overlap real input (a window larger than the input, as
  # in the transpose of a gather-then-matmul, mostly reads padding): min(window, lhs spatial size).
  window = re.search(r"window=\{size=([\dx]+)", ins["attrs"])
  spatial = [lhs[i] for _, i in sorted((ch, i) for i, ch in enumerate(labels.group(1)) if ch.isdigit())]
  for size, extent in zip(window.group(1).split("x") if window else [], spatial):
    features *= min(int(size), extent)
  return max(1, features)


def instruction_costs(hlo_text: str):
  """Bytes and flops of each instruction that runs as its own kernel (a fusion, a gather, a custom call, ...):
  list of dicts {name, opcode, op_name, computation, bytes, flops}.

  bytes = output bytes + operand bytes (what a kernel reads and writes once, in any memory space); hbm_bytes = the
  same restricted to arrays in HBM (a compiled TPU program places some arrays in the core's VMEM, `S(1)` in their
  layouts, and moves them with async copies/slices: a `*-start` counts the array it transfers once, for both, and
  its `*-done` nothing). XLA's own `bytes accessed` counts every operand read in any memory space, re-reads
  included, so it exceeds both sums; hbm_bytes is the traffic the HBM sees if each kernel touches each of its
  HBM arrays once (a lower bound: tiled kernels may re-read). cycles = the TPU compiler's cost-model estimate
  for the kernel (`estimated_cycles` in its backend config; 0 where it gives none: gathers, custom calls such as
  Pallas kernels, reshapes and copies between memory spaces). flops = 2 x output x
  contraction for dots (inside fusions too) plus one per output element of other arithmetic. Instructions of
  while bodies / conditional branches count once, as XLA's cost analysis counts them. Custom calls (e.g. Pallas
  kernels) carry no flops here.
  """
  shapes, computations, order, current = {}, {}, [], None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and not line[:1].isspace():  # computation headers start at column 0, instructions are indented
      current = header.group(2)
      computations[current] = {"entry": bool(header.group(1)), "instructions": []}
      order.append(current)
      continue
    m = _INSTRUCTION.match(line)
    if not m or current is None:
      continue
    name = line.split("=", 1)[0].replace("ROOT", "").strip().lstrip("%")
    rest = m.group(1)
    op = _OPCODE.search(rest)
    if not op:
      continue
    type_text = rest[:op.start()]
    args = rest[op.end():]
    depth, end = 1, 0
    for end, ch in enumerate(args):
      depth += (ch == "(") - (ch == ")")
      if depth == 0:
        break
    operands = re.findall(r"%([\w.\-]+)", args[:end])
    called = [c.strip().lstrip("%") for _, group in _CALLED.findall(args[end:]) for c in group.split(",")]
    op_name = _OP_NAME.search(args[end:])
    shapes[name] = type_text
    computations[current]["instructions"].append(
        {"name": name, "opcode": op.group(1), "type": type_text, "operands": operands, "called": called,
         "attrs": args[end:], "op_name": op_name.group(1) if op_name else ""})

  def own_flops(ins):
    out_elements, _ = _elements_and_bytes(ins["type"])
    if ins["opcode"] == "convolution":  # TPU programs express most matmuls as convolutions
      return 2 * out_elements * _convolution_contraction(ins, shapes)
    if ins["opcode"] == "dot":
      lhs = _dims(shapes.get(ins["operands"][0], "")) if ins["operands"] else []
      m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins["attrs"])
      contraction = 1
      for d in (m.group(1).split(",") if m and m.group(1) else []):
        contraction *= lhs[int(d)] if int(d) < len(lhs) else 1
      return 2 * out_elements * contraction
    if ins["opcode"] in ("reduce", "reduce-window"):
      return sum(_elements_and_bytes(shapes.get(o, ""))[0] for o in ins["operands"][:1])
    return out_elements if ins["opcode"] in _ELEMENTWISE_FLOPS else 0

  def computation_flops(comp, seen=()):
    total = 0
    for ins in computations.get(comp, {}).get("instructions", []):
      total += own_flops(ins)
      if ins["opcode"] == "fusion":
        total += sum(computation_flops(c, seen + (comp,)) for c in ins["called"] if c not in seen)
    return total

  # Computations that run as a sequence of kernels: the entry, and what while/conditional/call run.
  runs, todo = set(), [c for c in order if computations[c]["entry"]]
  while todo:
    comp = todo.pop()
    if comp in runs:
      continue
    runs.add(comp)
    for ins in computations.get(comp, {}).get("instructions", []):
      if ins["opcode"] in ("while", "conditional", "call", "async-start", "call-start"):
        todo.extend(c for c in ins["called"] if c in computations)
  out = []
  for comp in order:
    if comp not in runs:
      continue
    for ins in computations[comp]["instructions"]:
      if ins["opcode"] in _FREE:
        continue
      opcode = ins["opcode"]
      if opcode in _TRANSFER_DONE:  # the transfer was counted at its start
        nbytes = hbm = 0
      elif opcode in _TRANSFER_START:
        # (source, destination, context): the destination is what moves (a slice reads only its part).
        moved = _ARRAY.findall(ins["type"])
        dest = moved[1] if len(moved) > 1 else (moved[0] if moved else None)
        hbm = _array_elements_and_bytes(*dest)[1] if dest else 0
        nbytes = 2 * hbm
      else:
        nbytes = _elements_and_bytes(ins["type"])[1] + sum(_elements_and_bytes(shapes.get(o, ""))[1]
                                                            for o in ins["operands"])
        hbm = _hbm_bytes(ins["type"]) + sum(_hbm_bytes(shapes.get(o, "")) for o in ins["operands"])
      flops = own_flops(ins) + (sum(computation_flops(c) for c in ins["called"]) if ins["opcode"] == "fusion" else 0)
      op_name = ins["op_name"]
      if not op_name and ins["opcode"] == "fusion":  # the fused computation's root names it
        body = computations.get(ins["called"][0], {}).get("instructions", []) if ins["called"] else []
        op_name = next((i["op_name"] for i in reversed(body) if i["op_name"]), "")
      out.append({"name": ins["name"], "opcode": ins["opcode"], "op_name": op_name, "computation": comp,
                  "bytes": nbytes, "hbm_bytes": hbm, "flops": flops, "cycles": _estimated_cycles(ins["attrs"])})
  return out
