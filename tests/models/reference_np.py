"""An independent float64 numpy forward pass of the encoder, written from the architecture description (loops over
patches and parents), used to check the Flax implementation's numerics.

Works on ONE unbatched `PointSet` of numpy arrays and the Flax params pytree (converted to numpy).
"""

from __future__ import annotations

import numpy as np
import scipy.special

EPS = 1e-5


def _gelu(x):
  return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


def _ln(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def _linear(x, p):
  return x @ p["kernel"] + p["bias"]


def _block(x, stage, p, heads, patch_size, order_index, mlp_ratio):
  n, c = x.shape
  valid = stage.valid
  # CPE: submanifold 3x3x3 conv, one neighbour offset at a time.
  conv = np.tile(p["cpe"]["conv"]["bias"], (n, 1))
  for k in range(27):
    nb = stage.neighbors[:, k]
    has = nb < n
    conv[has] += x[nb[has]] @ p["cpe"]["conv"]["kernel"][k]
  x = x + _ln(_linear(conv, p["cpe"]["linear"]), p["cpe"]["norm"])
  # Attention inside patches of consecutive points of one serialization order; padded keys excluded.
  h = _ln(x, p["norm1"])
  qkv = _linear(h, p["attn"]["qkv"]).reshape(n, 3, heads, c // heads)
  att = np.zeros((n, heads, c // heads))
  seq = stage.order[order_index % stage.order.shape[0]]
  size = min(patch_size, n)
  n_real = int(valid.sum())  # real points come first in seq
  for start in range(0, n, size):
    idx = seq[start:start + size]
    keys = idx[valid[idx]]
    if n_real > size and start < n_real < start + size:
      keys = seq[n_real - size:n_real]  # upstream: the last partial patch attends over the last P real points
    for i in idx[valid[idx]]:
      for head in range(heads):
        q = qkv[i, 0, head]
        logits = qkv[keys, 1, head] @ q / np.sqrt(c // heads)
        w = np.exp(logits - logits.max())
        w /= w.sum()
        att[i, head] = w @ qkv[keys, 2, head]
  x = x + _linear(att.reshape(n, c), p["attn"]["proj"])
  h = _ln(x, p["norm2"])
  x = x + _linear(_gelu(_linear(h, p["mlp"]["fc1"])), p["mlp"]["fc2"])
  return np.where(valid[:, None], x, 0.0)


def _pool(x, parent, next_valid, p):
  m = next_valid.shape[0]
  y = _linear(x, p["proj"])
  out = np.zeros((m, y.shape[1]))
  for j in np.flatnonzero(next_valid):
    out[j] = y[parent == j].max(0)
  out = _gelu(_ln(out, p["norm"]))
  return np.where(next_valid[:, None], out, 0.0)


def forward(params, points, *, channels, depths, heads, patch_size, mlp_ratio=4.0, mask_token=None):
  """Returns (f64[N, D] dense features, [per-stage features]) for one unbatched PointSet."""
  params = _to_numpy(params)
  valid = points.stages[0].valid
  x = _gelu(_ln(_linear(points.feat.astype(np.float64), params["embedding"]["stem"]), params["embedding"]["norm"]))
  if mask_token is not None:
    x = np.where(mask_token[:, None], params["embedding"]["mask_token"], x)
  x = np.where(valid[:, None], x, 0.0)
  feats = []
  for s in range(len(channels)):
    enc = params[f"enc{s}"]
    stage = points.stages[s]
    if s > 0:
      x = _pool(x, points.parent[s - 1], stage.valid, enc["down"])
    for i in range(depths[s]):
      x = _block(x, stage, enc[f"block{i}"], heads[s], patch_size, i, mlp_ratio)
    feats.append(x)
  up = feats[-1]
  for s in range(len(channels) - 2, -1, -1):
    parent = points.parent[s]
    gathered = np.where((parent < up.shape[0])[:, None], up[np.minimum(parent, up.shape[0] - 1)], 0.0)
    up = np.concatenate([feats[s], gathered], -1)
  y = _ln(_linear(up, params["upcast"]["proj"]), params["upcast"]["norm"])
  return np.where(valid[:, None], y, 0.0), feats


def _to_numpy(tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)
