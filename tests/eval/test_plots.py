"""Plots write valid PNGs (signature + decodable image), atomically."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

from dos_jax.errors import DataError
from dos_jax.eval import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
  # Not a blank canvas: something was drawn.
  assert image[..., :3].std() > 0.01
  # No temp files left behind.
  assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp_")]


def test_all_plots(tmp_path):
  rows = [dict(alpha=a, seed=s, head=0.5 + 0.1 * a, common=0.3, tail=0.1 + 0.05 * a + 0.01 * s, miou=0.3)
          for a in (0.0, 1.3, 2.0) for s in (0, 1)]
  _check_png(plots.plot_alpha_vs_miou(rows, str(tmp_path / "alpha.png")))

  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("\n".join(json.dumps(dict(step=s, loss=5.0 / (s + 1))) for s in range(20)) + "\n")
  _check_png(plots.plot_loss_curves({"run": str(metrics)}, str(tmp_path / "loss.png")))

  usage = np.random.default_rng(0).zipf(1.5, size=64) % 500
  _check_png(plots.plot_rank_frequency({"a": usage, "b": usage[::-1]}, 1.3, str(tmp_path / "rank.png")))

  coord = np.random.default_rng(0).uniform(size=(500, 3)).astype(np.float32)
  _check_png(plots.plot_topdown(coord, (coord[:, 0] * 8).astype(int), str(tmp_path / "sub" / "top.png")))


def test_zipf_prior():
  w = plots.zipf_prior(4, 1.0)
  np.testing.assert_allclose(w, np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
  np.testing.assert_allclose(plots.zipf_prior(5, 0.0), np.full(5, 0.2))


def test_bad_inputs(tmp_path):
  bad = tmp_path / "m.jsonl"
  bad.write_text('{"step": 1, "loss": 2}\nnot json\n')
  with pytest.raises(DataError, match="m.jsonl:2"):
    plots.plot_loss_curves({"run": str(bad)}, str(tmp_path / "loss.png"))
  with pytest.raises(DataError, match="do not match"):
    plots.plot_topdown(np.zeros((3, 3)), np.zeros(4, int), str(tmp_path / "x.png"))


def test_plot_softmap_writes_a_png_and_checks_shapes(tmp_path):
  rng = np.random.default_rng(0)
  coord = rng.uniform(0, 4, (500, 3)).astype(np.float32)
  path = plots.plot_softmap(coord, coord[:, 0] * 3.0, str(tmp_path / "p.png"), title="prototype 0")
  assert os.path.getsize(path) > 1000
  with pytest.raises(DataError, match="plot_softmap"):
    plots.plot_softmap(coord, np.zeros(3), str(tmp_path / "bad.png"))
