"""CIFAR augmentation: zero-pad 4, random 32x32 crop, random horizontal flip (NumPy, vectorised)."""

from __future__ import annotations

import numpy as np

from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax._checks import check_integer


def pad_crop_flip(
    images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, padding: int = 4
) -> np.ndarray:
  """Crops and flips every image of a batch at given positions, in one gather.

  With ``P`` the images zero-padded by ``padding`` pixels on each side,
  image ``i`` becomes ``P[i, r:r + H, c:c + W]`` with ``(r, c) =
  offsets[i]`` in ``[0, 2 * padding]``, then mirrored left-right where
  ``flips[i]``.

  Args:
    images: ``(N, H, W, C)`` of any dtype.
    offsets: ``(N, 2)`` integer (row, column) crop offsets.
    flips: ``(N,)`` booleans.
    padding: pixels of zeros added on each side.

  Returns:
    Augmented images, same shape and dtype.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
  n, height, width, _ = images.shape
  offsets = np.asarray(offsets)
  flips = np.asarray(flips, dtype=bool)
  if offsets.shape != (n, 2) or flips.shape != (n,):
    raise ValueError(
        f"offsets must be ({n}, 2) and flips ({n},); got {offsets.shape}, {flips.shape}"
    )
  if np.any(offsets < 0) or np.any(offsets > 2 * padding):
    raise ValueError(f"offsets must be in [0, {2 * padding}]")
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  rows = offsets[:, :1] + np.arange(height)                       # (N, H)
  columns = offsets[:, 1:] + np.arange(width)                     # (N, W)
  columns = np.where(flips[:, None], columns[:, ::-1], columns)
  batch = np.arange(n)[:, None, None]
  return padded[batch, rows[:, :, None], columns[:, None, :]]


def augment_cifar(images: np.ndarray, rng: SeedLike, padding: int = 4) -> np.ndarray:
  """Random pad-crop and horizontal flip of a batch of NHWC images.

  Each image gets a uniform crop offset in ``[0, 2 * padding]`` per axis and
  a flip with probability 1/2 (see :func:`pad_crop_flip`). Deterministic
  given ``rng`` (a Generator, advanced by the call, or a seed).
  """
  check_integer("padding", padding, low=0)
  images = np.asarray(images)
  generator = as_generator(rng)
  n = images.shape[0] if images.ndim else 0
  offsets = generator.integers(0, 2 * int(padding) + 1, size=(n, 2))
  flips = generator.random(n) < 0.5
  return pad_crop_flip(images, offsets, flips, int(padding))
