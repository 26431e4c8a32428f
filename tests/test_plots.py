"""Tests for bayesbinn_jax.experiments.plots: each function writes a real PNG from
small synthetic inputs, tolerates missing keys and creates parent directories."""

from __future__ import annotations

import math
import pathlib
import struct

import numpy as np
import pytest
from matplotlib import image as mpimg

from bayesbinn_jax.experiments import plots
from bayesbinn_jax.train.calibration import apply_temperature, fit_temperature
from bayesbinn_jax.train.metrics import predictive_entropy, reliability_bins

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> tuple[int, int]:
  """Checks the PNG signature and IHDR, that pixels are not all one colour; returns (width, height)."""
  data = pathlib.Path(path).read_bytes()
  assert data[:8] == PNG_SIGNATURE
  assert data[12:16] == b"IHDR"
  width, height = struct.unpack(">II", data[16:24])
  assert width > 100 and height > 100
  pixels = mpimg.imread(path)
  assert pixels.std() > 0.01  # something was drawn
  return width, height


def _moons(n=40, seed=0):
  rng = np.random.default_rng(seed)
  t = rng.uniform(0, np.pi, n)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
  return x + rng.normal(scale=0.1, size=x.shape), y


def _grid(sharpness):
  gx, gy = np.meshgrid(np.linspace(-1.5, 2.5, 40), np.linspace(-1.0, 1.5, 30))
  prob = 1.0 / (1.0 + np.exp(-sharpness * (0.25 - gy + 0.3 * (gx - 0.5))))
  return gx, gy, prob


def test_plot_two_moons_writes_png_in_new_directory(tmp_path):
  x, y = _moons()
  panels = {
      "BayesBiNN (mode)": _grid(20.0),
      "BayesBiNN (mean, C=10)": _grid(3.0),
      "STE": _grid(50.0),
  }
  path = tmp_path / "new" / "nested" / "moons.png"
  assert plots.plot_two_moons(path, x, y, panels) == path
  width, height = _assert_png(path)
  assert width > height  # three columns side by side


def test_plot_two_moons_single_panel_without_boundary_and_str_path(tmp_path):
  x, y = _moons(10)
  gx, gy, _ = _grid(1.0)
  path = str(tmp_path / "one.png")
  # every probability is above 0.5: no decision boundary to draw; 1.0 has zero entropy
  result = plots.plot_two_moons(path, x, y, {"always 1": (gx, gy, np.ones_like(gx))})
  assert result == path
  _assert_png(path)


def test_bernoulli_entropy_range():
  p = np.array([0.0, 0.5, 1.0, 0.1])
  h = plots._bernoulli_entropy(p)
  expected_01 = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
  np.testing.assert_allclose(h, [0.0, math.log(2), 0.0, expected_01])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"x_train": np.zeros((4, 3))}, "x_train"),
        ({"y_train": np.zeros(3)}, "y_train"),
        ({"y_train": np.array([0, 1, 2, 0])}, "y_train"),
        ({"panels": {}}, "panels"),
        ({"panels": {"a": (np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 3)))}}, r"panels\['a'\]"),
        ({"panels": {"a": (np.zeros((3, 3)), np.zeros((3, 3)), np.full((3, 3), 1.5))}}, r"panels\['a'\]"),
    ],
)
def test_plot_two_moons_bad_inputs(tmp_path, kwargs, name):
  args = {"x_train": np.zeros((4, 2)), "y_train": np.array([0, 1, 0, 1]), "panels": {"a": _grid(1.0)}}
  args.update(kwargs)
  with pytest.raises(ValueError, match=rf"^{name}"):
    plots.plot_two_moons(tmp_path / "bad.png", **args)
  assert not (tmp_path / "bad.png").exists()


def test_plot_snelson(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.uniform(0, 6, (30, 1))
  y_train = np.sin(x_train[:, 0]) + rng.normal(scale=0.2, size=30)
  x_test = rng.permutation(np.linspace(-1, 7, 50))[:, None]  # unsorted, (M, 1)
  curves = {
      "BayesBiNN": (np.sin(x_test[:, 0]), 0.2 + 0.1 * np.abs(x_test[:, 0] - 3)),
      "STE": (np.sin(x_test), np.zeros((50, 1))),
  }
  path = tmp_path / "a" / "snelson.png"
  assert plots.plot_snelson(path, x_train, y_train, x_test, curves) == path
  _assert_png(path)


def test_plot_snelson_bad_inputs(tmp_path):
  x = np.linspace(0, 1, 5)
  with pytest.raises(ValueError, match=r"^curves\['m'\]"):
    plots.plot_snelson(tmp_path / "s.png", x, x, x, {"m": (x[:4], x[:4])})
  with pytest.raises(ValueError, match=r"^curves\['m'\]"):
    plots.plot_snelson(tmp_path / "s.png", x, x, x, {"m": (x, -x - 1)})
  with pytest.raises(ValueError, match="^y_train"):
    plots.plot_snelson(tmp_path / "s.png", x, x[:3], x, {"m": (x, x)})
  with pytest.raises(ValueError, match="^curves"):
    plots.plot_snelson(tmp_path / "s.png", x, x, x, {})


@pytest.mark.parametrize("percent", [None, True, False])
def test_plot_continual(tmp_path, percent):
  curves = {
      "BayesBiNN": [0.98, 0.97, 0.965, 0.96, 0.955],
      "STE": [0.98, 0.9, 0.8],  # a shorter curve
  }
  if percent:
    curves = {k: [100 * v for v in vs] for k, vs in curves.items()}
  path = tmp_path / "c" / "continual.png"
  assert plots.plot_continual(path, curves, percent=percent) == path
  _assert_png(path)


def test_plot_continual_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="^curves"):
    plots.plot_continual(tmp_path / "c.png", {})
  with pytest.raises(ValueError, match=r"^curves\['a'\]"):
    plots.plot_continual(tmp_path / "c.png", {"a": []})


def test_plot_training_curves_full_records(tmp_path):
  records = [
      {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 1 - 0.5 / e,
       "val_accuracy": 1 - 0.6 / e, "test_accuracy": 1 - 0.65 / e, "lr": 1e-3 * 0.9**e}
      for e in range(1, 11)
  ]
  path = tmp_path / "runs" / "x" / "curves.png"
  assert plots.plot_training_curves(path, records) == path
  width, _ = _assert_png(path)
  # without lr (nor any other key) there is no third subplot: a narrower figure
  narrow = plots.plot_training_curves(
      tmp_path / "narrow.png", [{k: v for k, v in r.items() if k != "lr"} for r in records]
  )
  assert _assert_png(narrow)[0] < width


def test_plot_training_curves_missing_and_odd_keys(tmp_path):
  records = [
      {"epoch": 1, "train_loss": 0.9},  # no accuracy at all
      {"epoch": 2, "train_loss": 0.7, "val_accuracy": 0.6, "note": "text", "flag": True},
      {"epoch": 3, "val_accuracy": None, "train_accuracy": float("nan")},  # no usable numbers
      {"epoch": 4, "train_loss": np.float32(0.5), "val_accuracy": np.array(0.7)},
      {},  # empty record, and no epoch: falls back to record index
  ]
  path = plots.plot_training_curves(tmp_path / "missing.png", records)
  _assert_png(path)
  # only loss keys: the accuracy panel says "no data"
  _assert_png(plots.plot_training_curves(tmp_path / "loss_only.png", [{"train_loss": 1.0}, {"train_loss": 0.5}]))
  # no plottable key at all still writes a figure
  _assert_png(plots.plot_training_curves(tmp_path / "none.png", [{"epoch": 1}]))


def test_plot_training_curves_continual_tasks(tmp_path):
  records = [
      {"task": t, "epoch": e, "train_loss": 1.0 / e + 0.1 * t, "test_accuracy": 0.9 - 0.02 * t}
      for t in range(1, 4)
      for e in range(1, 4)  # the epoch restarts with each task
  ]
  _assert_png(plots.plot_training_curves(tmp_path / "tasks.png", records))


@pytest.mark.parametrize("records", [[], {"epoch": 1}, "abc", [{"epoch": 1}, 3]])
def test_plot_training_curves_bad_records(tmp_path, records):
  with pytest.raises(ValueError, match=r"^records"):
    plots.plot_training_curves(tmp_path / "bad.png", records)


def test_plot_reliability(tmp_path):
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.full(3, 0.5), size=500)
  labels = np.array([rng.choice(3, p=p) for p in probs])
  sharp = probs**4 / (probs**4).sum(axis=1, keepdims=True)
  curves = {
      "calibrated": reliability_bins(probs, labels),
      "over-confident": reliability_bins(sharp, labels, num_bins=10),
  }
  path = tmp_path / "rel" / "reliability.png"
  assert plots.plot_reliability(path, curves) == path
  _assert_png(path)


def test_plot_reliability_accepts_mapping_without_edges(tmp_path):
  bins = {"confidence": [0.3, np.nan, 0.9], "accuracy": [0.2, np.nan, 0.95], "count": [4, 0, 10]}
  _assert_png(plots.plot_reliability(tmp_path / "map.png", {"m": bins}))
  with pytest.raises(ValueError, match=r"^curves\['m'\]"):
    plots.plot_reliability(tmp_path / "bad.png", {"m": {"confidence": [0.5]}})
  with pytest.raises(ValueError, match=r"^curves\['m'\]"):
    plots.plot_reliability(tmp_path / "bad.png", {"m": [1, 2, 3]})


def test_plot_reliability_before_and_after_temperature_scaling(tmp_path):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(2000, 10))
  cumulative = np.cumsum(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), axis=1)
  labels = np.minimum((rng.random((2000, 1)) > cumulative).sum(axis=1), 9)
  under = 0.3 * z  # under-confident logits: T ~ 0.3 recovers the truth
  t = fit_temperature(under, labels)
  curves = {
      "raw": reliability_bins(apply_temperature(under, 1.0), labels),
      f"temperature-scaled (T = {t:.2f})": reliability_bins(apply_temperature(under, t), labels),
  }
  _assert_png(plots.plot_reliability(tmp_path / "before_after.png", curves))


def _dirichlet_entropies(rng, concentration, n, c=10):
  return predictive_entropy(rng.dirichlet(np.full(c, concentration), size=n))


def test_plot_entropy_histograms_in_vs_ood(tmp_path):
  rng = np.random.default_rng(2)
  confident, diffuse = _dirichlet_entropies(rng, 0.05, 500), _dirichlet_entropies(rng, 2.0, 120)
  panels = {
      "mode, OOD AUROC 0.97": {"MNIST test": confident, "OOD: noise": diffuse},
      "mean, C=10": {"MNIST test": confident * 1.2, "OOD: noise": diffuse, "OOD: rotated": diffuse * 0.5},
  }
  path = tmp_path / "h" / "entropy.png"
  assert plots.plot_entropy_histograms(path, panels, num_classes=10) == path
  width, height = _assert_png(path)
  assert width > height  # two panels side by side
  # without num_classes the range is the data's; a single panel; entropies all 0 still draw
  _assert_png(plots.plot_entropy_histograms(str(tmp_path / "one.png"), {"m": {"a": diffuse}}, num_bins=5))
  _assert_png(plots.plot_entropy_histograms(tmp_path / "zero.png", {"m": {"a": np.zeros(3), "b": [0.1]}}))


@pytest.mark.parametrize(
    "panels, kwargs, name",
    [
        ({}, {}, "panels"),
        ({"m": {}}, {}, r"panels\['m'\]"),
        ({"m": [1.0, 2.0]}, {}, r"panels\['m'\]"),
        ({"m": {"a": []}}, {}, r"panels\['m'\]\['a'\]"),
        ({"m": {"a": [0.1, -0.2]}}, {}, r"panels\['m'\]\['a'\]"),
        ({"m": {"a": [0.1, np.nan]}}, {}, r"panels\['m'\]\['a'\]"),
        ({"m": {"a": [0.1]}}, {"num_bins": 0}, "num_bins"),
        ({"m": {"a": [0.1]}}, {"num_classes": 1}, "num_classes"),
    ],
)
def test_plot_entropy_histograms_bad_inputs(tmp_path, panels, kwargs, name):
  with pytest.raises(ValueError, match=rf"^{name}"):
    plots.plot_entropy_histograms(tmp_path / "bad.png", panels, **kwargs)
  assert not (tmp_path / "bad.png").exists()
