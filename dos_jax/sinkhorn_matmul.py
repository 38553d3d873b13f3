"""Zipf-Sinkhorn's steps by matrix products: `objective`'s log-domain schedule for logits of bounded range.

Per iteration the log-domain form (`objective.segment_zipf_sinkhorn`) takes a log-sum-exp over prototypes per row
and one over rows per segment: passes of exp over [N, K], each reading the scores and the rows' segment potentials
gathered to [N, K]. With E = exp(s - a), a_i = max_k s_ik (once), both sums are products with E:

  row step:  Σ_k exp(s_ik + v_mk)     = exp(a_i + b_m) (E exp(v - b)^T)[i, m],        b_m = max_k v_mk
  col step:  Σ_{i in m} exp(s_ik + u_i) = exp(c_m) (P^T E)[m, k],  P_im = [seg_i = m] exp(a_i + u_i - c_m),
                                                                    c_m = max_{i in m} (a_i + u_i)

so every factor lies in [0, 1] and each step reads E once, on the MXU (HIGHEST precision). The potentials are
those of the log domain up to float32 rounding while no term that matters underflows. Each sum's largest term is
at least exp(-2 B) when |logits| <= B (take k = argmax_k v_mk in the row step, i = argmax (a + u) in the column
step: E >= exp(-(max - min of a row))), and a term flushed to zero is below float32's smallest normal, so the
relative error is at most L tiny exp(2 B) for a sum of L terms: `usable` asks that to stay below eps. DOS's teacher
logits are cosines / τ_T, B = 1 / τ_T: 25 at τ_T = 0.04 (2 B + log L = 61 against log(eps / tiny) = 71).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dos_jax import segments


def usable(bound: float, num_points: int, num_prototypes: int) -> bool:
  """Whether logits with |logit| <= bound keep full float32 precision here: 2 bound + log max(N, K) <=
  log(eps / tiny) (float32)."""
  f = np.finfo(np.float32)
  return 2.0 * float(bound) + math.log(max(num_points, num_prototypes, 1)) <= math.log(f.eps / f.tiny)


def steps(scores: jax.Array, ids: jax.Array, num_segments: int, log_n: jax.Array, axis_name=None):
  """The row and column steps of `objective._sinkhorn_potentials`'s schedule, as matrix products.

  Args:
    scores: f32[N, K] logits (anything at dropped rows). ids: i32[N] from `segments.row_ids`.
    num_segments: M. log_n: f32[N] log of each row's segment size. axis_name: mesh axis sharding the rows
      (inside shard_map), or None.

  Returns:
    (row_step, col_step): row_step(v f32[M, K]) -> u f32[N] (0 on dropped rows); col_step(u, log_mass) ->
    v f32[M, K]; both the log domain's steps on log T = scores + u[:, None] + v[segment].
  """
  keep = ids < num_segments
  safe = jnp.where(keep[:, None], scores, 0.0)
  a = jnp.max(safe, axis=-1)
  e = jnp.where(keep[:, None], jnp.exp(safe - a[:, None]), 0.0)                       # [N, K] in [0, 1]
  member = ids[:, None] == jnp.arange(num_segments, dtype=ids.dtype)[None, :]         # [N, M]; dropped rows: none
  highest = lax.Precision.HIGHEST

  def row_step(v):
    b = jnp.max(v, axis=-1)                                                            # [M]
    r = jnp.einsum("ik,mk->im", e, jnp.exp(v - b[:, None]), precision=highest)         # [N, M]
    own = jnp.sum(jnp.where(member, r, 0.0), axis=-1)
    u = -log_n - a - segments.rows(b, ids) - jnp.log(jnp.where(own > 0, own, 1.0))
    return jnp.where(keep, u, 0.0)

  def col_step(u, log_mass):
    au = jnp.where(keep, a + u, -jnp.inf)
    c = segments.seg_max(au, ids, num_segments, axis_name)
    c = jnp.where(jnp.isfinite(c), c, 0.0)                                             # 0 for an empty segment
    p = jnp.where(member, jnp.exp(au - segments.rows(c, ids))[:, None], 0.0)          # [N, M] in [0, 1]
    total = jnp.einsum("im,ik->mk", p, e, precision=highest)                           # [M, K]
    if axis_name is not None:
      total = lax.psum(total, axis_name)
    return log_mass - c[:, None] - jnp.log(jnp.where(total > 0, total, 1.0))

  return row_step, col_step
