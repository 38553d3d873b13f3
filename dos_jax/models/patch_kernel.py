"""A Pallas TPU kernel for segment-masked patch attention in a lane-dense layout: [G, H, D, P], positions minor.

  y = patch_kernel.patch_attention(q, k, v, q_segment, kv_segment)     # q, k, v, y: [G, H, D, P]

Why its own kernel: PTv3's heads are 16 wide. The generic TPU flash kernel takes [G, H, P, D] with D minor, and a
TPU array's minor dimension is stored in 128-lane tiles, so every q, k, v, output and gradient of width 16 occupies
8x its bytes in HBM, and XLA's copies around the kernel (the [G, P, 3, H, D] slices and head transposes) are
padded alike. The compiled scannet step spent ~200 of its ~520 GB per chip on such width-16 arrays
(`benchmarks.tpu_breakdown`). Here the patch axis P (a multiple of 128) is minor and D (a multiple of 8) is the
sublane axis, so nothing is padded; scores are computed transposed, s_T[j, i] = k[:, j] . q[:, i] (keys on
sublanes, queries on lanes), so the softmax over keys is a sublane reduction and P V is a plain matmul.

A patch (P <= 1024 keys) fits VMEM whole, so there is no online softmax: each grid step is one patch, the kernel
loops over heads and over query blocks of up to 256, and the backward pass recomputes the probabilities from the
saved log-sum-exp (the flash-attention backward without key blocking). Scores and probabilities never reach HBM.

Numerics: float32 accumulation throughout (inputs may be bfloat16); a masked score is a large negative finite
value, so a query with no key of its segment (a padding position) gets a finite output, which callers discard.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)
_QUERY_BLOCKS = (256, 128)
_SEGMENT_ROWS = 8  # key segment ids travel as [8, P] rows (a full sublane tile) and are transposed in VMEM
_BLOCK_BYTES = 6 * 2 ** 20


def _query_block(p: int) -> int:
  for block in _QUERY_BLOCKS:
    if p % block == 0:
      return block
  raise ValueError(f"patch_attention: patch length {p} is not a multiple of 128 lanes (pad it, as attention._tpu does)")


def _dot(a, b, contract_a: int, contract_b: int):
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())), preferred_element_type=jnp.float32)


def _key_column(kv_seg_ref):
  """i32[P, 1] key segment ids (from the [8, P] rows: a tile-aligned transpose, then one column)."""
  return jnp.transpose(kv_seg_ref[0])[:, :1]


def _scores_t(k, q, key_col, q_row, scale):
  """s_T[j, i] = scale k_j . q_i where key j and query i share a segment, else _MASKED: f32[P, bq]."""
  return jnp.where(key_col == q_row, _dot(k, q, 0, 0) * scale, _MASKED)


def _forward_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *, scale, block):
  heads, _, p = q_ref.shape[1:]
  key_col = _key_column(kv_seg_ref)
  # Heads and query blocks are unrolled: Mosaic stores rows of lse only at static sublane offsets.
  for h in range(heads):
    k, v = k_ref[0, h], v_ref[0, h]                                    # [D, P]
    for start in range(0, p, block):
      q = q_ref[0, h, :, start:start + block]                           # [D, bq]
      q_row = q_seg_ref[0, :, start:start + block]                       # [1, bq]
      s = _scores_t(k, q, key_col, q_row, scale)                         # [P, bq]
      m = jnp.max(s, axis=0, keepdims=True)
      e = jnp.exp(s - m)
      total = jnp.sum(e, axis=0, keepdims=True)
      o = jnp.dot(v.astype(jnp.float32), e, preferred_element_type=jnp.float32) / total
      o_ref[0, h, :, start:start + block] = o.astype(o_ref.dtype)
      lse_ref[0, h:h + 1, start:start + block] = m + jnp.log(total)


def _backward_kernel(q_ref, k_ref, v_ref, o_ref, do_ref, lse_ref, q_seg_ref, kv_seg_ref, dq_ref, dk_ref, dv_ref,
                     *, scale, block):
  heads, d, p = q_ref.shape[1:]
  key_col = _key_column(kv_seg_ref)
  for h in range(heads):
    k, v = k_ref[0, h], v_ref[0, h]                                    # [D, P]
    dk = jnp.zeros((d, p), jnp.float32)
    dv = jnp.zeros((d, p), jnp.float32)
    for start in range(0, p, block):
      cols = slice(start, start + block)
      q, do = q_ref[0, h, :, cols], do_ref[0, h, :, cols]              # [D, bq]
      o = o_ref[0, h, :, cols].astype(jnp.float32)
      delta = jnp.sum(do.astype(jnp.float32) * o, axis=0, keepdims=True)   # [1, bq]
      prob = jnp.exp(_scores_t(k, q, key_col, q_seg_ref[0, :, cols], scale) - lse_ref[0, h:h + 1, cols])
      dv = dv + _dot(do.astype(jnp.float32), prob, 1, 1)               # [D, P]
      dprob = _dot(v, do, 0, 0)                                         # [P, bq]
      ds = prob * (dprob - delta) * scale
      dq_ref[0, h, :, cols] = jnp.dot(k.astype(jnp.float32), ds,
                                      preferred_element_type=jnp.float32).astype(dq_ref.dtype)
      dk = dk + _dot(q.astype(jnp.float32), ds, 1, 1)
    dk_ref[0, h] = dk.astype(dk_ref.dtype)
    dv_ref[0, h] = dv.astype(dv_ref.dtype)


def _heads_per_step(h: int, d: int, p: int, itemsize: int) -> int:
  """Heads one grid step holds: the largest divisor of H whose blocks (the backward's 5 inputs and 3 outputs,
  double-buffered) stay within _BLOCK_BYTES, so the kernel fits every chip's default scoped VMEM (16 MiB on v4)."""
  fits = [n for n in range(1, h + 1) if h % n == 0 and 16 * n * d * p * itemsize <= _BLOCK_BYTES]
  return max(fits or [1])


def _grouped(t, n):
  """[G, H, D, P] -> [G * H/n, n, D, P] (a free reshape: head groups become grid steps)."""
  g, h, d, p = t.shape
  return t.reshape(g * (h // n), n, d, p)


def _specs(groups: int, n: int, d: int, p: int):
  whole = pl.BlockSpec((1, n, d, p), lambda i: (i, 0, 0, 0))
  lse = pl.BlockSpec((1, n, p), lambda i: (i, 0, 0))
  q_seg = pl.BlockSpec((1, 1, p), lambda i: (jax.lax.div(i, groups), 0, 0))
  kv_seg = pl.BlockSpec((1, _SEGMENT_ROWS, p), lambda i: (jax.lax.div(i, groups), 0, 0))
  return whole, lse, q_seg, kv_seg


def _params():
  return pltpu.CompilerParams(dimension_semantics=("parallel",))


def _segments(q_segment, kv_segment):
  g, p = q_segment.shape
  return (q_segment.astype(jnp.int32).reshape(g, 1, p),
          jnp.broadcast_to(kv_segment.astype(jnp.int32)[:, None, :], (g, _SEGMENT_ROWS, p)))


def _call(kernel, name, q, arrays, lse_in, outputs, flops, tensors_moved, q_segment, kv_segment):
  """One pallas_call over the patches' head groups: `arrays` ([G, H, D, P] each, grouped by heads per step) then
  the log-sum-exp (if `lse_in`) and the segment ids go in; `outputs` names what comes out, 'whole' ([G, H, D, P]
  in q's dtype) or 'lse' (f32). The cost estimate counts what the kernel moves: each block read or written once
  (`tensors_moved` arrays of q's size), the log-sum-exp and the segment ids."""
  g, h, d, p = q.shape
  n = _heads_per_step(h, d, p, q.dtype.itemsize)
  whole, lse, q_seg, kv_seg = _specs(h // n, n, d, p)
  shapes = {"whole": jax.ShapeDtypeStruct((g * h // n, n, d, p), q.dtype),
            "lse": jax.ShapeDtypeStruct((g * h // n, n, p), jnp.float32)}
  cost = pl.CostEstimate(flops=flops * g * h * p * p * d, transcendentals=g * h * p * p,
                         bytes_accessed=tensors_moved * q.size * q.dtype.itemsize + g * h * p * 4
                         + g * (1 + _SEGMENT_ROWS) * p * 4)
  extra = (lse_in,) if lse_in is not None else ()
  out = pl.pallas_call(
      functools.partial(kernel, scale=1.0 / math.sqrt(d), block=_query_block(p)),
      out_shape=tuple(shapes[o] for o in outputs), grid=(g * h // n,),
      in_specs=[whole] * len(arrays) + [lse] * len(extra) + [q_seg, kv_seg],
      out_specs=tuple({"whole": whole, "lse": lse}[o] for o in outputs),
      compiler_params=_params(), cost_estimate=cost, name=name,
  )(*(_grouped(t, n) for t in arrays), *extra, *_segments(q_segment, kv_segment))
  return tuple(t.reshape(q.shape) if o == "whole" else t for t, o in zip(out, outputs))


def _forward(q, k, v, q_segment, kv_segment):
  """-> (o [G, H, D, P], lse f32[G * H/n, n, P]) with n heads per grid step: QK^T and PV, 4 flops per (query,
  key, channel); q, k, v read and o written once."""
  return _call(_forward_kernel, "patch_attention_fwd", q, (q, k, v), None, ("whole", "lse"), 4, 4,
               q_segment, kv_segment)


def _backward(q, k, v, o, do, lse, q_segment, kv_segment):
  """-> (dq, dk, dv): the scores recomputed, then dV, dP, dQ and dK, 10 flops per (query, key, channel); five
  arrays read and three written once."""
  return _call(_backward_kernel, "patch_attention_bwd", q, (q, k, v, o, do), lse, ("whole",) * 3, 10, 8,
               q_segment, kv_segment)


@jax.custom_vjp
def patch_attention(q: jax.Array, k: jax.Array, v: jax.Array, q_segment: jax.Array,
                    kv_segment: jax.Array) -> jax.Array:
  """softmax(q^T k / sqrt(D)) over keys of the query's segment, applied to v, per patch and head.

  Args:
    q, k, v: [G, H, D, P] (G patches, H heads, D head width a multiple of 8, P positions a multiple of 128),
      float32 or bfloat16.
    q_segment, kv_segment: i32[G, P]; query i sees key j iff q_segment[i] == kv_segment[j].

  Returns:
    [G, H, D, P] in q's dtype.
  """
  return _forward(q, k, v, q_segment, kv_segment)[0]


def _vjp_forward(q, k, v, q_segment, kv_segment):
  o, lse = _forward(q, k, v, q_segment, kv_segment)
  return o, (q, k, v, o, lse, q_segment, kv_segment)


def _vjp_backward(res, do):
  q, k, v, o, lse, q_segment, kv_segment = res
  dq, dk, dv = _backward(q, k, v, o, do, lse, q_segment, kv_segment)
  return dq, dk, dv, None, None


patch_attention.defvjp(_vjp_forward, _vjp_backward)
