"""Exponential moving average of parameters: the DINO/Sonata teacher."""

from __future__ import annotations

import jax


def ema_update(teacher, student, momentum):
  """Moves the teacher toward the student: teacher <- m * teacher + (1 - m) * student, leaf by leaf.

  Args:
    teacher: pytree of float arrays (the teacher's params).
    student: pytree with the same structure (the student's params after this step's update).
    momentum: f32[] (or float) in [0, 1]; 1 freezes the teacher, 0 copies the student.

  Returns:
    The new teacher pytree, same structure and dtypes as `teacher`. The student is wrapped in `stop_gradient`:
    the teacher is never a path for gradients.
  """
  student = jax.lax.stop_gradient(student)

  def update(t, s):
    m = momentum.astype(t.dtype) if hasattr(momentum, "astype") else momentum
    # t + (1 - m) * (s - t) equals m * t + (1 - m) * s but stays exact when m == 1 (teacher frozen).
    return t + (1 - m) * (s.astype(t.dtype) - t)

  return jax.tree.map(update, teacher, student)
