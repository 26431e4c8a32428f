"""Turning stored images into network inputs: float32 in [0, 1], optionally normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def images_to_float(
    images: np.ndarray,
    mean: float | Sequence[float] | np.ndarray | None = None,
    std: float | Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
  """Converts images to ``float32``: ``x = images / 255`` for ``uint8``.

  Float inputs are only cast. With ``mean``/``std`` (scalars or one value
  per channel, broadcast over the last axis) returns ``(x - mean) / std``.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    x = images.astype(np.float32) / np.float32(255.0)
  elif np.issubdtype(images.dtype, np.floating):
    x = images.astype(np.float32)
  else:
    raise ValueError(f"images must be uint8 or floating; got dtype {images.dtype}")
  if mean is not None:
    x -= np.asarray(mean, np.float32)
  if std is not None:
    std_array = np.asarray(std, np.float32)
    if np.any(std_array <= 0):
      raise ValueError(f"std must be > 0; got {std!r}")
    x /= std_array
  return x


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of ``images_to_float(images)`` (NHWC), for normalising."""
  x = images_to_float(images)
  axes = tuple(range(x.ndim - 1))
  return x.mean(axis=axes, dtype=np.float64).astype(np.float32), x.std(
      axis=axes, dtype=np.float64
  ).astype(np.float32)
