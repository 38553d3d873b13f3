"""Packing the views of one device's batch into ONE point set per stage (segment ids; no padding per view).

Per-view padding (`patches.build_point_set`) pads every view to a capacity sized for the largest view: on real
scans most slots are empty (ScanNet base config: ~11% of the encoder's FLOPs touch a real point). A *packed* set
holds the M views of a pack (M = scenes per pack x views) back to back, each view padded only as its stage's
attention needs (as upstream Pointcept batches by offsets):

  * Sequence layout (serialization order o, stage s, patch size P = min(P_s, L_s), L_s the stage's sequence
    length): view m occupies sequence positions [off_m, off_m + n_m). A view with n_m > P starts on a patch
    boundary and reserves ceil(n_m / P) * P positions (its patches are exactly its unpacked patches); a view
    with n_m <= P lies inside ONE patch, shared with other short views (first-fit decreasing). Offsets are the
    same for every order (only the order inside a view differs); see `layout`.
  * Slot layout: view m's real points are slots [S_m, S_m + n_m) (S_m = sum of earlier counts), in the view's own
    slot order; padding slots (a small margin) follow. The slots are what embedding, CPE, MLP, pooling and the
    objective compute on; only attention works on the sequence: `order[o]: i32[L_s]` is the slot at each
    position (N_s for a gap: a position no point takes), `inverse[o]: i32[N_s]` each slot's position (L_s for
    padding slots). Each attention block gathers its sequence from the slots, attends and scatters back (as
    upstream Pointcept's pad/unpad indices), so patch padding costs attention FLOPs only.
  * `Stage.segment[i]` = m for real slots of view m, M for padding. Attention masks keys of another segment, CPE
    neighbours and pooling parents are the per-view ones offset by S_m, so no information crosses views and each
    view's features equal its unpacked features (tested to float32 rounding).

Budgets. Two numbers per stage and branch are fixed by the config: the slot budget N_s (`data.packed_capacity`,
`data.packed_student_capacity`) and the sequence budget L_s (`data.packed_sequence`,
`data.packed_student_sequence`). `fill_pack` fills them: pack k builds the scenes of its window of the global
example sequence (examples k*W .. k*W + W - 1, W = data.pack_scenes) and takes the fullest of FILL_ORDERS + 1
first-fit passes over them (window order, then fixed permutations seeded by k): each pass takes every scene (all
its views, whole) that still fits every budget, and 'fullest' sums the fraction of every slot budget used. A pack is
therefore a deterministic function of its window, it holds as many views as fit, the scene count varies from
pack to pack, and no real point is dropped beyond each view's own capacity. Budgets come from
`benchmarks/padding.py --calibrate` (what a typical group of scenes needs, `calibrate`); a config that leaves them
() gets `spec.default_budgets`: W scenes at their per-view capacities (every window fits whole: the per-view padded
batch, as a pack). `pack_point_sets` raises `PackOverflowError` when a pack does not fit (the fill never builds
one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from dos_jax.batching import spec as spec_lib
from dos_jax.batching import structs
from dos_jax.errors import DataError


# First-fit passes the fill tries besides window order. One pass binds on whichever budget fills first and leaves
# the other stages' slack (scenes differ in how they pool: a KITTI crop keeps 3-8% of its points at stage 3); the
# window's scenes in another order often mix into a pack that fills every stage. Chosen on the calibration scans
# only (KITTI sequence 01, steps 30000+, neither the budgets' calibration steps nor the measured ones): useful
# fraction (benchmarks/padding.py's measure) 87.4% for window order alone, then 90.5 / 91.2 / 91.7 / 92.1 / 92.4%
# for 4 / 8 / 16 / 32 / 128 more passes; 16 is where the gain per doubling falls under half a point. A pass costs
# ~W `fits` checks on counts (no views are built twice).
FILL_ORDERS = 16
FILL_SEED = 0x5EED  # the permutations' generator: (FILL_SEED, first example of the window)


class PackOverflowError(DataError):
  """The views of a pack need more sequence positions than the packed capacity at `stage`."""

  def __init__(self, message: str, branch: str, stage: int, footprint: int, capacity: int, counts):
    super().__init__(message)
    self.branch, self.stage, self.footprint, self.capacity = branch, stage, footprint, capacity
    self.counts = list(counts)


def layout(counts: Sequence[int], patch: int) -> Tuple[np.ndarray, int]:
  """Sequence offsets of views with `counts` points at a stage whose attention patch size is `patch`.

  Long views (n > patch) come first, in view order, each on its own ceil(n / patch) patches from a boundary
  (their partial last patch is theirs alone, as upstream pads it). Short views (n <= patch) are then put into
  whole patches by first-fit decreasing (a short view never straddles a boundary); the least-filled patch goes
  last, so the footprint ends right after its points. Deterministic in `counts`.

  Returns:
    (offsets i64[M], footprint): the first sequence position of each view, and the end of the last used
    position (the smallest capacity that holds this layout).
  """
  counts = [int(c) for c in counts]
  offsets = np.zeros(len(counts), dtype=np.int64)
  cursor = 0
  for m, n in enumerate(counts):
    if n > patch:
      offsets[m] = cursor
      cursor += -(-n // patch) * patch
  bins: List[List[int]] = []  # [fill, view, view, ...]
  short = sorted((m for m, n in enumerate(counts) if n <= patch), key=lambda m: (-counts[m], m))
  for m in short:
    for b in bins:
      if b[0] + counts[m] <= patch:
        b.append(m)
        b[0] += counts[m]
        break
    else:
      bins.append([counts[m], m])
  if bins:  # the least-filled patch last (ties: creation order), so the footprint stops at its end
    last = min(range(len(bins)), key=lambda i: (bins[i][0], -i))
    bins.append(bins.pop(last))
  for b in bins:
    pos = cursor
    for m in b[1:]:
      offsets[m] = pos
      pos += counts[m]
    end = pos
    cursor += patch
  footprint = end if bins else cursor
  return offsets, int(footprint)


def stage_patches(patch_size: Union[int, Sequence[int]], num_stages: int) -> List[int]:
  """The model's attention patch size at each stage: an int for every stage, or one per stage (upstream
  `enc_patch_size`). Raises ValueError when a tuple has the wrong length."""
  if isinstance(patch_size, (int, np.integer)):
    return [int(patch_size)] * num_stages
  sizes = [int(p) for p in patch_size]
  if len(sizes) != num_stages or min(sizes) < 1:
    raise ValueError(f"per-stage patch sizes {sizes}: expected {num_stages} positive ints (one per encoder "
                      "stage; model enc_patch_size)")
  return sizes


def footprints(counts: np.ndarray, patch_size: Union[int, Sequence[int]]) -> np.ndarray:
  """Sequence footprint per stage of one pack: counts i64[M, S] (points of each view at each stage) -> i64[S].

  Uses the model's patch size at every stage: a footprint <= the patch size also fits a sequence shorter than
  the patch (the whole stage is then one patch), so the result is a valid sequence length either way.
  """
  counts = np.asarray(counts)
  patches_ = stage_patches(patch_size, counts.shape[1])
  return np.array([layout(counts[:, s], patches_[s])[1] for s in range(counts.shape[1])], dtype=np.int64)


def round_capacity(value: float, patch_size: int = 0, multiple: int = 8) -> int:
  """A slot capacity >= value, rounded up to `multiple` slots (slots need no patch multiple: the sequence is
  separate). `patch_size` is unused (kept for callers that pass it)."""
  del patch_size
  v = max(1, int(math.ceil(value)))
  return -(-v // multiple) * multiple


def round_sequence(value: float, patch_size: int, multiple: int = 8) -> int:
  """A sequence length >= value: up to `multiple` while within one patch, else up to a multiple of the patch
  (attention pads to whole patches anyway, so a length between patch multiples would buy nothing)."""
  v = max(1, int(math.ceil(value)))
  if v <= patch_size:
    return min(-(-v // multiple) * multiple, patch_size)
  return -(-v // patch_size) * patch_size


def calibrate(samples: np.ndarray, patch_size: Union[int, Sequence[int]], quantile: float = 1.0,
              margin: float = 1.0, kind: str = "slots") -> List[int]:
  """Per-stage packed sizes from sampled packs of the real view pipeline.

  Args:
    samples: i64[num_packs, S]: real points per pack and stage (kind='slots': `counts.sum(0)`) or sequence
      footprints (kind='sequence': `footprints`).
    patch_size: the model's attention patch size (an int or one per stage).
    quantile: which quantile of the samples to cover (1.0 = the largest seen).
    margin: multiplier on that quantile (headroom for unseen scenes).
    kind: 'slots' (rounded to 8) or 'sequence' (rounded to 8 within a patch, else to whole patches).

  Returns:
    [C_0, ..., C_{S-1}] (each stage sized from its own data; non-increasing is not required).
  """
  samples = np.asarray(samples, dtype=np.float64)
  if samples.ndim != 2 or samples.shape[0] == 0:
    raise ValueError(f"calibrate: expected samples [num_packs, stages], got shape {samples.shape}")
  if not 0.0 < quantile <= 1.0 or margin < 1.0:
    raise ValueError(f"calibrate: quantile={quantile} must be in (0, 1] and margin={margin} >= 1")
  if kind not in ("slots", "sequence"):
    raise ValueError(f"calibrate: kind={kind!r}, expected 'slots' or 'sequence'")
  patches_ = stage_patches(patch_size, samples.shape[1])
  q = np.quantile(samples, quantile, axis=0, method="higher")
  if kind == "slots":
    return [round_capacity(v * margin) for v in q]
  return [round_sequence(v * margin, p) for v, p in zip(q, patches_)]


def stage_counts(point_set: structs.PointSet) -> List[int]:
  """Real points at every stage of an unbatched PointSet."""
  return [int(np.count_nonzero(s.valid)) for s in point_set.stages]


def pack_point_sets(sets: Sequence[structs.PointSet], capacities: Sequence[int],
                    patch_size: Union[int, Sequence[int]], branch: str = "teacher",
                    sequence: Optional[Sequence[int]] = None, view_ids: Optional[Sequence[int]] = None,
                    num_segments: Optional[int] = None) -> Tuple[structs.PointSet, List[int]]:
  """Packs unbatched per-view sets (real points first at every stage, as `patches.build_point_set` makes them).

  Args:
    sets: M PointSets of one pack, in segment order.
    capacities: [N_0, ..., N_{S-1}] slot capacities.
    patch_size: the model's attention patch size, an int or one per stage (stage s uses min(P_s, L_s)).
    branch: 'teacher' | 'student' (error messages and `PackOverflowError.branch`).
    sequence: [L_0, ..., L_{S-1}] attention sequence lengths; None or () = the slot capacities.
    view_ids: M global view indices (`PointSet.view_id`, keys of the drop-path masks); None = 0, 1, ..., M-1.
    num_segments: M' >= M segments of the packed set (static; views M..M'-1 are empty, their view_id 0);
      None = M. Padding slots get segment M'.

  Returns:
    (packed PointSet with `segment` on every stage; stage s has order i32[O, L_s] (slot per position, N_s for
    gaps) and inverse i32[O, N_s] (position per slot, L_s for padding slots); stage-0 slot offsets S_m of the
    views: list of M ints).

  Raises:
    PackOverflowError when a stage's real points exceed its slots or its layout exceeds its sequence length.
  """
  num_stages = len(sets[0].stages)
  sequence = list(sequence) if sequence else list(capacities)
  if len(capacities) != num_stages or len(sequence) != num_stages:
    raise ValueError(f"packed {branch} capacities {list(capacities)} / sequence lengths {sequence} must give "
                      f"{num_stages} stages, one per encoder stage (data.packed_capacity, "
                      "data.packed_student_capacity, data.packed_sequence, data.packed_student_sequence)")
  patches_ = stage_patches(patch_size, num_stages)
  m_count = len(sets)
  m_total = m_count if num_segments is None else int(num_segments)
  if m_total < m_count:
    raise ValueError(f"num_segments={m_total} < {m_count} views")
  counts = np.array([stage_counts(ps) for ps in sets], dtype=np.int64)  # [M, S]
  starts = np.concatenate([np.zeros((1, num_stages), np.int64), np.cumsum(counts, axis=0)], axis=0)  # [M+1, S]
  stages = []
  for s in range(num_stages):
    cap, length = int(capacities[s]), int(sequence[s])
    total = int(starts[-1, s])
    offsets, end = layout(counts[:, s], min(patches_[s], length))
    for what, need, have in (("slots", total, cap), ("sequence positions", end, length)):
      if need > have:
        raise PackOverflowError(f"packed {branch} stage {s}: the pack's views need {need} {what} (counts "
                                f"{counts[:, s].tolist()}), capacity {have}; recalibrate with "
                                "benchmarks/padding.py --calibrate", branch, s, need, have, counts[:, s])
    num_orders = sets[0].stages[s].order.shape[0]
    grid = np.zeros((cap, 3), np.int32)
    valid = np.zeros(cap, bool)
    valid[:total] = True
    segment = np.full(cap, m_total, np.int32)
    neighbors = np.full((cap, structs.NEIGHBOR_OFFSETS.shape[0]), cap, np.int32)
    order = np.full((num_orders, length), cap, np.int32)           # gaps read the zero sentinel row
    for m, ps in enumerate(sets):
      st, n, lo, off = ps.stages[s], int(counts[m, s]), int(starts[m, s]), int(offsets[m])
      grid[lo:lo + n] = st.grid[:n]
      segment[lo:lo + n] = m
      nb = st.neighbors[:n]
      neighbors[lo:lo + n] = np.where(nb >= st.valid.shape[0], cap, nb + lo)
      order[:, off:off + n] = st.order[:, :n] + lo
    inverse = np.full((num_orders, cap), length, np.int32)           # padding slots: read by no position
    rows, pos = np.nonzero(order < cap)
    inverse[rows, order[rows, pos]] = pos
    stages.append(structs.Stage(grid=grid, valid=valid, order=order, inverse=inverse, neighbors=neighbors,
                                segment=segment))
  parents = []
  for s in range(num_stages - 1):
    cap, cap_next = int(capacities[s]), int(capacities[s + 1])
    parent = np.full(cap, cap_next, np.int32)
    for m, ps in enumerate(sets):
      n, lo, lo_next = int(counts[m, s]), int(starts[m, s]), int(starts[m, s + 1])
      parent[lo:lo + n] = ps.parent[s][:n] + lo_next
    parents.append(parent)
  cap0, total0 = int(capacities[0]), int(starts[-1, 0])
  c_in = sets[0].feat.shape[1]
  coord = np.zeros((cap0, 3), np.float32)
  feat = np.zeros((cap0, c_in), np.float32)
  point_index = np.full(cap0, -1, np.int32)
  coord[:total0] = np.concatenate([ps.coord[:n] for ps, n in zip(sets, counts[:, 0])])
  feat[:total0] = np.concatenate([ps.feat[:n] for ps, n in zip(sets, counts[:, 0])])
  point_index[:total0] = np.concatenate([ps.point_index[:n] for ps, n in zip(sets, counts[:, 0])])
  stem = None
  if sets[0].stem_neighbors is not None:  # PT-v3m1 stem: a wider stage-0 neighbourhood, offset like `neighbors`
    stem = np.full((cap0, sets[0].stem_neighbors.shape[1]), cap0, np.int32)
    for m, ps in enumerate(sets):
      n, lo = int(counts[m, 0]), int(starts[m, 0])
      nb = ps.stem_neighbors[:n]
      stem[lo:lo + n] = np.where(nb >= ps.coord.shape[0], cap0, nb + lo)
  ids = np.zeros(m_total, np.int64)
  ids[:m_count] = np.arange(m_count) if view_ids is None else np.asarray(view_ids, np.int64)
  packed = structs.PointSet(coord=coord, feat=feat, stages=tuple(stages), parent=tuple(parents),
                            point_index=point_index, stem_neighbors=stem,
                            view_id=(ids % 2**31).astype(np.int32))
  return packed, [int(v) for v in starts[:-1, 0]]


# ------------------------------------------------------------------------------------------ training batches
def pack_train_views(pieces: Sequence[structs.TrainView], spec: spec_lib.PackSpec,
                     view_ids: Optional[Sequence[int]] = None) -> structs.TrainBatch:
  """Per-view pieces of whole scenes (scene-major: scene b's view v is piece b * V + v) -> one pack.

  spec: the packing (budgets, patch size, V = spec.num_views, M = spec.max_views segments).
  view_ids: the views' global indices (`PointSet.view_id`); None = 0..len(pieces)-1.

  Raises:
    PackOverflowError when the pieces exceed a budget (`fill_pack` never lets that happen).
  """
  v_count, m_total = spec.num_views, spec.max_views
  if len(pieces) % v_count or len(pieces) > m_total:
    raise ValueError(f"{len(pieces)} views: expected whole scenes of {v_count} views, at most {m_total}")
  teacher, t_starts = pack_point_sets([p.teacher for p in pieces], spec.teacher, spec.patch_size, "teacher",
                                      spec.teacher_sequence, view_ids, m_total)
  student, s_starts = pack_point_sets([p.student for p in pieces], spec.student, spec.patch_size, "student",
                                      spec.student_sequence, view_ids, m_total)
  cap_s, cap_t = student.coord.shape[0], teacher.coord.shape[0]
  mask_token = np.zeros(cap_s, bool)
  target_valid = np.zeros(cap_s, bool)
  cross_valid = np.zeros(cap_s, bool)
  target_index = np.full(cap_s, cap_t, np.int32)
  cross_index = np.full(cap_s, cap_t, np.int32)
  for m, piece in enumerate(pieces):
    n = int(np.count_nonzero(piece.student.valid))
    lo = s_starts[m]
    other = (m // v_count) * v_count + (m % v_count + 1) % v_count
    for src, dst, valid_src, valid_dst, t in ((piece.target_index, target_index, piece.target_valid, target_valid, m),
                                              (piece.cross_index, cross_index, piece.cross_valid, cross_valid, other)):
      idx = src[:n]
      hit = idx < pieces[t].teacher.coord.shape[0]
      dst[lo:lo + n] = np.where(hit, idx + t_starts[t], cap_t)
      valid_dst[lo:lo + n] = valid_src[:n] & hit
    mask_token[lo:lo + n] = piece.mask_token[:n]
  return structs.TrainBatch(teacher=teacher, student=student, mask_token=mask_token,
                            target_index=target_index, target_valid=target_valid, cross_index=cross_index,
                            cross_valid=cross_valid, view_valid=np.arange(m_total) < len(pieces))


@dataclasses.dataclass
class SceneExample:
  """One global example of the training pipeline: a scene's V views, ready to pack.

  Attributes:
    views: V unbatched TrainView pieces (`train_views.train_views`).
    stats: drop counts of these views (`train_views(stats=...)`).
    index: the global example index g (its views are g * V + v: `PointSet.view_id`).
  """
  views: list
  stats: dict
  index: int

  def counts(self, branch: str) -> np.ndarray:
    """i64[V, S] real points of each view at each stage of `branch` ('teacher' | 'student')."""
    return np.array([stage_counts(getattr(p, branch)) for p in self.views], dtype=np.int64)


def fits(teacher_counts: np.ndarray, student_counts: np.ndarray, spec: spec_lib.PackSpec) -> bool:
  """Whether views with these per-stage counts (i64[M, S] per branch) fit every budget of `spec` (slots: the sum;
  sequence: `layout`'s footprint, as `pack_point_sets` lays them out)."""
  patches_ = stage_patches(spec.patch_size, teacher_counts.shape[1])
  for counts, slots, seq in ((teacher_counts, spec.teacher, spec.teacher_sequence),
                             (student_counts, spec.student, spec.student_sequence)):
    for s in range(counts.shape[1]):
      if int(counts[:, s].sum()) > slots[s] or layout(counts[:, s], min(patches_[s], seq[s]))[1] > seq[s]:
        return False
  return True


def pack_value(teacher_counts: np.ndarray, student_counts: np.ndarray, spec: spec_lib.PackSpec) -> float:
  """How full a pack is: the fraction of every slot budget its views use (i64[M, S] per branch), summed over
  stages and branches. Slots rather than FLOPs, so the fill needs no model: stages whose budgets bind are the
  ones a better mix relieves."""
  return float(sum((np.asarray(c).sum(0) / np.asarray(b, np.float64)).sum()
                   for c, b in ((teacher_counts, spec.teacher), (student_counts, spec.student))))


def first_fit(counts: Sequence[Tuple[np.ndarray, np.ndarray]], order: Sequence[int], spec: spec_lib.PackSpec
              ) -> List[int]:
  """The scenes one first-fit pass takes: in `order`, each scene (counts: (teacher i64[V, S], student i64[V, S]))
  that still fits every budget with the scenes taken before it (`fits`). Returns their indices, in pass order."""
  taken: List[int] = []
  t = np.zeros((0, len(spec.teacher)), np.int64)
  s = np.zeros((0, len(spec.student)), np.int64)
  for i in order:
    t2, s2 = np.concatenate([t, counts[i][0]]), np.concatenate([s, counts[i][1]])
    if fits(t2, s2, spec):
      taken.append(int(i))
      t, s = t2, s2
  return taken


def fill_pack(example_at: Callable[[int], SceneExample], first: int, spec: spec_lib.PackSpec,
              stats: Optional[dict] = None) -> List[SceneExample]:
  """The scenes of the pack whose window starts at global example `first`, in window order: the fullest
  (`pack_value`; ties to the earlier pass) of FILL_ORDERS + 1 first-fit passes (`first_fit`) over the window's
  W = spec.pack_scenes examples - window order first, then permutations drawn from a generator seeded by `first`.

  `example_at(g)` builds global example g; every example of the window is built once. Deterministic in the
  examples and `first`, so a pack is a pure function of (config, seed, k). A scene that does not fit even an
  empty pack (possible only beyond the teacher's stage 0, whose budgets hold one scene at its per-view capacity:
  `spec.pipeline_spec`) is never taken, and counted in `stats['oversize_scenes']`.

  Raises:
    DataError when no scene of the window fits an empty pack.
  """
  window = [example_at(g) for g in range(first, first + spec.pack_scenes)]
  counts = [(e.counts("teacher"), e.counts("student")) for e in window]
  alone = [fits(t, s, spec) for t, s in counts]
  if stats is not None and not all(alone):
    stats["oversize_scenes"] = stats.get("oversize_scenes", 0) + alone.count(False)
  if not any(alone):
    raise DataError(f"no scene of global examples {first}..{first + spec.pack_scenes - 1} fits an empty pack; "
                    "recalibrate data.packed_capacity / data.packed_student_capacity / data.packed_sequence / "
                    "data.packed_student_sequence (benchmarks/padding.py --calibrate)")
  rng = np.random.default_rng((FILL_SEED, first))
  orders = [np.arange(len(window))] + [rng.permutation(len(window)) for _ in range(FILL_ORDERS)]
  best, best_value = None, -1.0
  for order in orders:
    taken = first_fit(counts, order, spec)
    value = pack_value(np.concatenate([counts[i][0] for i in taken]),
                       np.concatenate([counts[i][1] for i in taken]), spec)
    if value > best_value:
      best, best_value = taken, value
  return [window[i] for i in sorted(best)]


def build_pack(members: Sequence[SceneExample], spec: spec_lib.PackSpec) -> structs.TrainBatch:
  """The pack of these scenes (`pack_train_views`, views keyed by their global indices)."""
  ids = [e.index * spec.num_views + v for e in members for v in range(spec.num_views)]
  return pack_train_views([p for e in members for p in e.views], spec, ids)


@dataclasses.dataclass
class _Counted:
  """An example reduced to what the fill reads: its index and counts(branch)."""
  index: int
  by_branch: dict

  def counts(self, branch: str) -> np.ndarray:
    return np.asarray(self.by_branch[branch])


def fill_usage(counts: Sequence[dict], spec: spec_lib.PackSpec) -> dict:
  """What the budget fill uses on examples given by their counts ({'teacher', 'student'}: i64[V, S] each, in
  global order): the fill of every whole window (`fill_pack`), then per budget the most any pack used -
  {'teacher', 'student'}: largest slot totals, {'teacher_sequence', 'student_sequence'}: largest footprints
  (i64[S] each), and 'packs'. Budgets shrunk to these leave those packs unchanged (`calibrate --tighten`)."""
  examples = [_Counted(g, c) for g, c in enumerate(counts)]
  used = {k: [] for k in ("teacher", "student", "teacher_sequence", "student_sequence")}
  for first in range(0, len(examples) - spec.pack_scenes + 1, spec.pack_scenes):
    members = fill_pack(lambda g: examples[g], first, spec)
    for name in ("teacher", "student"):
      c = np.concatenate([m.counts(name) for m in members])
      used[name].append(c.sum(0))
      used[f"{name}_sequence"].append(footprints(c, spec.patch_size))
  out = {k: np.max(v, axis=0) for k, v in used.items()}
  out["packs"] = len(used["teacher"])
  return out
