"""The Snelson 1-D regression set (200 training points, a test grid without targets)."""

from __future__ import annotations

import os

from bayesbinn_jax.data.dataset import RegressionDataset
from bayesbinn_jax.data.npz import read_npz
from bayesbinn_jax.data.validation import REGRESSION_KEYS, validate_regression_arrays


def load_snelson(path: str | os.PathLike) -> RegressionDataset:
  """Loads ``snelson.npz``: ``x_train``, ``y_train`` (200 points) and ``x_test`` (a grid).

  Returns inputs ``(N, 1)`` and targets ``(N,)`` as ``float32``;
  ``y_test`` is None (the file has no test targets) unless the file holds one.

  Raises:
    DataError: ``"<path>: <problem>"`` for an unreadable file or invalid
      arrays (see :func:`validate_regression_arrays`).
  """
  arrays = read_npz(path, REGRESSION_KEYS, ("y_test",))
  return validate_regression_arrays(arrays, source=os.fspath(path))
