"""Permuted MNIST for continual learning: one fixed pixel permutation per task."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax._checks import check_integer


def task_permutations(num_tasks: int, num_pixels: int, seed: SeedLike = 0) -> np.ndarray:
  """``(num_tasks, num_pixels)`` int64 permutations, a fresh random one for every task.

  The first task is permuted too (as in the paper), not the identity.
  """
  check_integer("num_tasks", num_tasks, low=1)
  check_integer("num_pixels", num_pixels, low=2)
  rng = as_generator(seed)
  return np.stack([rng.permutation(int(num_pixels)) for _ in range(int(num_tasks))])


def permute_pixels(x: np.ndarray, permutation: np.ndarray) -> np.ndarray:
  """Reorders the flattened features of every example: ``out.flat[i] = x.flat[perm[i]]``.

  ``x`` is ``(N, ...)`` (e.g. NHWC images); the result has the same shape
  and dtype. ``permutation`` must be a permutation of ``range(prod(x.shape[1:]))``.
  """
  x = np.asarray(x)
  permutation = np.asarray(permutation)
  num_pixels = int(np.prod(x.shape[1:]))
  if permutation.shape != (num_pixels,) or not np.issubdtype(permutation.dtype, np.integer):
    raise ValueError(
        f"permutation must be {num_pixels} integers for inputs of shape {x.shape[1:]}; "
        f"got shape {permutation.shape}, dtype {permutation.dtype}"
    )
  if not np.array_equal(np.sort(permutation), np.arange(num_pixels)):
    raise ValueError(f"permutation is not a permutation of range({num_pixels})")
  flat = x.reshape(x.shape[0], num_pixels)
  return flat[:, permutation].reshape(x.shape)


def permuted_tasks(dataset: ArrayDataset, permutations: np.ndarray) -> list[ArrayDataset]:
  """One data set per permutation: every split of ``dataset`` with its pixels permuted."""
  tasks = []
  for permutation in np.asarray(permutations):
    fields: dict[str, Any] = {
        name: permute_pixels(value, permutation)
        for name in ("x_train", "x_test", "x_val")
        if (value := getattr(dataset, name)) is not None
    }
    tasks.append(dataclasses.replace(dataset, **fields))
  return tasks
