"""The full DOS network as pure functions of param pytrees: encoder + projector/prototype head.

  params = network.init_params(rng, batch, spec)                        # {'encoder': ..., 'head': ...}
  student_cos = network.student_apply(params, batch, rng=key, spec=spec)        # f32[G, Ns, K]
  teacher_cos = network.teacher_apply(teacher_params, batch, spec=spec)         # f32[G, Nt, K]
  at_rows = network.teacher_apply(teacher_params, batch, spec=spec, rows=index)  # f32[G, R, K] at index

The student and the teacher are the same functions with different params. The student runs on `batch.student`
(ONLY the visible points under supervision='observable'; the full view with `batch.mask_token` marking the
points whose embedding is replaced by the learnable mask token under 'masked_tokens'/'token_jitter'); the
teacher runs on `batch.teacher` (the full view), without drop path. Neither function reads the other's point set,
so masked coordinates cannot reach the student through this module.

`spec` is a `dos_jax.models.spec.ModelSpec` (`dos_jax.specs.model_spec(config)`), static (closed over under jit):
the network needs no experiment config.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp

from dos_jax.models import blocks
from dos_jax.models import encoder
from dos_jax.models import heads
from dos_jax.models.spec import ModelSpec


def _head(spec: ModelSpec) -> heads.DOSHead:
  return heads.DOSHead(hidden=int(spec.head_hidden), dim=int(spec.head_dim), num_prototypes=int(spec.num_prototypes))


def init_params(rng: jax.Array, batch: Any, spec: ModelSpec) -> Dict[str, Any]:
  """Initial params {'encoder': ..., 'head': ...} (f32) for batches shaped like `batch`.

  The encoder's params always include its learnable mask token (`encoder/embedding/mask_token`); it is only used
  (and only gets gradients) when spec.student_mask_token (supervision != 'observable').

  Args:
    rng: PRNG key.
    batch: TrainBatch [G packs] (numpy or jax; only shapes matter).
    spec: the ModelSpec.
  """
  enc_rng, head_rng = jax.random.split(rng)
  lead = len(batch.student.coord.shape) - 2
  points = jax.tree.map(lambda x: x.reshape((-1,) + tuple(x.shape[lead:])), batch.student)
  enc_params = encoder.init(enc_rng, points, spec)
  feat = jnp.zeros((1, encoder.output_dim(spec)), jnp.float32)
  head_params = _head(spec).init({"params": head_rng}, feat)["params"]
  return {"encoder": enc_params, "head": head_params}


def _order_rng(rng: Optional[jax.Array], spec: ModelSpec) -> Optional[jax.Array]:
  """The key of training-time order shuffling (spec.shuffle_orders), derived from the step's key by a
  fold-in so the drop-path stream is the same with shuffling on or off; None without shuffling."""
  if rng is None or not bool(spec.shuffle_orders):
    return None
  return jax.random.fold_in(rng, 0x0D5)


def _cosines(params, points, *, train: bool, rng: Optional[jax.Array], mask_token: Optional[jax.Array],
             spec: ModelSpec, order_rng: Optional[jax.Array] = None, rows: Optional[jax.Array] = None) -> jax.Array:
  """points: PointSet with leading [B, V] (or [G] packs) -> f32[B, V, N, K] ([G, N, K]) cosines to the
  prototypes (0 at padded slots); with rows (i32[..., R], sentinel N), f32[..., R, K] at those slots only."""
  lead = tuple(points.coord.shape[:-2])
  flat = jax.tree.map(lambda x: x.reshape((-1,) + tuple(x.shape[len(lead):])), points)
  if mask_token is not None:
    mask_token = mask_token.reshape((-1,) + tuple(mask_token.shape[len(lead):]))
  if rows is not None:
    rows = rows.reshape((-1,) + tuple(rows.shape[len(lead):]))
  # More rows than slots (a student holding the whole view, the token variants): the head is cheaper on the slots,
  # and its rows are gathered after.
  gather_after = rows is not None and rows.shape[-1] > flat.valid.shape[-1]
  at = None if gather_after else rows
  feat = encoder.apply(params["encoder"], flat, train=train, rng=rng, mask_token=mask_token,
                       order_rng=order_rng, spec=spec, rows=at)
  valid = flat.valid if at is None else blocks.take_rows(flat.valid, at, False)
  valid = valid[..., None]
  # Padded slots carry exactly-zero features; an L2 normalisation of a zero row has a NaN gradient that survives
  # the masking below (0 * inf), so the head sees a harmless constant there instead.
  feat = jnp.where(valid, feat, jnp.ones((), feat.dtype))
  cos = _head(spec).apply({"params": params["head"]}, feat)
  cos = jnp.where(valid, cos, 0.0)
  if gather_after:
    cos = blocks.take_rows(cos, rows)
  return cos.reshape(lead + tuple(cos.shape[1:]))


def student_apply(params, batch: Any, *, rng: Optional[jax.Array] = None, train: bool = True,
                  spec: ModelSpec, order_rng: Optional[jax.Array] = None) -> jax.Array:
  """The student's cosines f32[G, Ns, K] (G packs) on `batch.student` (drop path when `train`, keyed by `rng`).

  Under supervision='observable' the student set holds only the visible points and `mask_token` is ignored;
  with spec.student_mask_token `batch.mask_token: bool[G, Ns]` selects the points whose embedding is the
  learnable mask token. With spec.shuffle_orders and `train`, the serialization orders of the blocks are shuffled per stage
  from `rng` (upstream PTv3 / Sonata training), or from `order_rng` when given: the shard_map step gives each
  device its own drop-path key but one order key, so the orders are those of the same step on one device.
  """
  mask = batch.mask_token if spec.student_mask_token else None
  order_source = rng if order_rng is None else order_rng
  return _cosines(params, batch.student, train=train, rng=rng, mask_token=mask, spec=spec,
                  order_rng=_order_rng(order_source, spec) if train else None)


def teacher_apply(params, batch: Any, *, spec: ModelSpec, rng: Optional[jax.Array] = None,
                  rows: Optional[jax.Array] = None) -> jax.Array:
  """The teacher's cosines f32[G, Nt, K] on `batch.teacher` (full views, no drop path, no mask token).

  `rng`: the step's teacher key, used only for order shuffling (spec.shuffle_orders): as upstream, the
  teacher's forward draws its own order permutations, independent of the student's. None = deterministic orders.
  `rows`: optional i32[G, R] teacher slots (sentinel Nt): returns f32[G, R, K], the cosines at those slots (0 at
  the sentinel and padded slots), equal to gathering them from the full output. The encoder runs on the whole
  view; its up-cast's last level, projection and the head run on the R rows only when R <= Nt, else on the slots
  before the gather (the train step passes the student's target slots, the only teacher points the loss reads).
  """
  return _cosines(params, batch.teacher, train=False, rng=None, mask_token=None, spec=spec,
                  order_rng=_order_rng(rng, spec), rows=rows)
