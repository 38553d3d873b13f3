"""The fixed-shape batch contract between the host pipeline and the device.

Everything irregular (grid sampling, masking, serialization, sorting, neighbour search, pooling) is done on the
host in numpy; the device sees only these pytrees of fixed-shape arrays plus validity masks, so one compiled
function serves every batch of a config.

Shapes are written for ONE point set. A training batch (`TrainBatch`) is always a stack of packs (leading axis
[G]): each pack holds the views of several scenes in one point set per stage (segment ids), so one type serves
every config; an evaluation batch (`LabeledBatch`) stacks single views (leading axis [B]).

Padding conventions (all stages):
  * Real points occupy arbitrary slots; `valid` marks them. Padded slots hold zeros in float arrays.
  * Index arrays that point *into* an array of capacity M use M as the "absent" sentinel, so device code can
    gather from an array padded with one extra zero row (`jnp.pad(x, ((0, 1), (0, 0)))`) or scatter with
    `mode="drop"` / `num_segments=M + 1`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.struct
import numpy as np

from dos_jax import variants

# Serialization orders, cycled across attention blocks (PTv3): block i uses ORDERS[i % len(ORDERS)]. Named in the
# bottom layer (variants, which architectures state them with and the JAX-free gate reads).
ORDERS = variants.ORDERS
# Offsets of the 3x3x3 voxel neighbourhood used by the conditional positional encoding, in this fixed order.
NEIGHBOR_OFFSETS = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(27, 3)
# Offsets of the 5x5x5 neighbourhood of PT-v3m1's convolutional stem (same lexicographic order; entry 62 is 0).
STEM_OFFSETS = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(125, 3)


@flax.struct.dataclass
class Stage:
  """One resolution level of a padded point set (capacity N_s, a multiple of that stage's patch size).

  Attributes:
    grid: i32[N_s, 3] integer voxel coordinates at this stage (stage 0: floor(coord / grid_size) shifted to be
      >= 0; stage s+1: grid_s // 2). Padded slots are 0.
    valid: bool[N_s] real points.
    order: i32[O, N_s] for each serialization order o in ORDERS, order[o, j] is the slot of the j-th point in
      code order. Real points come first (ascending code), padded slots after, so patch boundaries of real
      points do not depend on the capacity.
    inverse: i32[O, N_s] inverse permutation: inverse[o, order[o, j]] = j.
    neighbors: i32[N_s, 27] slot of the real point at grid + NEIGHBOR_OFFSETS[k], or N_s when there is none
      (and for every entry of a padded slot). Entry 13 is the point itself for real points.
    segment: None for a set holding one view; for a packed set (`dos_jax.batching.packing`) i32[N_s] the view
      (0..M-1) each real slot belongs to, M for padding. Attention never mixes segments. A packed set's
      attention sequence is decoupled from its slots: `order` is i32[O, L_s] (the slot at each sequence
      position, N_s for a gap) and `inverse` i32[O, N_s] (each slot's position, L_s for padding slots).
  """

  grid: np.ndarray
  valid: np.ndarray
  order: np.ndarray
  inverse: np.ndarray
  neighbors: np.ndarray
  segment: Optional[np.ndarray] = None


@flax.struct.dataclass
class PointSet:
  """A padded, serialized point set with its stage hierarchy: the encoder's input.

  Attributes:
    coord: f32[N, 3] continuous (augmented) coordinates in metres of the stage-0 points, 0 in padded slots.
    feat: f32[N, C_in] input features (e.g. concat of coord, colour in [0,1], normal), 0 in padded slots.
    stages: tuple of S `Stage`s, stage 0 has capacity N.
    parent: tuple of S-1 arrays, parent[s]: i32[N_s] slot in stage s+1 of the pooled cluster containing point
      slot i of stage s, or N_{s+1} for padded slots. Grid pooling with stride 2.
    point_index: i32[N] index of the original scene point each stage-0 point represents (the grid-sample
      representative), -1 in padded slots. Used for cross-view matching and for mapping back to every point.
    stem_neighbors: None, or i32[N, 125] like `Stage.neighbors` over `STEM_OFFSETS` at stage 0 (only the
      PT-v3m1 convolutional stem needs it; `build_point_set(..., stem_neighbors=True)`).
    view_id: None, or for a packed set i32[M] the global index of each view (global example g, view v:
      (g * V + v) mod 2^31). It keys the drop-path masks of the view's points (with the point's rank among the
      view's slots), so they do not depend on which pack, device or process the view lands in.
  """

  coord: np.ndarray
  feat: np.ndarray
  stages: Tuple[Stage, ...]
  parent: Tuple[np.ndarray, ...]
  point_index: np.ndarray
  stem_neighbors: Optional[np.ndarray] = None
  view_id: Optional[np.ndarray] = None

  @property
  def valid(self):
    return self.stages[0].valid


@flax.struct.dataclass
class TrainView:
  """One training view of one scene, padded to the per-view capacities: what `train_views` builds on the host and
  `dos_jax.batching.packing` packs. Never fed to the step (every training batch is a `TrainBatch` pack).

  Attributes:
    teacher: PointSet, the full (unmasked) view, capacity N_t (data.capacity).
    student: PointSet, ONLY the visible points of the view, capacity N_v (data.student_capacity; masked points are
      gathered out on the host, their coordinates never enter the student). Under
      supervision='masked_tokens'|'token_jitter' the student set holds the full view instead (capacity N_t) and
      `mask_token` marks the masked points.
    mask_token: bool[N_student] True where the student sees a learnable mask token instead of the point's
      features (all False under 'observable').
    target_index: i32[N_student] slot in the SAME view's teacher set holding the same point (N_t if padded).
    target_valid: bool[N_student] points that receive a target (observable points under 'observable'; masked
      points under the token variants).
    cross_index: i32[N_student] slot in the OTHER view's teacher set (view (v+1) mod V) of the point nearest to
      this point's original position, N_t when none within the matching radius.
    cross_valid: bool[N_student] whether cross_index is a real match.
  """

  teacher: PointSet
  student: PointSet
  mask_token: np.ndarray
  target_index: np.ndarray
  target_valid: np.ndarray
  cross_index: np.ndarray
  cross_valid: np.ndarray


@flax.struct.dataclass
class TrainBatch:
  """THE pretraining batch: packs (leading axis [G], one per device or several), each holding up to M views.

  Built by `dos_jax.batching.packing`: a pack holds whole scenes (all V views of each, scene-major: view m =
  scene b * V + view v), filled by budget (`packing.fill_pack`); segments m >= the pack's real view count are
  empty (`view_valid` False). A batch of one scene per pack at the per-view capacities is what "unpacked" means:
  the same type. Every index points into the pack's ONE teacher set:

  Attributes:
    teacher: packed PointSet (slot budget data.packed_capacity), `stages[s].segment` = view of each slot.
    student: packed PointSet of the visible points (data.packed_student_capacity), or of the full views under
      the token variants.
    mask_token, target_valid, cross_valid: bool[N_student] (meaning as in `TrainView`).
    target_index: i32[N_student] slot in the packed teacher set of the same point (N_t if none).
    cross_index: i32[N_student] slot in the packed teacher set of the nearest point of the next view of the same
      scene (N_t if none).
    view_valid: bool[M] real views of the pack (M = data.pack_scenes x V is static: its length). The loss is the
      mean of the per-view terms over the real views of the whole step.
  """

  teacher: PointSet
  student: PointSet
  mask_token: np.ndarray
  target_index: np.ndarray
  target_valid: np.ndarray
  cross_index: np.ndarray
  cross_valid: np.ndarray
  view_valid: np.ndarray


@flax.struct.dataclass
class LabeledBatch:
  """An evaluation batch: B scenes, one unaugmented view each (leading axis [B]).

  Attributes:
    points: PointSet (capacity N).
    segment: i32[N] semantic label of each stage-0 point (its grid-sample representative's label), -1 = ignore
      and in padded slots.
  """

  points: PointSet
  segment: np.ndarray
