"""Colour adjustments on RGB colours in [0, 1] (f[n, 3]), and the colour range the encoder's features use.

Pure functions; the random ops that call them are in `transforms` (random_color_jitter). Pointcept works in 0-255
with the same formulas; here colours stay in [0, 1] (Scene), so its 255 bounds are 1.
"""

from __future__ import annotations

import numpy as np


def _gray(color: np.ndarray) -> np.ndarray:
  """f[n] luma of RGB colours (the ITU-R 601 weights torchvision and Pointcept use)."""
  return 0.2989 * color[:, 0] + 0.587 * color[:, 1] + 0.114 * color[:, 2]


def adjust_brightness(color: np.ndarray, factor: float) -> np.ndarray:
  return np.clip(color * factor, 0.0, 1.0)


def adjust_contrast(color: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the cloud's mean luma (a scalar): factor 0 = flat grey, 1 = unchanged."""
  return np.clip(factor * color + (1.0 - factor) * _gray(color).mean(), 0.0, 1.0)


def adjust_saturation(color: np.ndarray, factor: float) -> np.ndarray:
  """Blend with each point's own luma: factor 0 = greyscale, 1 = unchanged."""
  return np.clip(factor * color + (1.0 - factor) * _gray(color)[:, None], 0.0, 1.0)


def adjust_hue(color: np.ndarray, shift: float) -> np.ndarray:
  """Rotates the hue by `shift` turns (in [-0.5, 0.5]) in HSV space."""
  import matplotlib.colors  # pylint: disable=g-import-not-at-top  (HSV conversion; only this op needs it)
  hsv = matplotlib.colors.rgb_to_hsv(np.clip(color, 0.0, 1.0))
  hsv[:, 0] = np.mod(hsv[:, 0] + shift, 1.0)
  return matplotlib.colors.hsv_to_rgb(hsv)


# Colour feature ranges (`data.color_range`): colours are stored in [0, 1] (Scene); the encoder's colour channels
# are mapped affinely to the named range when features are built, for training AND evaluation alike.
COLOR_RANGES = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0)}


def normalize_color(color: np.ndarray, color_range: str = "unit") -> np.ndarray:
  """Colours f32[n, 3] in [0, 1] -> the `color_range` interval: 'unit' [0, 1] (unchanged; Pointcept's NormalizeColor
  at the Sonata commit: color / 255) or 'signed' [-1, 1] (earlier Pointcept: color / 127.5 - 1)."""
  lo, hi = COLOR_RANGES[color_range]
  if (lo, hi) == (0.0, 1.0):
    return np.asarray(color, np.float32)
  return (np.asarray(color, np.float32) * (hi - lo) + lo).astype(np.float32)
