"""The DOS head: projector MLP + L2-normalised prototypes, producing cosine similarities.

    head = DOSHead(hidden=256, dim=64, num_prototypes=1024)
    params = head.init(rng, feat)["params"]          # {'proj_in', 'proj_out', 'prototypes'}
    cos = head.apply({"params": params}, feat)       # f32[..., K] in [-1, 1]

The objective divides `cos` by a temperature (τ_S for the student, τ_T for the teacher). Projector as in Sonata's
online-cluster head (Linear-GELU-Linear); features and prototypes are L2-normalised, so the logits are bounded by
1/τ, which keeps Sinkhorn's log-domain arithmetic well inside float32 range.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


_EPS = 1e-6


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = _EPS) -> jax.Array:
  """x / max(‖x‖, eps) along `axis`: a zero vector stays zero, and so does its gradient (no NaN)."""
  # rsqrt of the clamped squared norm: sqrt(0) has an infinite derivative, which would turn the zero rows of
  # padded slots into NaN gradients for every parameter upstream.
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


class DOSHead(nn.Module):
  """Projector + prototypes: features f[..., C] -> cosines f32[..., K]. Pure and batch-shape agnostic.

  Attributes:
    hidden: projector hidden width.
    dim: projector output (prototype) dimension.
    num_prototypes: K.
    dtype: compute dtype of the projector (params stay float32); the normalisation and the cosines are float32.
    hidden_dim, out_dim: accepted aliases of `hidden` and `dim` (give one spelling of each).
  """

  hidden: Optional[int] = None
  dim: Optional[int] = None
  num_prototypes: int = 1024
  dtype: jnp.dtype = jnp.float32
  hidden_dim: Optional[int] = None
  out_dim: Optional[int] = None

  def _sizes(self):
    hidden = _one_of("hidden", self.hidden, "hidden_dim", self.hidden_dim)
    dim = _one_of("dim", self.dim, "out_dim", self.out_dim)
    if self.num_prototypes < 1:
      raise ValueError(f"num_prototypes must be >= 1, got {self.num_prototypes}")
    return hidden, dim

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: f[..., C] encoder features -> f32[..., K] cosine of the projected feature to each prototype."""
    hidden, dim = self._sizes()
    h = nn.Dense(hidden, dtype=self.dtype, name="proj_in")(x)
    h = nn.gelu(h, approximate=False)
    h = nn.Dense(dim, dtype=self.dtype, name="proj_out")(h)
    feat = l2_normalize(h.astype(jnp.float32))
    prototypes = self.param("prototypes", nn.initializers.normal(stddev=1.0), (self.num_prototypes, dim),
                            jnp.float32)
    # Normalised at use (not stored normalised) so the optimizer may move them freely; HIGHEST precision keeps
    # cos/τ accurate on accelerators whose default matmul precision is bf16 (an error of 1e-3 in cos is 0.025
    # in a logit at τ_T = 0.04).
    return jnp.einsum("...d,kd->...k", feat, l2_normalize(prototypes), precision=jax.lax.Precision.HIGHEST)


def _one_of(name, value, alias, alias_value) -> int:
  if (value is None) == (alias_value is None):
    raise ValueError(f"DOSHead: give exactly one of {name!r} or {alias!r} (got {value!r}, {alias_value!r})")
  out = value if value is not None else alias_value
  if int(out) < 1:
    raise ValueError(f"DOSHead: {name} must be >= 1, got {out}")
  return int(out)
