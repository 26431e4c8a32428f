"""Checks that turn raw arrays into a trusted :class:`ArrayDataset`.

Every loader ends here, so a bad file fails once, early, with a one-line
:class:`DataError` that names the source and the problem, instead of a shape
error deep inside ``jax.jit``.

Rules for classification arrays (keys ``x_train, y_train, x_test, y_test``
and optionally ``x_val, y_val``):

- inputs are images ``(N, H, W)`` (a channel axis is appended) or
  ``(N, H, W, C)``, or feature vectors ``(N, D)`` (two moons' points);
  non-empty, ``uint8``, or a floating dtype with only finite values (kept as
  ``float32``); every split has the same per-example shape and dtype. Whether
  that shape fits the network is checked by :func:`fit_input_shape`;
- labels are 1-D integers (not bool), one per image, >= 0;
- ``num_classes`` is given, or inferred as ``max label + 1`` over all
  splits; it must be >= 2 and every label must be below it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset, RegressionDataset
from bayesbinn_jax.data.errors import DataError

CLASSIFICATION_KEYS = ("x_train", "y_train", "x_test", "y_test")
VALIDATION_KEYS = ("x_val", "y_val")
REGRESSION_KEYS = ("x_train", "y_train", "x_test")

_INT32_MAX = int(np.iinfo(np.int32).max)


def _shape(array: np.ndarray) -> str:
  return "(" + ", ".join(str(d) for d in array.shape) + (",)" if array.ndim == 1 else ")")


def _check_keys(
    arrays: Mapping[str, Any], required: tuple[str, ...], source: str
) -> None:
  missing = [k for k in required if k not in arrays]
  if missing:
    found = ", ".join(sorted(map(str, arrays))) or "none"
    raise DataError(
        source, f"missing array(s) {', '.join(missing)} (found: {found})"
    )


def _as_array(value: Any, key: str, source: str) -> np.ndarray:
  try:
    array = np.asarray(value)
  except Exception as error:  # ragged lists and the like
    raise DataError(source, f"{key} is not an array ({type(error).__name__}: {error})") from error
  if array.dtype == object:
    raise DataError(source, f"{key} has dtype object; expected a numeric array")
  return array


def check_images(value: Any, key: str, source: str) -> np.ndarray:
  """Checks one input array ``key`` of ``source`` by the rules above.

  Returns images ``(N, H, W, C)`` (a channel axis appended to ``(N, H, W)``)
  or features ``(N, D)``, ``uint8`` kept and floats as ``float32``.

  Raises:
    DataError: ``"<source>: <key> ..."`` for a wrong ndim, an empty array, a
      dtype other than uint8 or floating, or NaN/Inf values.
  """
  images = _as_array(value, key, source)
  if images.ndim not in (2, 3, 4):
    raise DataError(
        source,
        f"{key} has shape {_shape(images)} (ndim {images.ndim}); "
        "expected images (N, H, W) or (N, H, W, C), or features (N, D)",
    )
  if images.size == 0:
    raise DataError(source, f"{key} is empty (shape {_shape(images)})")
  if images.dtype == np.uint8:
    pass
  elif np.issubdtype(images.dtype, np.floating):
    with np.errstate(over="ignore"):  # values beyond float32's range become Inf, refused below
      images = images.astype(np.float32, copy=False)
    if not np.all(np.isfinite(images)):
      raise DataError(source, f"{key} contains NaN or Inf values (or values beyond float32's range)")
  else:
    raise DataError(
        source, f"{key} has dtype {images.dtype}; images must be uint8 (or finite floats)"
    )
  if images.ndim == 3:
    images = images[..., np.newaxis]
  return images


def _check_labels(value: Any, key: str, num_images: int, source: str) -> np.ndarray:
  labels = _as_array(value, key, source)
  if labels.ndim != 1:
    raise DataError(
        source, f"{key} has shape {_shape(labels)}; expected 1-D labels (N,)"
    )
  if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(source, f"{key} has dtype {labels.dtype}; labels must be integers")
  image_key = "x" + key[1:]
  if labels.shape[0] != num_images:
    raise DataError(
        source, f"{key} has {labels.shape[0]} labels but {image_key} has {num_images} images"
    )
  low = int(labels.min())
  if low < 0:
    raise DataError(source, f"{key} has negative label {low}; labels must be >= 0")
  return labels


def validate_arrays(
    arrays: Mapping[str, Any],
    *,
    source: str | os.PathLike,
    num_classes: int | None = None,
) -> ArrayDataset:
  """Checks classification arrays and returns them as an :class:`ArrayDataset`.

  Args:
    arrays: a mapping (a dict, an opened ``.npz``) with ``x_train, y_train,
      x_test, y_test`` and optionally both ``x_val, y_val``; other keys are
      ignored.
    source: what the arrays came from (a file name), put at the start of
      every error message.
    num_classes: the number of classes when known (e.g. from tfds metadata);
      None infers ``max label + 1``.

  Returns:
    The data set with images ``(N, H, W, C)`` or features ``(N, D)``
    (``uint8`` kept, floats as ``float32``) and labels ``int32``.

  Raises:
    DataError: ``"<source>: <problem>"`` for the first rule broken.
  """
  source = str(source)
  _check_keys(arrays, CLASSIFICATION_KEYS, source)
  splits = ["train", "test"]
  present = [k for k in VALIDATION_KEYS if k in arrays]
  if len(present) == 1:
    other = VALIDATION_KEYS[1 - VALIDATION_KEYS.index(present[0])]
    raise DataError(source, f"{present[0]} is given without {other}")
  if present:
    splits.append("val")

  images = {s: check_images(arrays[f"x_{s}"], f"x_{s}", source) for s in splits}
  labels = {
      s: _check_labels(arrays[f"y_{s}"], f"y_{s}", images[s].shape[0], source)
      for s in splits
  }
  reference = images["train"]
  for s in splits[1:]:
    if images[s].shape[1:] != reference.shape[1:]:
      raise DataError(
          source,
          f"image shape differs: x_train images are {reference.shape[1:]} "
          f"but x_{s} images are {images[s].shape[1:]}",
      )
    if images[s].dtype != reference.dtype:
      raise DataError(
          source,
          f"image dtype differs: x_train is {reference.dtype} but x_{s} is {images[s].dtype}",
      )

  maxima = {s: int(labels[s].max()) for s in splits}
  if num_classes is None:
    num_classes = max(maxima.values()) + 1
    if num_classes < 2:
      raise DataError(
          source, "every label is 0; need at least 2 classes (num_classes = max label + 1)"
      )
    if num_classes > _INT32_MAX:
      raise DataError(source, f"label {num_classes - 1} is out of the int32 range")
  else:
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
      raise DataError(source, f"num_classes must be an integer >= 2; got {num_classes!r}")
    num_classes = int(num_classes)
    for s in splits:
      if maxima[s] >= num_classes:
        raise DataError(
            source,
            f"y_{s} has label {maxima[s]} out of range for num_classes={num_classes} "
            f"(labels must be in [0, {num_classes}))",
        )

  def _images(s: str) -> np.ndarray:
    return np.ascontiguousarray(images[s])

  def _labels(s: str) -> np.ndarray:
    return labels[s].astype(np.int32)

  return ArrayDataset(
      x_train=_images("train"),
      y_train=_labels("train"),
      x_test=_images("test"),
      y_test=_labels("test"),
      num_classes=num_classes,
      x_val=_images("val") if present else None,
      y_val=_labels("val") if present else None,
  )


def _check_regression(value: Any, key: str, source: str) -> np.ndarray:
  array = _as_array(value, key, source)
  if array.ndim == 2 and array.shape[1] == 1:
    array = array[:, 0]
  if array.ndim != 1:
    raise DataError(source, f"{key} has shape {_shape(array)}; expected (N,) or (N, 1)")
  if array.size == 0:
    raise DataError(source, f"{key} is empty")
  if array.dtype == np.bool_ or not (
      np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
  ):
    raise DataError(source, f"{key} has dtype {array.dtype}; expected real numbers")
  if not np.all(np.isfinite(array)):
    raise DataError(source, f"{key} contains NaN or Inf values")
  return array.astype(np.float32)


def validate_regression_arrays(
    arrays: Mapping[str, Any], *, source: str | os.PathLike
) -> RegressionDataset:
  """Checks 1-D regression arrays (``x_train, y_train, x_test``, optional ``y_test``).

  Each array is ``(N,)`` or ``(N, 1)``, non-empty, real and finite;
  targets match their inputs in length. Returns a :class:`RegressionDataset`
  with inputs ``(N, 1)`` and targets ``(N,)``, all ``float32``.
  """
  source = str(source)
  _check_keys(arrays, REGRESSION_KEYS, source)
  checked = {k: _check_regression(arrays[k], k, source) for k in REGRESSION_KEYS}
  y_test = None
  if "y_test" in arrays:
    y_test = _check_regression(arrays["y_test"], "y_test", source)
  for split, targets in (("train", checked["y_train"]), ("test", y_test)):
    inputs = checked[f"x_{split}"]
    if targets is not None and targets.shape[0] != inputs.shape[0]:
      raise DataError(
          source,
          f"y_{split} has {targets.shape[0]} targets but x_{split} has {inputs.shape[0]} inputs",
      )
  return RegressionDataset(
      x_train=checked["x_train"][:, np.newaxis],
      y_train=checked["y_train"],
      x_test=checked["x_test"][:, np.newaxis],
      y_test=y_test,
  )
