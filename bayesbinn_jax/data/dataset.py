"""Containers for a loaded data set: classification and 1-D regression."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A classification data set held as NumPy arrays.

  Images are ``(N, H, W, C)``, kept as stored (``uint8`` for image files, or
  ``float32`` features such as two moons); turn them into network inputs with
  :func:`bayesbinn_jax.data.images_to_float`. Labels are ``int32`` in
  ``[0, num_classes)``. ``x_val``/``y_val`` are set by
  :func:`bayesbinn_jax.data.split_validation` (or a file that holds them) and
  are otherwise None.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one example, e.g. ``(28, 28, 1)``."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.x_test.shape[0])

  @property
  def num_val(self) -> int:
    return 0 if self.x_val is None else int(self.x_val.shape[0])

  @property
  def has_validation(self) -> bool:
    return self.x_val is not None


@dataclasses.dataclass(frozen=True, eq=False)
class RegressionDataset:
  """A 1-D regression data set (Snelson): inputs ``(N, 1)``, targets ``(N,)``.

  All arrays are ``float32``. ``y_test`` is None when the test inputs come
  without targets (Snelson's ``x_test`` is a plotting grid).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray | None = None

  @property
  def num_train(self) -> int:
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.x_test.shape[0])
