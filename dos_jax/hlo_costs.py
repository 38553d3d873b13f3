"""What a compiled XLA program does, read from its HLO text: instruction counts and per-kernel costs.

  counts = hlo_costs.op_summary(compiled.as_text())      # collectives, gathers, scatters, sorts, while loops ...
  rows = hlo_costs.instruction_costs(compiled.as_text())  # one row per kernel: bytes, HBM bytes, flops, cycles
  totals = hlo_costs.parsed_totals(rows)

Pure text parsing (no JAX): it reads TPU programs compiled ahead of time on a CPU machine (`dos_jax.train.aot`)
as well as CPU ones. `dos_jax.compile_report` puts these numbers beside the compiler's own; the benchmarks
`tpu_breakdown` and `tpu_block` split the rows by part of the model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Dict, Tuple


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


_TILE = re.compile(r"T\(([\d,]+)\)")


def tiled_bytes(dtype: str, dims: str, layout: str) -> int:
  """Bytes an array occupies in its tiled layout, e.g. bf16[N, 48]{1,0:T(8,128)(2,1)}: the most minor dims (in
  the layout's minor-to-major order) padded to the first tile's shape (48 lanes -> 128). Logical bytes where the
  layout names no tile."""
  n, nbytes = _array_elements_and_bytes(dtype, dims)
  tile = _TILE.search(layout or "")
  minor_to_major = (layout or "{").lstrip("{").split(":")[0]
  shape = [int(d) for d in dims.split(",") if d]
  if not n or not tile or not shape or not minor_to_major:
    return nbytes
  order = [int(d) for d in minor_to_major.split(",") if d]
  for axis, size in zip(order, reversed([int(t) for t in tile.group(1).split(",")])):
    shape[axis] = -(-shape[axis] // size) * size  # padded to whole tiles
  return math.prod(shape) * nbytes // n


def _hbm_bytes(type_text: str) -> Tuple[int, int]:
  """(logical, tiled) bytes of the arrays in `type_text` that live in HBM (arrays placed in VMEM / scalar memory
  excluded); tiled: at their tiled sizes (`tiled_bytes`), what the HBM holds and moves."""
  arrays = [a for a in _ARRAY_IN_SPACE.findall(type_text) if not _ON_CHIP.search(a[2])]
  logical = sum(_array_elements_and_bytes(dtype, dims)[1] for dtype, dims, _ in arrays)
  return logical, sum(tiled_bytes(*a) for a in arrays)


def parsed_totals(rows) -> Dict[str, int]:
  """Totals of `instruction_costs` rows: HBM bytes, estimated cycles, kernels with a cycle estimate, kernels."""
  return {"hbm_bytes": sum(r["hbm_bytes"] for r in rows),
          "hbm_tiled_bytes": sum(r["hbm_tiled_bytes"] for r in rows),
          "estimated_cycles": sum(r["cycles"] for r in rows),
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
  HBM arrays once (a lower bound: tiled kernels may re-read); hbm_tiled_bytes = hbm_bytes at each array's tiled
  size (`tiled_bytes`: a [N, 48] array in (8, 128) tiles holds and moves 128 lanes per row). cycles = the TPU
  compiler's cost-model estimate for the kernel (`estimated_cycles` in its backend config; 0 where it gives none:
  gathers, custom calls such as Pallas kernels, reshapes and copies between memory spaces). flops = 2 x output x
  contraction for dots (inside fusions too) plus one per output element of other arithmetic. runs = how many
  times the kernel runs per step: a while body's kernels once per iteration (the trip count read from the loop's
  condition, `i < N`), and bytes, hbm_bytes, hbm_tiled_bytes, flops and cycles are per step (x runs). XLA's own
  cost analysis counts a loop body once (`build` adds the other iterations). Custom calls (e.g. Pallas kernels)
  carry no flops here.
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
         "attrs": args[end:], "op_name": op_name.group(1) if op_name else "", "literal": args[:end],
         "root": line.lstrip().startswith("ROOT")})

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

  def trip_count(ins) -> int:
    """Iterations of a while loop: XLA's `known_trip_count` where it records one (CPU), else its condition's
    root `i < N` against a constant N (how lax.scan and fori_loop lower on TPU: i counts from 0), also when
    that compare is wrapped in a fusion; 1 when the condition has another form."""
    known = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins["attrs"])
    if known:
      return int(known.group(1))
    cond = re.search(r"condition=%?([\w.\-]+)", ins["attrs"])
    body = computations.get(cond.group(1), {}).get("instructions", []) if cond else []
    literals = {i["name"]: i["literal"].strip() for i in body if i["opcode"] == "constant"}
    root = next((i for i in body if i["root"]), None)
    compare = root
    if root is not None and root["opcode"] == "fusion" and root["called"]:
      compare = next((i for i in computations.get(root["called"][0], {}).get("instructions", []) if i["root"]),
                     None)
    if compare is None or compare["opcode"] != "compare" or "direction=LT" not in compare["attrs"]:
      return 1
    bound = [literals[o] for o in root["operands"][1:] if o in literals]
    return int(bound[0]) if bound and bound[0].isdigit() else 1

  # Computations that run as a sequence of kernels: the entry, and what while/conditional/call run, with how
  # many times each runs per step (a while body: its loop's trip count times the loop's own runs).
  runs, todo = {}, [(c, 1) for c in order if computations[c]["entry"]]
  while todo:
    comp, times = todo.pop()
    if comp in runs:
      continue
    runs[comp] = times
    for ins in computations.get(comp, {}).get("instructions", []):
      if ins["opcode"] in ("while", "conditional", "call", "async-start", "call-start"):
        inner = times * (trip_count(ins) if ins["opcode"] == "while" else 1)
        todo.extend((c, inner) for c in ins["called"] if c in computations)
  out = []
  for comp in order:
    if comp not in runs:
      continue
    for ins in computations[comp]["instructions"]:
      if ins["opcode"] in _FREE:
        continue
      opcode = ins["opcode"]
      if opcode in _TRANSFER_DONE:  # the transfer was counted at its start
        nbytes = hbm = hbm_tiled = 0
      elif opcode in _TRANSFER_START:
        # (source, destination, context): the destination is what moves (a slice reads only its part).
        moved = _ARRAY_IN_SPACE.findall(ins["type"])
        dest = moved[1] if len(moved) > 1 else (moved[0] if moved else None)
        hbm = _array_elements_and_bytes(*dest[:2])[1] if dest else 0
        hbm_tiled = tiled_bytes(*dest) if dest else 0
        nbytes = 2 * hbm
      else:
        nbytes = _elements_and_bytes(ins["type"])[1] + sum(_elements_and_bytes(shapes.get(o, ""))[1]
                                                            for o in ins["operands"])
        arrays = [ins["type"], *(shapes.get(o, "") for o in ins["operands"])]
        hbm, hbm_tiled = map(sum, zip(*map(_hbm_bytes, arrays)))
      flops = own_flops(ins) + (sum(computation_flops(c) for c in ins["called"]) if ins["opcode"] == "fusion" else 0)
      op_name = ins["op_name"]
      if not op_name and ins["opcode"] == "fusion":  # the fused computation's root names it
        body = computations.get(ins["called"][0], {}).get("instructions", []) if ins["called"] else []
        op_name = next((i["op_name"] for i in reversed(body) if i["op_name"]), "")
      times = runs[comp]
      out.append({"name": ins["name"], "opcode": ins["opcode"], "op_name": op_name, "computation": comp,
                  "runs": times, "bytes": times * nbytes, "hbm_bytes": times * hbm,
                  "hbm_tiled_bytes": times * hbm_tiled, "flops": times * flops,
                  "cycles": times * _estimated_cycles(ins["attrs"])})
  return out
