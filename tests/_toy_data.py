"""Two moons for the optimizer tests (NumPy only, fixed seed).

The sklearn ``make_moons`` formula: class 0 on ``(cos t, sin t)``, class 1 on
``(1 - cos t, 0.5 - sin t)``, ``t`` evenly spaced in ``[0, pi]``, plus Gaussian
noise of standard deviation ``noise`` on both coordinates.
"""

from __future__ import annotations

import numpy as np


def two_moons(
    n_per_class: int = 100, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Returns inputs (2 n, 2) float32 and labels (2 n,) int32 in {0, 1}."""
  t = np.linspace(0.0, np.pi, n_per_class)
  outer = np.stack([np.cos(t), np.sin(t)], axis=1)
  inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
  x = np.concatenate([outer, inner], axis=0)
  x = x + np.random.default_rng(seed).normal(scale=noise, size=x.shape)
  y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)])
  return x.astype(np.float32), y.astype(np.int32)


def with_constant_feature(x: np.ndarray) -> np.ndarray:
  """Appends a column of ones: a first-layer bias for the bias-free ToyMLP.

  ToyMLP's binary layers have no bias, so on raw 2-D inputs its first layer
  can only form ``tanh(+-x1 +- x2)``; a constant input gives it the offset
  (a binary bias) that two moons needs to be separated with +-1 weights.
  """
  ones = np.ones((x.shape[0], 1), dtype=x.dtype)
  return np.concatenate([x, ones], axis=1)
