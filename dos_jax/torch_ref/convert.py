"""Converter between the Flax encoder params and a Pointcept-style PyTorch `state_dict`, in both directions.

  sd = convert.flax_to_torch_state_dict(params)                 # dict[str, torch.Tensor]
  params2 = convert.torch_state_dict_to_flax(sd, like=params)   # same tree, dtypes and shapes as `like`

Names (full encoder tree; see `dos_jax.models.ptv3` and `dos_jax.torch_ref.blocks`):

  Flax path                                   torch name                              value
  enc{s}/...                                  enc.enc{s}/...
  .../{Dense}/kernel [in, out]                .../weight [out, in]                    transpose
  .../cpe/conv/kernel [27, C_in, C_out]       .../cpe.0.weight [C_out, 3, 3, 3, C_in]  kernel[k] <-> offset
                                                                                       NEIGHBOR_OFFSETS[k] + 1
  .../cpe/{conv, linear, norm}                .../cpe.{0, 1, 2}
  .../block{i}/{norm1, norm2, mlp}            .../block{i}/{norm1.0, norm2.0, mlp.0}
  .../down/norm                               .../down.norm.0
  embedding/stem, embedding/norm              embedding.stem.linear, embedding.stem.norm
  .../{LayerNorm}/scale                       .../weight

A sub-tree (one block, one attention module, ...) converts with `prefix` = its Flax path inside the encoder (e.g.
"enc0/block0/attn"); the torch names are then relative to that module. Both directions are exact (pure layout
changes), so a round trip reproduces every array bit for bit.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

import flax.traverse_util
import numpy as np
import torch

Path = Tuple[str, ...]


def _split(prefix: str) -> Path:
  return tuple(p for p in prefix.split("/") if p)


def torch_name(path: Path) -> str:
  """Torch state_dict name of a FULL Flax param path (e.g. ('enc0', 'block0', 'cpe', 'conv', 'kernel'))."""
  parts = []
  for i, name in enumerate(path[:-1]):
    parent = path[i - 1] if i else None
    if i == 0 and re.fullmatch(r"enc\d+", name):
      parts += ["enc", name]
    elif parent == "cpe" and name in ("conv", "linear", "norm"):
      parts.append({"conv": "0", "linear": "1", "norm": "2"}[name])
    elif parent is not None and re.fullmatch(r"block\d+", parent) and name in ("norm1", "norm2", "mlp"):
      parts += [name, "0"]
    elif parent == "down" and name == "norm":
      parts += ["norm", "0"]
    elif parent == "embedding" and name in ("stem", "norm"):
      parts += ["stem", "linear" if name == "stem" else "norm"]
    else:
      parts.append(name)
  leaf = path[-1]
  parts.append({"kernel": "weight", "scale": "weight"}.get(leaf, leaf))
  return ".".join(parts)


def _to_torch_layout(path: Path, value: np.ndarray) -> np.ndarray:
  if path[-1] != "kernel":
    return value
  if value.ndim == 3:  # CPE conv [27, C_in, C_out] -> [C_out, 3, 3, 3, C_in]
    k, cin, cout = value.shape
    return np.transpose(value.reshape(3, 3, 3, cin, cout), (4, 0, 1, 2, 3))
  return value.T


def _to_flax_layout(path: Path, value: np.ndarray) -> np.ndarray:
  if path[-1] != "kernel":
    return value
  if value.ndim == 5:
    cout, _, _, _, cin = value.shape
    return np.transpose(value, (1, 2, 3, 4, 0)).reshape(27, cin, cout)
  return value.T


def flax_to_torch_state_dict(params: Any, *, prefix: str = "",
                             dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
  """Flax params (nested dict of arrays) -> {torch name: tensor}.

  Args:
    params: the encoder's params (or a sub-tree, see `prefix`); leaves are numpy/jax arrays.
    prefix: Flax path of `params` inside the full encoder tree ("" for the whole encoder).
    dtype: torch dtype of the tensors (default: the arrays' own dtype).

  Returns:
    An ordered dict of contiguous tensors, loadable with `module.load_state_dict(sd, strict=True)`.
  """
  base = _split(prefix)
  strip = len(torch_name(base + ("x",))) - 1 if base else 0
  out = {}
  for path, value in flax.traverse_util.flatten_dict(dict(params)).items():
    full = base + tuple(path)
    arr = np.ascontiguousarray(_to_torch_layout(full, np.asarray(value)))
    tensor = torch.from_numpy(arr.copy())
    out[torch_name(full)[strip:]] = tensor.to(dtype) if dtype is not None else tensor
  return out


def torch_state_dict_to_flax(state_dict: Dict[str, Any], like: Any, *, prefix: str = "") -> Dict[str, Any]:
  """{torch name: tensor} -> Flax params with the tree, shapes and dtypes of `like` (numpy leaves).

  Also converts gradients (`{name: p.grad}`), which share the parameters' layout.

  Raises:
    KeyError: a name `like` needs is missing from `state_dict`, or `state_dict` has names `like` does not.
    ValueError: a tensor's shape does not match after the layout change.
  """
  base = _split(prefix)
  strip = len(torch_name(base + ("x",))) - 1 if base else 0
  flat_like = flax.traverse_util.flatten_dict(dict(like))
  out = {}
  used = set()
  for path, ref in flat_like.items():
    full = base + tuple(path)
    name = torch_name(full)[strip:]
    if name not in state_dict:
      raise KeyError(f"state_dict has no {name!r} (for Flax param {'/'.join(full)})")
    value = state_dict[name]
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu().numpy()
    arr = _to_flax_layout(full, np.asarray(value))
    ref = np.asarray(ref)
    if arr.shape != ref.shape:
      raise ValueError(f"{name}: shape {tuple(np.shape(value))} gives {arr.shape} in Flax layout, expected "
                       f"{ref.shape} for {'/'.join(full)}")
    out[path] = np.ascontiguousarray(arr).astype(ref.dtype)
    used.add(name)
  extra = sorted(set(state_dict) - used)
  if extra:
    raise KeyError(f"state_dict names with no Flax param: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
  return flax.traverse_util.unflatten_dict(out)
