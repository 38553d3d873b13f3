"""Wall-clock timing of repeated calls, shared by the benchmarks.

Every benchmark reports a ratio against a reference measured in the same run, so the two sides must be timed the
same way: `call_times` is that one way. Callers block on their own results (`jax.block_until_ready`, a torch
synchronize) inside `fn`, because only they know what the asynchronous result is.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def call_times(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], Any]:
  """Times `repeats` calls of `fn` after `warmup` untimed ones.

  Returns (seconds per call: list of `repeats` floats, the last call's result).
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  out = None
  for _ in range(warmup):
    out = fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return times, out
