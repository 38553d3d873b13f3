"""The parts of a compiled train step: which part of the model a kernel of the TPU program belongs to, read from
the op names JAX records (Flax module paths and the step's named scopes).

Shared by `benchmarks.tpu_breakdown` (the whole step) and `benchmarks.tpu_block` (one block); no flags here.
"""

from __future__ import annotations

import re

# (part, test on the op name), first match wins. Attention's gathers/scatters between slot and serialization
# order are their own part; so are the objective's Sinkhorn iterations (its while loop).
PARTS = (
    ("optimizer (AdamW, clipping)", lambda n: "/optimizer/" in n),
    ("EMA teacher update", lambda n: "/ema/" in n),
    ("Sinkhorn iterations", lambda n: "/objective/" in n and ("/while/" in n or "/body/" in n or "/cond/" in n)),
    ("softmaps, KL, targets", lambda n: "/objective/" in n),
    ("prototype diagnostics", lambda n: "/diagnostics/" in n),
    ("attention: serialization gathers/scatters",
     lambda n: "/attn/" in n and any(t in n for t in ("_take", "gather", "scatter", "permute", "roll", "_pad"))),
    ("attention: qkv/proj matmuls", lambda n: "/attn/qkv" in n or "/attn/proj" in n),
    ("attention: scores, softmax, PV", lambda n: "/attn/" in n),
    ("CPE (neighbour gather + conv)", lambda n: "/cpe/" in n),
    ("MLP", lambda n: "/mlp/" in n),
    ("grid pooling", lambda n: "/down/" in n),
    ("LayerNorms", lambda n: "/norm" in n),
    ("encoder: embedding, residuals, drop path", lambda n: "PointTransformerV" in n),
    ("head and prototypes", lambda n: "DOSHead" in n),
)
OTHER = "other (loss glue, metrics, unlabelled)"
MOVES = "XLA data movement (async slices/copies, layout copies; unlabelled)"


# Opcodes of XLA's own data movement, with no op name: asynchronous slices and copies between memory spaces
# (HBM <-> VMEM prefetches) and layout changes. Their parsed bytes count the whole operand, so they overstate.
_MOVES = ("copy-start", "copy-done", "slice-start", "slice-done", "copy", "reshape", "transpose", "bitcast",
          "dynamic-slice", "dynamic-update-slice")


def _scopes(op_name: str) -> str:
  """'/a/b/' path of an op name with JAX's transformation wrappers opened: 'jit(train_step)/jvp(objective)/exp'
  -> '/jit/train_step/jvp/objective/exp/', so a scope matches as '/objective/' under any jvp/transpose/vmap."""
  return "/" + "/".join(t for t in re.split(r"[/()]", op_name) if t) + "/"


def part_of(op_name: str, opcode: str) -> str:
  if opcode in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute"):
    return "collectives"
  scopes = _scopes(op_name)
  for name, test in PARTS:
    if test(scopes):
      return name
  if opcode in _MOVES:
    return MOVES
  return OTHER


def stage_of(op_name: str) -> str:
  """'enc0'..'enc4' for encoder ops, else ''."""
  m = re.search(r"/(enc\d+)/", _scopes(op_name))
  return m.group(1) if m else ""
