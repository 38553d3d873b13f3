"""Names and layouts of upstream Pointcept PTv3 encoder weights <-> the Flax encoder's params tree.

Pure numpy, no torch. One function maps a FULL Flax param path (e.g. ('enc1', 'block0', 'cpe', 'conv', 'kernel'))
to the upstream state_dict name and the layout change between the two; the same table drives both directions, so
`from_upstream(to_upstream(x)) == x` bit for bit.

  Flax path                                  upstream name (PT-v3m2 / PT-v3m1)            layout
  embedding/stem/{kernel, bias}              embedding.stem.linear.{weight, bias}         kernel [in, out] -> .T
  embedding/norm/{scale, bias}               embedding.stem.norm.{weight, bias}           (LayerNorm)
  embedding/mask_token [C]                   embedding.mask_token [1, C]
  embedding/kernel [125, C_in, C]            embedding.stem.conv.weight [C, 5, 5, 5, C_in] (m1; spconv KRSC)
  embedding/batch_norm/{scale, bias,         embedding.stem.norm.{weight, bias,           (m1 BatchNorm1d)
                        mean, var}             running_mean, running_var}
  enc{s}/down/proj                           enc.enc{s}.down.proj
  enc{s}/down/norm | down/batch_norm         enc.enc{s}.down.norm.0                       (LayerNorm | BatchNorm)
  enc{s}/block{i}/cpe/conv/kernel [27,C,C]   enc.enc{s}.block{i}.cpe.0.weight [C, 3, 3, 3, C]
  .../cpe/{conv/bias, linear, norm}          .../cpe.{0.bias, 1, 2}
  .../{norm1, norm2}                         .../{norm1.0, norm2.0}
  .../attn/{qkv, proj}, mlp/{fc1, fc2}       .../attn.{qkv, proj}, mlp.0.{fc1, fc2}
  .../{ls1, ls2} [C]                         .../{ls1.0.gamma, ls2.0.gamma}               (LayerScale)

Conv kernels: Flax `kernel[k]` acts on the neighbour at `offsets[k]` (`structs.NEIGHBOR_OFFSETS` /
`STEM_OFFSETS`, lexicographic over (dx, dy, dz)); the spconv weight `w[:, i, j, l, :]` acts on the neighbour at
(i, j, l) - radius, so kernel = w transposed to [i, j, l, C_in, C_out] and flattened (checked against upstream on
real scans by the interop tests). BatchNorm modules also carry `num_batches_tracked` upstream (not used in
evaluation; written as 0).
"""

from __future__ import annotations

import re
from typing import Callable, Tuple

import numpy as np

Path = Tuple[str, ...]

# LayerNorm / BatchNorm leaf names: Flax -> upstream.
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def upstream_name(path: Path) -> str:
  """The upstream state_dict name of a full Flax param path (raises KeyError for a path upstream has no name for,
  e.g. the dos upcast projection)."""
  head = path[0]
  if head == "embedding":
    rest = path[1:]
    if rest == ("mask_token",):
      return "embedding.mask_token"
    if rest == ("kernel",):
      return "embedding.stem.conv.weight"
    module = {"stem": "linear", "norm": "norm", "batch_norm": "norm"}.get(rest[0])
    if module is None or len(rest) != 2:
      raise KeyError(f"no upstream name for {'/'.join(path)}")
    return f"embedding.stem.{module}.{_LEAF[rest[1]]}"
  if not re.fullmatch(r"enc\d+", head):
    raise KeyError(f"no upstream name for {'/'.join(path)} (upstream PTv3 has no {head!r} module)")
  parts = ["enc", head]
  rest = path[1:]
  if rest[0] == "down":
    module = rest[1]
    parts += ["down", "proj" if module == "proj" else "norm.0"]
    return ".".join(parts + [_LEAF[rest[-1]]])
  parts.append(rest[0])  # block{i}
  sub = rest[1:]
  if sub[0] in ("ls1", "ls2"):
    return ".".join(parts + [sub[0], "0", "gamma"])
  if sub[0] == "cpe":
    parts += ["cpe", {"conv": "0", "linear": "1", "norm": "2"}[sub[1]]]
  elif sub[0] in ("norm1", "norm2"):
    parts += [sub[0], "0"]
  elif sub[0] == "mlp":
    parts += ["mlp", "0", sub[1]]
  elif sub[0] == "attn":
    parts += ["attn", sub[1]]
  else:
    raise KeyError(f"no upstream name for {'/'.join(path)}")
  return ".".join(parts + [_LEAF[sub[-1]]])


def _conv_to_upstream(kernel: np.ndarray) -> np.ndarray:
  """[K^3, C_in, C_out] -> spconv [C_out, K, K, K, C_in]."""
  k3, cin, cout = kernel.shape
  k = round(k3 ** (1 / 3))
  return np.transpose(kernel.reshape(k, k, k, cin, cout), (4, 0, 1, 2, 3))


def _conv_from_upstream(weight: np.ndarray) -> np.ndarray:
  cout, k, _, _, cin = weight.shape
  return np.transpose(weight, (1, 2, 3, 4, 0)).reshape(k ** 3, cin, cout)


def layouts(path: Path, ndim: int) -> Tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
  """(to_upstream, from_upstream) layout changes for the Flax leaf at `path` with `ndim` dimensions."""
  if path[-1] == "mask_token":
    return (lambda x: x.reshape(1, -1)), (lambda x: x.reshape(-1))
  if path[-1] == "kernel" and ndim == 3:
    return _conv_to_upstream, _conv_from_upstream
  if path[-1] == "kernel":
    return (lambda x: x.T), (lambda x: x.T)
  identity = lambda x: x  # noqa: E731
  return identity, identity


def is_batch_norm(path: Path) -> bool:
  """Whether the Flax leaf belongs to an (eval) BatchNorm module (upstream adds num_batches_tracked beside it)."""
  return "batch_norm" in path
