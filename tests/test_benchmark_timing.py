"""benchmarks.timing: the one timing loop every benchmark ratio is built on."""

import time

import pytest

from benchmarks import timing


def test_call_times_counts_warmup_and_timed_calls_and_returns_the_last_result():
  calls = []
  times, out = timing.call_times(lambda: calls.append(len(calls)) or len(calls), repeats=3, warmup=2)
  assert len(calls) == 5 and out == 5
  assert len(times) == 3


def test_call_times_measures_each_call_not_the_loop():
  # Each call sleeps at least 20 ms, and the timed calls are disjoint parts of the outer interval: a timer that
  # wrapped the wrong thing (the whole loop, or the warm-up too) breaks one of the two.
  start = time.perf_counter()
  times, _ = timing.call_times(lambda: time.sleep(0.02), repeats=2, warmup=1)
  outer = time.perf_counter() - start
  assert all(t >= 0.02 for t in times)
  assert sum(times) <= outer - 0.02


def test_call_times_rejects_no_repeats():
  with pytest.raises(ValueError, match="repeats"):
    timing.call_times(lambda: None, repeats=0)
