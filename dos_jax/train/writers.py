"""Metric writers: JSON lines (`DIR/metrics.jsonl`) and TensorBoard events, without TensorFlow.

`metrics.jsonl` holds one JSON object per logged step, `{"step": 10, "loss": ..., ...}`, flushed and fsynced at
every write so a killed run keeps every line it logged. TensorBoard events go beside it, written by tensorboardX
(clu's metric writers import TensorFlow unconditionally; they are used only when TensorFlow is importable).

On resume the loop calls `truncate_after(step)`: lines logged after the restored checkpoint (work that was lost
with the process) are dropped, so the file has each step once and reads as one run.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from dos_jax import io as fileio

METRICS_FILE = "metrics.jsonl"


def _jsonable(value: Any) -> Any:
  """Python float/int for numpy/JAX scalars; non-finite floats as strings ('nan', 'inf') so the line stays JSON."""
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def read_metrics(workdir: str) -> List[Dict[str, Any]]:
  """The rows of DIR/metrics.jsonl (a torn last line of a killed writer is skipped; see `dos_jax.io.read_jsonl`)."""
  return fileio.read_jsonl(os.path.join(workdir, METRICS_FILE))


class JsonlWriter:
  """Appends one JSON object per `write_scalars` call to DIR/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)
    self._file = open(self.path, "a")

  def truncate_after(self, step: int) -> None:
    """Atomically rewrites the file without rows whose step is > `step`."""
    self._file.close()
    rows = [r for r in fileio.read_jsonl(self.path) if r.get("step", -1) <= step]
    fileio.write_jsonl(self.path, rows)
    self._file = open(self.path, "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    fileio.append_jsonl(self._file, row)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams  # DIR/config.json already records the full config.

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorboardXWriter:
  """TensorBoard scalars and hparams via tensorboardX (no TensorFlow needed)."""

  def __init__(self, logdir: str):
    import tensorboardX  # pylint: disable=g-import-not-at-top  (optional dependency, imported when used)
    self._writer = tensorboardX.SummaryWriter(logdir=logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(_as_float(value)), global_step=int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    text = "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items()))
    self._writer.add_text("config", text, global_step=0)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class CluWriter:
  """clu's default TensorBoard writer (needs TensorFlow)."""

  def __init__(self, logdir: str):
    from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    self._writer = metric_writers.create_default_writer(logdir, asynchronous=False)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._writer.write_scalars(int(step), {k: float(_as_float(v)) for k, v in scalars.items()})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._writer.write_hparams(dict(hparams))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _as_float(value: Any) -> float:
  if hasattr(value, "item"):
    value = value.item()
  return float(value)


def tensorflow_available() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


class MetricWriter:
  """Fans scalars out to the JSONL file and TensorBoard; a no-op on non-zero hosts (`enabled=False`)."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               start_step: Optional[int] = None):
    self._writers = []
    if not enabled:
      return
    jsonl = JsonlWriter(workdir)
    if start_step is not None:
      jsonl.truncate_after(start_step)
    self._writers.append(jsonl)
    if tensorboard:
      self._writers.append(CluWriter(workdir) if tensorflow_available() else TensorboardXWriter(workdir))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_hparams(hparams)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()
    self._writers = []
