"""Typed specs decoded from a validated experiment config: what the model and the step compute with.

  config = schema.validate(config)          # the gate (launch/, train_and_evaluate)
  model_spec(config) -> ModelSpec           # dos_jax.models: encoder + projector/prototypes
  step_spec(config)  -> StepSpec            # dos_jax.train: model, loss switches, schedules, optimizer

(The batching decodes its own `BatchSpec`, `dos_jax.batching.spec.batch_spec`.) ModelSpec is defined by the
models package that takes it; StepSpec is defined here, below the train package that takes it. Field names follow
the config keys (`optim.lr` -> `spec.optim.lr`, `teacher_temp_start` -> `spec.teacher_temp_start`), so the
schedules read the same names from a StepSpec.

The specs are frozen dataclasses (hashable, so the jitted step closes over them) holding only what the
computation needs: neither the seed nor the data location is part of a ModelSpec or StepSpec, so runs that differ
only in those compile the same program (the persistent compile cache hits across seeds and data roots;
tests/train/test_compile_cache.py).
"""

from __future__ import annotations

import dataclasses

from dos_jax import variants
from dos_jax.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """AdamW with global-norm clipping (clip_norm 0 = none); lr: `schedule` 'onecycle' (warm-up over warmup_frac
  from lr / div_factor, cosine decay to lr / (div_factor * final_div_factor)) or 'warmup_cosine' (linear warm-up
  from 0, cosine decay to lr * min_lr_ratio), scaled per encoder block by layer_decay ** (blocks above it); weight
  decay: cosine from weight_decay_start to weight_decay_end."""
  lr: float
  warmup_frac: float
  min_lr_ratio: float
  weight_decay_start: float
  weight_decay_end: float
  clip_norm: float
  b1: float
  b2: float
  schedule: str = "onecycle"
  div_factor: float = 10.0
  final_div_factor: float = 1000.0
  layer_decay: float = 1.0


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The DOS step: model, objective switches, schedules (over total_steps) and optimizer.

  Attributes:
    model: the network (encoder + head).
    total_steps: steps the schedules span.
    zipf_alpha, sinkhorn_iters, normalization ('softmap' | 'clustering'), cross_view, student_temp: the loss.
    teacher_temp_start / _end / _warmup_frac: teacher temperature schedule.
    ema_momentum_start / _end: teacher EMA momentum schedule (cosine).
    optim: the optimizer.
  """
  model: ModelSpec
  total_steps: int
  zipf_alpha: float
  sinkhorn_iters: int
  normalization: str
  cross_view: bool
  student_temp: float
  teacher_temp_start: float
  teacher_temp_end: float
  teacher_temp_warmup_frac: float
  ema_momentum_start: float
  ema_momentum_end: float
  optim: OptimSpec


def model_spec(config) -> ModelSpec:
  """The ModelSpec of a validated config (`model.*`, `num_prototypes`, and the supervision's mask token).

  When config.model carries upstream's architecture keys (`launch.probe --init-from` merges a loaded Pointcept
  checkpoint's model config into it: type, enc_channels, enc_depths, enc_num_head, enc_patch_size, order,
  mask_token, layer_scale), they are the spec's `architecture` (`dos_jax.variants.upstream_architecture`) and
  model.variant is not used."""
  m = config.model
  return ModelSpec(
      variant=str(m.variant), dtype=str(m.dtype), attention=str(m.attention), remat=bool(m.remat),
      scan_blocks=bool(m.scan_blocks), drop_path=float(m.drop_path), mlp_ratio=float(m.mlp_ratio), shuffle_orders=bool(m.shuffle_orders),
      up_cast_level=int(m.up_cast_level), upcast_projection=bool(m.upcast_projection),
      head_hidden=int(m.head_hidden), head_dim=int(m.head_dim), num_prototypes=int(config.num_prototypes),
      student_mask_token=config.supervision != "observable", architecture=variants.upstream_architecture(m))


def step_spec(config) -> StepSpec:
  """The StepSpec of a validated config."""
  o = config.optim
  return StepSpec(
      model=model_spec(config), total_steps=int(config.total_steps), zipf_alpha=float(config.zipf_alpha),
      sinkhorn_iters=int(config.sinkhorn_iters), normalization=str(config.normalization),
      cross_view=bool(config.cross_view), student_temp=float(config.student_temp),
      teacher_temp_start=float(config.teacher_temp_start), teacher_temp_end=float(config.teacher_temp_end),
      teacher_temp_warmup_frac=float(config.teacher_temp_warmup_frac),
      ema_momentum_start=float(config.ema_momentum_start), ema_momentum_end=float(config.ema_momentum_end),
      optim=OptimSpec(
          lr=float(o.lr), warmup_frac=float(o.warmup_frac), min_lr_ratio=float(o.min_lr_ratio),
          weight_decay_start=float(o.weight_decay_start), weight_decay_end=float(o.weight_decay_end),
          clip_norm=float(o.clip_norm), b1=float(o.b1), b2=float(o.b2), schedule=str(o.schedule),
          div_factor=float(o.div_factor), final_div_factor=float(o.final_div_factor),
          layer_decay=float(o.layer_decay)))
