"""Collapse diagnostics of the teacher's prototypes, cheap enough for every log step (jit-able, fixed shapes).

    diag = prototype_diagnostics(aux["teacher_logits"], aux["targets"], aux["valid"])   # from dos_loss's aux

All statistics are pooled over every valid point of the batch:
  * usage_entropy: entropy (nats) of the histogram of each point's arg-max prototype (over teacher logits);
    effective_prototypes = exp(usage_entropy) is 1 under total collapse and K under uniform usage;
    used_prototypes counts prototypes that are some point's arg-max.
  * argmax_point_fraction: fraction of valid points that are the arg-max (over points) of some prototype's target
    softmap. Softmaps collapsed onto a few points give a small value; at most min(K, N) / N.
  * softmap_entropy: mean over sets and prototypes of the entropy of the target softmap (each column normalised
    over the set's valid points), divided by log N_valid: 1 when every softmap is uniform over the points (no
    spatial selectivity), 0 when every softmap sits on one point.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp


def _flatten_sets(x, trailing):
  """[..., *trailing] -> [S, *trailing] (S = 1 for an unbatched input)."""
  lead = x.shape[:x.ndim - trailing]
  size = 1
  for d in lead:
    size *= d
  return x.reshape((size,) + x.shape[x.ndim - trailing:])


def prototype_diagnostics(teacher_logits: jax.Array, targets: jax.Array, valid: jax.Array) -> Dict[str, jax.Array]:
  """Prototype-usage and softmap statistics over the valid points (see module docstring).

  Args:
    teacher_logits: f32[N, K] or f32[B, ..., N, K] teacher logits (cos / τ_T) at the student's target points.
    targets: f32[..., N, K] target softmaps (same leading shape).
    valid: bool[..., N] points that received a target.

  Returns:
    dict of f32[] scalars: usage_entropy, effective_prototypes, used_prototypes, argmax_point_fraction,
    softmap_entropy. With no valid point at all: entropy 0, effective 1, fractions 0.
  """
  logits = _flatten_sets(teacher_logits, 2).astype(jnp.float32)
  t = _flatten_sets(targets, 2).astype(jnp.float32)
  ok = _flatten_sets(valid, 1)
  num_sets, num_points, num_protos = logits.shape
  okf = ok.astype(jnp.float32)
  total = jnp.sum(okf)

  # Prototype usage: histogram of arg-max prototypes over valid points.
  assign = jnp.argmax(logits, axis=-1)
  hist = jnp.zeros((num_protos,), jnp.float32).at[assign.reshape(-1)].add(okf.reshape(-1))
  p = hist / jnp.maximum(total, 1.0)
  usage_entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))

  # Point coverage: which valid points are some prototype's arg-max over the set's valid points.
  masked = jnp.where(ok[..., None], t, -jnp.inf)
  winner = jnp.argmax(masked, axis=1)                                       # [S, K]
  set_has_points = jnp.any(ok, axis=1)                                      # [S]
  claimed = jnp.zeros((num_sets, num_points), jnp.float32)
  claimed = claimed.at[jnp.arange(num_sets)[:, None], winner].max(set_has_points[:, None].astype(jnp.float32))
  coverage = jnp.sum(claimed * okf) / jnp.maximum(total, 1.0)

  # Softmap entropy per set and prototype, normalised by log N_valid (columns renormalised over valid points, so
  # per-point 'clustering' targets are measured the same way).
  col = jnp.where(ok[..., None], t, 0.0)
  col = col / jnp.maximum(jnp.sum(col, axis=1, keepdims=True), 1e-30)
  entropy = -jnp.sum(jax.scipy.special.xlogy(col, col), axis=1)            # [S, K]
  n_valid = jnp.sum(okf, axis=1)                                            # [S]
  has_spread = n_valid > 1
  norm_entropy = entropy / jnp.where(has_spread, jnp.log(jnp.maximum(n_valid, 2.0)), 1.0)[:, None]
  softmap_entropy = (jnp.sum(jnp.where(has_spread[:, None], norm_entropy, 0.0))
                     / jnp.maximum(jnp.sum(has_spread) * num_protos, 1))

  return dict(usage_entropy=usage_entropy, effective_prototypes=jnp.exp(usage_entropy),
              used_prototypes=jnp.sum(hist > 0).astype(jnp.float32), argmax_point_fraction=coverage,
              softmap_entropy=softmap_entropy.astype(jnp.float32))
