"""Training schedules as pure functions of the step (optax schedules), evaluated inside the jitted step.

Every function takes a `dos_jax.specs.StepSpec` (its fields are named like the config keys, so a config reads the
same) and returns an `optax.Schedule`: `schedule(step) -> f32[]` for an
integer (or i32[] traced) step. Sonata keeps these as stateful scheduler objects advanced by hooks; here they are
stateless, so a resumed run evaluates exactly the same values at the same step.
"""

from __future__ import annotations

import optax



def _total_steps(config) -> int:
  total = int(config.total_steps)
  if total < 1:
    raise ValueError(f"total_steps={total}: expected a positive number of steps")
  return total


def _frac_steps(config, key: str, frac: float) -> int:
  if not 0.0 <= float(frac) <= 1.0:
    raise ValueError(f"{key}={frac}: expected a fraction in [0, 1]")
  return int(round(float(frac) * _total_steps(config)))


def learning_rate(config) -> optax.Schedule:
  """The base learning rate (the layer-wise decay, `optim.layer_decay`, scales it per block in the optimizer).

  optim.schedule='onecycle' (Sonata: torch's OneCycleLR with anneal_strategy='cos'): cosine rise from
  lr / div_factor to `optim.lr` over `optim.warmup_frac` of the steps, then cosine decay to
  lr / (div_factor * final_div_factor) at step `total_steps` (optax.cosine_onecycle_schedule).
  optim.schedule='warmup_cosine' (recipe v1): linear warm-up from 0 to `optim.lr` over `optim.warmup_frac` of the
  steps, then cosine decay to `optim.lr * optim.min_lr_ratio` at step `total_steps`, constant after.
  """
  total = _total_steps(config)
  warmup = _frac_steps(config, "optim.warmup_frac", config.optim.warmup_frac)
  peak = float(config.optim.lr)
  if peak <= 0:
    raise ValueError(f"optim.lr={peak}: expected a positive learning rate")
  if config.optim.schedule == "onecycle":
    return optax.cosine_onecycle_schedule(
        transition_steps=total, peak_value=peak, pct_start=float(config.optim.warmup_frac),
        div_factor=float(config.optim.div_factor), final_div_factor=float(config.optim.final_div_factor))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      # optax needs a positive cosine length; a run shorter than its warm-up simply ends at the peak.
      decay_steps=max(total, warmup + 1), end_value=peak * float(config.optim.min_lr_ratio))


def _cosine(start: float, end: float, total: int) -> optax.Schedule:
  """Half-cosine from `start` (step 0) to `end` (step `total`, constant after); works rising or falling."""
  if start == 0.0:
    # optax's cosine is multiplicative in `init_value`; a zero start needs the additive form.
    return lambda step: end * (1.0 - optax.cosine_decay_schedule(1.0, total)(step))
  return optax.cosine_decay_schedule(init_value=start, decay_steps=total, alpha=end / start)


def weight_decay(config) -> optax.Schedule:
  """Cosine from `optim.weight_decay_start` (0.04) to `optim.weight_decay_end` (0.2) over the run (Sonata)."""
  return _cosine(float(config.optim.weight_decay_start), float(config.optim.weight_decay_end),
                 _total_steps(config))


def ema_momentum(config) -> optax.Schedule:
  """Teacher EMA momentum: cosine from `ema_momentum_start` (0.994) to `ema_momentum_end` (1.0)."""
  start, end = float(config.ema_momentum_start), float(config.ema_momentum_end)
  for key, value in (("ema_momentum_start", start), ("ema_momentum_end", end)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{key}={value}: expected a momentum in [0, 1]")
  return _cosine(start, end, _total_steps(config))


def teacher_temperature(config) -> optax.Schedule:
  """Linear from `teacher_temp_start` (0.04) to `teacher_temp_end` (0.07) over `teacher_temp_warmup_frac` of
  the steps, then constant."""
  start, end = float(config.teacher_temp_start), float(config.teacher_temp_end)
  if start <= 0 or end <= 0:
    raise ValueError(f"teacher_temp_start/end=({start}, {end}): expected positive temperatures")
  warmup = _frac_steps(config, "teacher_temp_warmup_frac", config.teacher_temp_warmup_frac)
  # transition_steps=0 makes optax return the start value forever; a zero warm-up means "already warm".
  if warmup == 0:
    return optax.constant_schedule(end)
  return optax.linear_schedule(init_value=start, end_value=end, transition_steps=warmup)
