"""Patch attention with segment masks: XLA's attention everywhere, a fused kernel when compiled for TPU.

  y = attention.segment_attention(q, k, v, q_segment, kv_segment, reference)

`reference(q, k, v)` is the caller's own XLA formulation (`jax.nn.dot_product_attention` with the caller's mask);
it is what runs on CPU and GPU, unchanged. Compiled for a TPU, the same call lowers instead to a Pallas kernel with
segment ids, a query attending only to keys of its own segment, which the caller's mask also expresses: the two
compute the same softmax(QK^T / sqrt(d))V and differ by float rounding only (float32 accumulation). The kernel is
this project's `patch_kernel` (positions-minor layout, so PTv3's 16-wide heads are not padded to 128 lanes); the
generic Pallas flash kernel (`jax.experimental.pallas.ops.tpu.flash_attention`) stays selectable for comparison
(`tpu_kernel(..., kernel='flash')`, `benchmarks.tpu_attention`) and serves head widths the former cannot tile.

Why a kernel: XLA writes the [patches, heads, P, P] float32 score and probability matrices to HBM and reads them
back, forward and backward (P = 1024: 4 MiB per head and patch at 2 flops per byte); a kernel keeps them in VMEM.
The choice is made by `jax.lax.platform_dependent` at lowering, so a program compiled ahead of time for a TPU
topology on a CPU machine (`dos_jax.train.aot`) gets the kernel although JAX itself runs on the CPU.

Mosaic kernels are not partitioned by XLA: the kernel runs per device inside `jax.shard_map` over the mesh in
context, the leading (patch) axis split over every mesh axis, as the batch is. The train step sets that mesh
(`dos_jax.train.sharding.jit_train_step`; inside `make_shard_map_step` the axes are already manual); without a mesh
in context (other encoder calls) the XLA formulation runs on every platform.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

_LANES = 128            # the kernel's sequence blocks are multiples of 128
_BLOCK = (512, 256, 128)  # largest first: fewer passes over K/V per query block
# Segment ids of the positions added to reach a multiple of 128: they match no real query or key.
_PAD_QUERY, _PAD_KEY = -3, -2


def _block(length: int) -> int:
  return next(b for b in _BLOCK if length % b == 0)


def _flash(q, k, v, q_segment, kv_segment):
  """The Pallas TPU kernel on [G, P, H, D] (P a multiple of 128) -> [G, P, H, D]."""
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # pylint: disable=g-import-not-at-top
  p, d = q.shape[1], q.shape[-1]
  b = _block(p)
  sizes = fa.BlockSizes(block_q=b, block_k_major=b, block_k=b, block_b=1,
                        block_q_major_dkv=b, block_k_major_dkv=b, block_k_dkv=b, block_q_dkv=b,
                        block_k_major_dq=b, block_k_dq=b, block_q_dq=b)
  heads_first = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731  [G, P, H, D] <-> [G, H, P, D]
  y = fa.flash_attention(heads_first(q), heads_first(k), heads_first(v),
                         segment_ids=fa.SegmentIds(q=q_segment, kv=kv_segment), sm_scale=1.0 / math.sqrt(d),
                         block_sizes=sizes)
  return heads_first(y)


def _lane_dense(q, k, v, q_segment, kv_segment):
  """`patch_kernel.patch_attention` on [G, P, H, D] (P a multiple of 128) -> [G, P, H, D]: its positions-minor
  layout is a transpose away, which XLA folds into the copies that gather the patches."""
  from dos_jax.models import patch_kernel  # pylint: disable=g-import-not-at-top  (Pallas: only when compiling for TPU)
  to_kernel = lambda t: jnp.transpose(t, (0, 2, 3, 1))  # noqa: E731  [G, P, H, D] -> [G, H, D, P]
  y = patch_kernel.patch_attention(to_kernel(q), to_kernel(k), to_kernel(v), q_segment, kv_segment)
  return jnp.transpose(y, (0, 3, 1, 2))


KERNELS = {"patch": _lane_dense, "flash": _flash}


def _tpu(q, k, v, q_segment, kv_segment, kernel="patch"):
  """Pads the patch length to a multiple of 128 with positions of their own segments, runs the kernel per device
  under the current mesh (if any), and drops the padding. 'patch' (the default) is this project's positions-minor
  kernel; 'flash' the generic Pallas flash kernel, whose head-minor arrays pad a 16-wide head to 128 lanes."""
  p, d = q.shape[1], q.shape[-1]
  if kernel == "patch" and d % (32 // q.dtype.itemsize):  # head width must fill whole sublane tiles
    kernel = "flash"
  pad = -p % _LANES
  if pad:
    widen = lambda t: jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0)))  # noqa: E731
    q, k, v = widen(q), widen(k), widen(v)
    q_segment = jnp.pad(q_segment, ((0, 0), (0, pad)), constant_values=_PAD_QUERY)
    kv_segment = jnp.pad(kv_segment, ((0, 0), (0, pad)), constant_values=_PAD_KEY)
  mesh = jax.sharding.get_abstract_mesh()
  run = KERNELS[kernel]
  if not all(t == jax.sharding.AxisType.Manual for t in mesh.axis_types):
    spec = PartitionSpec(tuple(mesh.axis_names))
    run = jax.shard_map(run, mesh=mesh, in_specs=(spec,) * 5, out_specs=spec, check_vma=False)
  y = run(q, k, v, q_segment.astype(jnp.int32), kv_segment.astype(jnp.int32))
  return y[:, :p] if pad else y


def segment_attention(q: jax.Array, k: jax.Array, v: jax.Array, q_segment: jax.Array, kv_segment: jax.Array,
                      reference: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                      kernel: str = "patch") -> jax.Array:
  """Attention inside patches where query i sees key j iff q_segment[i] == kv_segment[j].

  Args:
    q, k, v: [G, P, H, D] (G patches, P positions, H heads, D head width), float32 or bfloat16.
    q_segment, kv_segment: i32[G, P].
    reference: (q, k, v) -> [G, P, H, D], the same attention written with XLA ops and the caller's mask; runs on
      every platform but TPU.
    kernel: the TPU kernel, 'patch' (positions-minor, `patch_kernel`) or 'flash' (the generic Pallas kernel).

  Returns:
    [G, P, H, D] in q's dtype. Every query must have at least one key of its segment (or be discarded by the
    caller): the kernel then gives a finite average, as XLA does for the caller's masks.
  """
  if jax.sharding.get_abstract_mesh().empty or q.shape[1] < _LANES:
    # No mesh in context (encoder calls outside the train step): XLA everywhere, since a Mosaic kernel would fail
    # on inputs sharded over several TPU devices without a shard_map around it. Patches under 128 positions: the
    # kernel would pad them to 128, and their score matrices are small anyway.
    return reference(q, k, v)
  return jax.lax.platform_dependent(q, k, v, q_segment, kv_segment,
                                    default=lambda q, k, v, *_: reference(q, k, v),
                                    tpu=functools.partial(_tpu, kernel=kernel))


def tpu_kernel(q, k, v, q_segment, kv_segment, kernel: str = "patch"):
  """The TPU branch of `segment_attention` (for tests: under `pallas.tpu.force_tpu_interpret_mode()` it runs on
  the CPU); kernel: 'patch' (what the step uses) or 'flash' (for comparison)."""
  return _tpu(q, k, v, q_segment, kv_segment, kernel)

