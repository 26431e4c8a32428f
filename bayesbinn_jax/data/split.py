"""Holding out a validation set (the paper keeps 10% of the training set)."""

from __future__ import annotations

import dataclasses

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax._checks import check_range


def num_validation(num_examples: int, fraction: float) -> int:
  """``round(fraction * num_examples)``, at least 1 and leaving at least 1 to train."""
  check_range("fraction", fraction, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
  if num_examples < 2:
    raise ValueError(f"need at least 2 examples to split off a validation set; got {num_examples}")
  return int(min(max(round(fraction * num_examples), 1), num_examples - 1))


def train_val_split(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.1, seed: SeedLike = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits ``(x, y)`` by a seeded permutation into train and validation parts.

  The validation part is the first ``num_validation(N, fraction)`` examples of
  the permutation; each part keeps the original order of its examples.

  Returns:
    ``(x_train, y_train, x_val, y_val)``.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
  count = num_validation(x.shape[0], fraction)
  order = as_generator(seed).permutation(x.shape[0])
  val_idx, train_idx = np.sort(order[:count]), np.sort(order[count:])
  return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def split_validation(
    dataset: ArrayDataset, fraction: float = 0.1, seed: SeedLike = 0
) -> ArrayDataset:
  """The data set with ``fraction`` of its training set moved to ``x_val``/``y_val``."""
  if dataset.has_validation:
    raise ValueError("dataset already has a validation set")
  x_train, y_train, x_val, y_val = train_val_split(
      dataset.x_train, dataset.y_train, fraction, seed
  )
  return dataclasses.replace(
      dataset, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val
  )
