"""Space-filling-curve codes for voxel grids: z-order (Morton) and 3D Hilbert, plus their transposed variants.

PTv3 serializes a point cloud by sorting its voxels along a space-filling curve, so that points that are
consecutive in the sorted order are close in space and fixed-size patches of consecutive points are local
neighbourhoods. The "-trans" variants swap the x and y axes before encoding (as PTv3 does), which gives a
differently shaped curve and hence different patch boundaries; attention blocks cycle through the orders.

Everything here is vectorised numpy: loops run over the `depth` bits, never over points.
"""

from __future__ import annotations

import numpy as np

# Largest depth whose 3 * depth bits fit in a non-negative int64.
MAX_DEPTH = 21

# Axis permutation of the transposed variants (swap x and y, as in PTv3).
_TRANS_AXES = (1, 0, 2)


def required_depth(grid: np.ndarray) -> int:
  """Bits per axis of the codes of `grid: i32[N, 3]`, by upstream Pointcept's rule `(max + 1).bit_length()`.

  One more than strictly needed when the largest coordinate is 2^k - 1; the Hilbert codes depend on the depth, so
  the rule must be upstream's for the serialization (hence the patches and attention) to agree with it.
  (>= 1; 1 for an empty grid.)
  """
  if grid.size == 0:
    return 1
  return max(1, (int(np.max(grid)) + 1).bit_length())


def _spread_bits(v: np.ndarray) -> np.ndarray:
  """Moves bit k of each (< 2**21) value to bit 3k ("magic numbers" bit spreading, 5 shift-and-mask steps)."""
  v = v.astype(np.int64) & 0x1FFFFF
  v = (v | (v << 32)) & 0x1F00000000FFFF
  v = (v | (v << 16)) & 0x1F0000FF0000FF
  v = (v | (v << 8)) & 0x100F00F00F00F00F
  v = (v | (v << 4)) & 0x10C30C30C30C30C3
  v = (v | (v << 2)) & 0x1249249249249249
  return v


def _interleave(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
  """Bit k of (a, b, c) -> bits (3k+2, 3k+1, 3k) of the result."""
  return (_spread_bits(a) << 2) | (_spread_bits(b) << 1) | _spread_bits(c)


def morton_encode(grid: np.ndarray, depth: int) -> np.ndarray:
  """Z-order code: interleaves the bits of x, y, z (x most significant within each 3-bit group).

  Args:
    grid: int[N, 3] non-negative voxel coordinates, each < 2**depth.
    depth: bits per axis (<= MAX_DEPTH; the code does not otherwise depend on it).

  Returns:
    i64[N] codes, a bijection from the cube [0, 2**depth)^3 onto [0, 8**depth).
  """
  del depth
  return _interleave(grid[:, 0], grid[:, 1], grid[:, 2])


def hilbert_encode(grid: np.ndarray, depth: int) -> np.ndarray:
  """3D Hilbert code, after J. Skilling, "Programming the Hilbert curve" (AIP Conf. Proc. 707, 2004).

  The coordinates are first turned into the "transposed" Hilbert index (bit-plane by bit-plane rotations and
  reflections, then a Gray code); interleaving the bits of the transposed form gives the scalar index.
  Consecutive codes on a full cube are face-adjacent voxels (tested).

  Args:
    grid: int[N, 3] non-negative voxel coordinates, each < 2**depth.
    depth: bits per axis.

  Returns:
    i64[N] codes, a bijection from the cube [0, 2**depth)^3 onto [0, 8**depth).
  """
  # int32 suffices for coordinates (depth <= 21) and halves the memory traffic of the bit loop.
  x = [np.array(grid[:, a], dtype=np.int32) for a in range(3)]
  # Undo the excess work of the inverse transform, from the most significant bit plane down. Branch-free:
  # `high` is all ones where bit `level` of x[i] is set (then invert the low bits of x[0]), zero elsewhere (then
  # exchange the low bits of x[0] and x[i]).
  for level in range(depth - 1, 0, -1):
    p = (1 << level) - 1
    for i in range(3):
      high = -((x[i] >> level) & 1)
      if i == 0:
        x[0] ^= p & high
        continue
      swap = (x[0] ^ x[i]) & p & ~high
      x[0] ^= (p & high) | swap
      x[i] ^= swap
  # Gray encode.
  x[1] ^= x[0]
  x[2] ^= x[1]
  t = np.zeros_like(x[0])
  for level in range(depth - 1, 0, -1):
    t ^= ((1 << level) - 1) & -((x[2] >> level) & 1)
  for i in range(3):
    x[i] ^= t
  # Interleave: bit plane b of (x0, x1, x2) becomes bits (3b+2, 3b+1, 3b) of the index.
  return _interleave(x[0], x[1], x[2])


def encode(grid: np.ndarray, order: str, depth: int, check: bool = True) -> np.ndarray:
  """Serialization code of each voxel for one of `structs.ORDERS`.

  Args:
    grid: int[N, 3] non-negative voxel coordinates, each < 2**depth.
    order: 'z' | 'z-trans' | 'hilbert' | 'hilbert-trans'.
    depth: bits per axis, 1..MAX_DEPTH (see `required_depth`).
    check: validate shapes and ranges (callers that already know the range may skip it).

  Returns:
    i64[N] codes; sorting by them gives the serialization order.
  """
  grid = np.asarray(grid)
  if check:
    _check(grid, depth)
  if order.endswith("-trans"):
    grid = grid[:, _TRANS_AXES]
    base = order[:-len("-trans")]
  else:
    base = order
  if base == "z":
    return morton_encode(grid, depth)
  if base == "hilbert":
    return hilbert_encode(grid, depth)
  raise ValueError(f"unknown serialization order {order!r}; expected z, z-trans, hilbert or hilbert-trans")


def _check(grid: np.ndarray, depth: int):
  if grid.ndim != 2 or grid.shape[1] != 3:
    raise ValueError(f"grid must be [N, 3], got shape {grid.shape}")
  if not 1 <= depth <= MAX_DEPTH:
    raise ValueError(f"depth must be in [1, {MAX_DEPTH}], got {depth}")
  if grid.size and (grid.min() < 0 or grid.max() >= (1 << depth)):
    raise ValueError(f"grid coordinates must lie in [0, 2**{depth}), got [{grid.min()}, {grid.max()}]")


def encode_all(grid: np.ndarray, depth: int) -> dict:
  """Codes of every order in `structs.ORDERS` at once ({order: i64[N]}), sharing the Morton bit spreading.

  Same values as `encode(grid, order, depth)` for each order, without range checks.
  """
  sx, sy, sz = (_spread_bits(grid[:, a]) for a in range(3))
  return {
      "z": (sx << 2) | (sy << 1) | sz,
      "z-trans": (sy << 2) | (sx << 1) | sz,
      "hilbert": hilbert_encode(grid, depth),
      "hilbert-trans": hilbert_encode(grid[:, _TRANS_AXES], depth),
  }
