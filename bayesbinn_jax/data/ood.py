"""Out-of-distribution images: an ``.npz`` of images shaped as the training set's, labels ignored."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.npz import read_npz
from bayesbinn_jax.data.shapes import fit_images
from bayesbinn_jax.data.validation import check_images

OOD_KEYS = ("x_test", "x")
"""The arrays an OOD file may hold its images in, in order of preference."""


def load_ood_images(path: str | os.PathLike, image_shape: Sequence[int]) -> np.ndarray:
  """Loads the images of an out-of-distribution ``.npz`` for ``--ood-data-file``.

  Uses ``x_test``, or ``x`` when the file holds no ``x_test``; labels and
  other arrays are not read. The images follow the rules of
  :func:`validate_arrays` (``uint8``, or finite floats kept as ``float32``;
  ``(N, H, W)`` gains a channel axis) and must have the training set's
  example shape, channels-first ``(N, C, H, W)`` being transposed to
  channels-last as :func:`fit_input_shape` does. Float images are taken
  on the scale of the training images (the input transform treats them alike).

  Args:
    path: the ``.npz`` file.
    image_shape: the training set's example shape, e.g. ``(28, 28, 1)``.

  Returns:
    ``(N, *image_shape)`` images, ``uint8`` or ``float32``.

  Raises:
    DataError: ``"<path>: <problem>"`` for a missing, corrupt or non-npz file,
      one without ``x_test`` or ``x``, pickled, empty or non-finite images,
      or images of another shape.
  """
  source = os.fspath(path)
  arrays = read_npz(source, (), OOD_KEYS)
  if not arrays:
    raise DataError(source, "holds neither x_test nor x; save the OOD images as x_test")
  key = next(k for k in OOD_KEYS if k in arrays)
  images = check_images(arrays[key], key, source)
  return fit_images(images, tuple(image_shape), source, key)[0]
