"""`Scene`: one labelled point cloud in memory, the unit every reader returns."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Scene:
  """A point cloud with optional per-point attributes (N points).

  Attributes:
    coord: f32[N, 3] coordinates in metres.
    color: f32[N, 3] in [0, 1] (zeros when the sensor has no colour, e.g. LiDAR).
    normal: f32[N, 3] unit normals, or None.
    segment: i32[N] semantic label, -1 = ignore, or None.
    instance: i32[N] instance id, -1 = none, or None.
    name: where the scene came from (a path or a synthetic id), used in error messages.
    strength: f32[N] LiDAR intensity/remission in [0, 1], or None.
  """

  coord: np.ndarray
  color: np.ndarray
  normal: Optional[np.ndarray] = None
  segment: Optional[np.ndarray] = None
  instance: Optional[np.ndarray] = None
  name: str = ""
  strength: Optional[np.ndarray] = None

  @property
  def num_points(self) -> int:
    return int(self.coord.shape[0])
