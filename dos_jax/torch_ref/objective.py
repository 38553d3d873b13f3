"""PyTorch reference of the DOS objective (eager, CPU, float32/float64), for parity checks and benchmarks.

Written independently of `dos_jax.objective`: it follows the DESIGN.md algorithm literally, materialising the
log-domain matrix log Q and rescaling it step by step (initial total-mass normalisation, every row and column step,
final column normalisation), as a PyTorch user would write it. Same shapes and semantics as the JAX module: the
point axis is -2, the prototype axis -1, `valid` masks real points, padded rows come out exactly 0.

Not production code: no sharding, no fused kernels. Requires `torch` (a dev/parity dependency only).
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch


def zipf_prior(num_prototypes: int, alpha: float, dtype=torch.float32) -> torch.Tensor:
  """w_k = k^-α / Σ_j j^-α, k = 1..K: f[K] (prototype 0 has rank 1)."""
  rank = torch.arange(1, num_prototypes + 1, dtype=torch.float64)
  logits = -float(alpha) * torch.log(rank)
  return torch.softmax(logits, dim=0).to(dtype)


def _masked_logsumexp(log_q: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
  """logsumexp over `dim` of a tensor whose padded rows hold -inf; empty reductions give 0 instead of -inf."""
  out = torch.logsumexp(log_q, dim=dim, keepdim=True)
  return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def zipf_sinkhorn(scores: torch.Tensor, valid: torch.Tensor, alpha: float, num_iters: int = 3) -> torch.Tensor:
  """Zipf-Sinkhorn target softmaps, DESIGN.md schedule, in the log domain.

  Args:
    scores: f[..., N, K] teacher logits.
    valid: bool[..., N].
    alpha: Zipf exponent (0 = uniform).
    num_iters: (row, column) rounds.

  Returns:
    f[..., N, K]: columns sum to 1 over valid points, padded rows 0.
  """
  num_protos = scores.shape[-1]
  row_mask = valid.unsqueeze(-1)
  log_w = torch.log(zipf_prior(num_protos, alpha, torch.float64)).to(scores.dtype)
  n_valid = valid.sum(dim=-1).clamp(min=1).to(scores.dtype)
  neg_inf = torch.tensor(-math.inf, dtype=scores.dtype)
  log_q = torch.where(row_mask, scores, neg_inf)
  # Total mass 1 over the whole set.
  total = torch.logsumexp(log_q.flatten(-2), dim=-1)
  log_q = log_q - torch.where(torch.isfinite(total), total, torch.zeros_like(total))[..., None, None]
  for _ in range(num_iters):
    # (a) every valid point (row) to mass 1/N_valid.
    log_q = log_q - _masked_logsumexp(log_q, valid, -1) - torch.log(n_valid)[..., None, None]
    log_q = torch.where(row_mask, log_q, neg_inf)
    # (b) column k to mass w_k.
    log_q = log_q - _masked_logsumexp(log_q, valid, -2) + log_w
  log_q = log_q - _masked_logsumexp(log_q, valid, -2)
  return torch.where(row_mask, torch.exp(log_q), torch.zeros((), dtype=scores.dtype))


def softmap(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  """Softmax over the point axis per prototype, padded rows 0: f[..., N, K]."""
  row_mask = valid.unsqueeze(-1)
  logits = torch.where(row_mask, scores, torch.tensor(-math.inf, dtype=scores.dtype))
  probs = torch.softmax(logits, dim=-2)
  return torch.where(row_mask, probs, torch.zeros((), dtype=scores.dtype))


def softmap_kl(target: torch.Tensor, student_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  """(1/K) Σ_k KL(target[:, k] ‖ softmap(student)[:, k]) with log-softmax and 0·log 0 = 0: f[...]."""
  row_mask = valid.unsqueeze(-1)
  logits = torch.where(row_mask, student_scores, torch.tensor(-math.inf, dtype=student_scores.dtype))
  log_p = torch.log_softmax(logits, dim=-2)
  log_p = torch.where(row_mask, log_p, torch.zeros((), dtype=student_scores.dtype))
  terms = torch.special.xlogy(target, target) - target * log_p
  terms = torch.where(row_mask, terms, torch.zeros((), dtype=student_scores.dtype))
  return terms.sum(dim=(-2, -1)) / student_scores.shape[-1]


def clustering_targets(scores: torch.Tensor, valid: torch.Tensor, num_iters: int = 3) -> torch.Tensor:
  """Uniform Sinkhorn-Knopp (SwAV/DINO): repeat (columns -> 1/K, rows -> 1/N); then rows to 1: f[..., N, K]."""
  num_protos = scores.shape[-1]
  row_mask = valid.unsqueeze(-1)
  n_valid = valid.sum(dim=-1).clamp(min=1).to(scores.dtype)
  neg_inf = torch.tensor(-math.inf, dtype=scores.dtype)
  log_q = torch.where(row_mask, scores, neg_inf)
  for _ in range(num_iters):
    log_q = log_q - _masked_logsumexp(log_q, valid, -2) - math.log(num_protos)
    log_q = log_q - _masked_logsumexp(log_q, valid, -1) - torch.log(n_valid)[..., None, None]
    log_q = torch.where(row_mask, log_q, neg_inf)
  log_q = log_q - _masked_logsumexp(log_q, valid, -1)
  return torch.where(row_mask, torch.exp(log_q), torch.zeros((), dtype=scores.dtype))


def clustering_loss(target: torch.Tensor, student_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  """Mean over valid points of -Σ_k target log softmax_k(student): f[...]."""
  log_p = torch.log_softmax(student_scores, dim=-1)
  ce = torch.where(valid.unsqueeze(-1), -target * log_p, torch.zeros((), dtype=student_scores.dtype))
  return ce.sum(dim=(-2, -1)) / valid.sum(dim=-1).clamp(min=1).to(student_scores.dtype)


def _gather_points(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
  """x: f[B, V, N, K], index: int[B, V, M] with sentinel N (gathers a zero row) -> f[B, V, M, K]."""
  x = torch.nn.functional.pad(x, (0, 0, 0, 1))
  return torch.gather(x, 2, index.long().unsqueeze(-1).expand(*index.shape, x.shape[-1]))


def dos_loss(student_cos, teacher_cos, target_index, target_valid, cross_index, cross_valid, student_valid, *,
             teacher_temp, student_temp, alpha, num_iters=3, normalization="softmap",
             cross_view=True) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
  """The DOS loss, same arguments and semantics as `dos_jax.objective.dos_loss` (no `axis_name`).

  Args:
    student_cos: f[B, V, Ns, K]; teacher_cos: f[B, V, Nt, K]; index arrays int[B, V, Ns] (sentinel Nt);
    validity arrays bool[B, V, Ns].

  Returns:
    (loss f[], dict(loss_same, loss_cross)).
  """
  if normalization == "softmap":
    make_targets = lambda s, v: zipf_sinkhorn(s, v, alpha, num_iters)
    term = softmap_kl
  elif normalization == "clustering":
    make_targets = lambda s, v: clustering_targets(s, v, num_iters)
    term = clustering_loss
  else:
    raise ValueError(f"normalization must be 'softmap' or 'clustering', got {normalization!r}")
  student_logits = student_cos / student_temp
  teacher_logits = teacher_cos.detach() / teacher_temp

  def one_term(teacher, index, valid):
    valid = valid & student_valid
    with torch.no_grad():
      targets = make_targets(_gather_points(teacher, index), valid)
    return term(targets, student_logits, valid).mean()

  loss_same = one_term(teacher_logits, target_index, target_valid)
  if cross_view:
    loss_cross = one_term(teacher_logits.flip(1), cross_index, cross_valid)
    loss = 0.5 * (loss_same + loss_cross)
  else:
    loss_cross = torch.zeros((), dtype=student_cos.dtype)
    loss = loss_same
  return loss, dict(loss_same=loss_same, loss_cross=loss_cross)
