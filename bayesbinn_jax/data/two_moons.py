"""The two moons toy classification set (paper: 100 points per class, noise 0.1)."""

from __future__ import annotations

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax._checks import check_integer, check_range


def make_moons(
    num_per_class: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Draws one two moons sample, shuffled.

  Class 0 is the upper half circle ``(cos t, sin t)``, class 1 the lower
  one ``(1 - cos t, 0.5 - sin t)``, ``t`` evenly spaced in ``[0, pi]``
  (the construction of ``sklearn.datasets.make_moons``), plus isotropic
  Gaussian noise of std ``noise``. Returns ``float32`` points ``(2n, 2)``
  and ``int32`` labels ``(2n,)``.
  """
  t = np.linspace(0.0, np.pi, num_per_class)
  upper = np.stack([np.cos(t), np.sin(t)], axis=1)
  lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
  x = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(2 * num_per_class, 2))
  y = np.repeat(np.arange(2, dtype=np.int32), num_per_class)
  order = rng.permutation(2 * num_per_class)
  return x[order].astype(np.float32), y[order]


def two_moons(
    num_per_class: int = 100,
    noise: float = 0.1,
    seed: SeedLike = 0,
    *,
    num_test_per_class: int | None = None,
) -> ArrayDataset:
  """Two moons train set and a held-out test set from the same generator.

  The train and test sets use two independent streams of ``seed``
  (contexts 0 and 1), so the test points are fresh noise, not copies.

  Args:
    num_per_class: training points per class (100 in the paper).
    noise: std of the Gaussian noise (0.1 in the paper).
    seed: integer, jax key, SeedSequence (not a Generator: both sets need
      their own reproducible stream).
    num_test_per_class: test points per class; defaults to ``num_per_class``.

  Returns:
    An :class:`ArrayDataset` with ``float32`` features ``(N, 2)``, labels
    0/1 and ``num_classes=2``.
  """
  check_integer("num_per_class", num_per_class, low=1)
  check_range("noise", noise, low=0.0)
  if isinstance(seed, np.random.Generator):
    raise TypeError("two_moons needs a seed (int or key), not a Generator, to derive a test stream")
  num_test = num_per_class if num_test_per_class is None else num_test_per_class
  check_integer("num_test_per_class", num_test, low=1)
  x_train, y_train = make_moons(int(num_per_class), float(noise), as_generator(seed, 0))
  x_test, y_test = make_moons(int(num_test), float(noise), as_generator(seed, 1))
  return ArrayDataset(x_train, y_train, x_test, y_test, num_classes=2)
