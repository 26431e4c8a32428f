"""Fitting the example shape of a data set to the shape its network takes.

A network fixes the shape of one example: the BinaryConnect VGG takes
``(32, 32, 3)`` images, the MNIST MLPs grayscale images of any size
``(H, W, 1)``, the toy MLP 2-D or 1-D features. A data set that does not fit
is either recognised as channels-first images ``(C, H, W)`` (as PyTorch and
the CIFAR pickles store them) and transposed to channels-last ``(H, W, C)``,
or refused with one line naming the source, the shape found and the shape
expected, before any array reaches the network.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset, RegressionDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.image_folder import is_image_folder_source

ExpectedShape = Sequence[int | None]
"""The shape of one example, ``None`` for a free size: ``(None, None, 1)`` is any H, W, one channel."""

Dataset = TypeVar("Dataset", ArrayDataset, RegressionDataset)

_INPUT_FIELDS = ("x_train", "x_val", "x_test")


def _fits(shape: tuple[int, ...], expected: ExpectedShape) -> bool:
  return len(shape) == len(expected) and all(
      want is None or size == want for size, want in zip(shape, expected)
  )


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...]:
  """``(C, H, W) -> (H, W, C)``."""
  return shape[1:] + shape[:1]


def describe_shape(expected: ExpectedShape) -> str:
  """``(32, 32, 3)``, ``(H, W, 1)`` or ``(2,)``: an example shape as the messages print it.

  Free sizes of 3-D images are named ``H, W, C``; other free sizes ``d0, d1, ...``.
  """
  names = ("H", "W", "C") if len(expected) == 3 else tuple(f"d{i}" for i in range(len(expected)))
  parts = [name if want is None else str(want) for name, want in zip(names, expected)]
  return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def fit_images(
    images: np.ndarray, expected: ExpectedShape, source: str | os.PathLike, key: str = "x_train"
) -> tuple[np.ndarray, bool]:
  """Returns ``images`` ``(N, *expected)``, transposed from ``(N, C, H, W)`` where needed.

  Images whose example shape fits ``expected`` are returned as they are;
  3-D examples that fit only once read as channels-first ``(C, H, W)`` are
  returned channels-last, ``np.moveaxis(images, 1, -1)`` (a contiguous copy).

  Args:
    images: ``(N, ...)`` examples, e.g. NHWC images from :func:`validate_arrays`.
    expected: the network's example shape, ``None`` for a free size.
    source: the file (or label) the images came from, for the error.
    key: the array's name in ``source``, for the error.

  Returns:
    ``(images, transposed)``: the fitted images and whether they were transposed.

  Raises:
    DataError: ``"<source>: <key> examples are <shape>, but the network takes
      <expected>; ..."`` when neither reading fits.
  """
  shape = tuple(int(d) for d in np.shape(images)[1:])
  if _fits(shape, expected):
    return images, False
  if len(shape) == 3 and len(expected) == 3 and _fits(_channels_last(shape), expected):
    return np.ascontiguousarray(np.moveaxis(images, 1, -1)), True
  wanted = describe_shape(expected)
  if len(expected) == 3 and is_image_folder_source(source):  # decoded image files: name what to store
    raise DataError(source, f"the images are {describe_shape(shape)} (height, width, channels), but "
                            f"the network takes {wanted}; store {_describe_images(expected)} images")
  kind = "images, channels last" if len(expected) == 3 else "arrays"
  fix = f"save {key} as (N, {wanted[1:-1].rstrip(',')}) {kind}"
  raise DataError(
      source, f"{key} examples are {describe_shape(shape)}, but the network takes {wanted}; {fix}"
  )


def _describe_images(expected: ExpectedShape) -> str:
  """``32x32 RGB (3-channel)`` or ``grayscale (1-channel)``: images of the shape ``(H, W, C)``."""
  height, width, channels = expected
  size = "" if height is None or width is None else f"{height}x{width} "
  names = {1: "grayscale (1-channel)", 3: "RGB (3-channel)"}
  return size + (names.get(channels, f"{channels}-channel") if channels is not None else "")


def fit_input_shape(
    dataset: Dataset, expected: ExpectedShape, source: str | os.PathLike
) -> tuple[Dataset, str | None]:
  """Fits the inputs of every split of ``dataset`` to the network's example shape.

  The splits of a checked data set share one example shape (see
  :func:`validate_arrays`), so ``x_train`` decides: when it fits ``expected``
  the data set is returned unchanged; when its examples are channels-first
  images ``(C, H, W)`` that fit as ``(H, W, C)``, every split is transposed
  to channels-last and a one-line note says so.

  Args:
    dataset: a checked :class:`ArrayDataset` or :class:`RegressionDataset`.
    expected: the network's example shape, ``None`` for a free size, e.g.
      ``(32, 32, 3)`` for the CIFAR VGG, ``(None, None, 1)`` for the MNIST MLPs.
    source: the file, directory or ``tfds:<name>`` the data came from.

  Returns:
    ``(dataset, note)``: the fitted data set and None, or the transposed data
    set and the note ``"<source>: images are channels-first (3, 32, 32);
    transposed to channels-last (32, 32, 3)"`` for the console.

  Raises:
    DataError: one line naming ``source``, the example shape found, the
      shape expected and the fix, when no reading fits.
  """
  images, transposed = fit_images(dataset.x_train, expected, source)
  if not transposed:
    return dataset, None
  fields: dict[str, Any] = {"x_train": images}
  for name in _INPUT_FIELDS[1:]:
    value = getattr(dataset, name, None)
    if value is not None:
      fields[name] = fit_images(value, expected, source, name)[0]
  found = tuple(dataset.x_train.shape[1:])
  note = (f"{os.fspath(source)}: images are channels-first {describe_shape(found)}; "
          f"transposed to channels-last {describe_shape(images.shape[1:])}")
  return dataclasses.replace(dataset, **fields), note
