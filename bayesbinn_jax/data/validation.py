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
  splits; it must be >= 2 and every label must be below it;
- every label of ``y_test`` (and ``y_val``) occurs in ``y_train``: a label
  the training split lacks is one no trained network predicts (a split
  shifted by one gives ~1% accuracy and one class too many). Refused unless
  ``allow_unseen_labels`` (:func:`check_unseen_labels`).

Whether the values suit the experiment's normalisation is checked by
:func:`check_value_range` (it needs the normalisation, which the arrays do
not carry).
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


def _label_list(labels: np.ndarray, limit: int = 10) -> str:
  """``"0-3, 5, 7"``: sorted distinct labels as ranges, the first ``limit`` runs."""
  runs: list[tuple[int, int]] = []
  for value in (int(v) for v in labels):
    if runs and value == runs[-1][1] + 1:
      runs[-1] = (runs[-1][0], value)
    else:
      runs.append((value, value))
  text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
  return text + (f", ... ({labels.size} labels)" if len(runs) > limit else "")


class UnseenLabelsError(DataError):
  """Test or validation labels that the training split lacks (see :func:`check_unseen_labels`).

  Attributes:
    unseen: the labels each split has and ``y_train`` lacks, e.g. ``{"y_test": (10,)}``.
  """

  def __init__(self, source: str | os.PathLike, problem: str, unseen: Mapping[str, tuple[int, ...]]):
    super().__init__(source, problem)
    self.unseen = dict(unseen)


def unseen_labels(y_train: Any, **others: Any) -> dict[str, np.ndarray]:
  """The labels of each other split that ``y_train`` lacks: ``{"y_test": array([10])}``.

  Splits given as None, or holding only labels of ``y_train``, are left out.
  """
  seen = np.unique(np.asarray(y_train))
  found = {}
  for key, labels in others.items():
    if labels is None:
      continue
    missing = np.setdiff1d(np.unique(np.asarray(labels)), seen, assume_unique=True)
    if missing.size:
      found[key] = missing
  return found


def check_unseen_labels(
    dataset: ArrayDataset, source: str | os.PathLike, *, allow: bool = False
) -> str | None:
  """Checks that every test (and validation) label occurs in the training split.

  Args:
    dataset: the data set, e.g. after a ``train_subset``.
    source: the file (or label) the data came from, for the message.
    allow: accept labels the training split lacks (then a note is returned).

  Returns:
    None when every label is seen in training; with ``allow``, else, the
    one-line note ``"<source>: y_test has label 10 that y_train lacks
    (y_train has 0-9)"``.

  Raises:
    UnseenLabelsError: (a :class:`DataError`) the same line, when labels are
      unseen and ``allow`` is False.
  """
  return _unseen_problem(
      str(source), dataset.y_train, {"y_test": dataset.y_test, "y_val": dataset.y_val}, allow)


def _unseen_problem(
    source: str, y_train: np.ndarray, others: Mapping[str, np.ndarray | None], allow: bool
) -> str | None:
  found = unseen_labels(y_train, **others)
  if not found:
    return None
  parts = [
      f"{key} has label{'s' if labels.size > 1 else ''} {_label_list(labels)}"
      for key, labels in found.items()
  ]
  seen = np.unique(np.asarray(y_train))
  problem = (
      f"{' and '.join(parts)} that y_train lacks (y_train has {_label_list(seen)}): "
      "no network trained on y_train predicts them"
  )
  if not allow:
    raise UnseenLabelsError(source, problem + "; unseen labels are refused unless allowed",
                            {key: tuple(int(v) for v in labels) for key, labels in found.items()})
  return str(DataError(source, problem))


def validate_arrays(
    arrays: Mapping[str, Any],
    *,
    source: str | os.PathLike,
    num_classes: int | None = None,
    allow_unseen_labels: bool = False,
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
    allow_unseen_labels: accept test or validation labels that ``y_train``
      lacks (see :func:`check_unseen_labels` for the note to show then).

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

  _unseen_problem(
      source, labels["train"], {f"y_{s}": labels[s] for s in splits[1:]}, allow_unseen_labels)

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


# ----------------------------------------------------------------------------- value ranges
NORMALISATIONS = ("mnist", "per-channel", "standardise")
"""The ways stored values become network inputs (``ExperimentSpec.normalisation``)."""

FEW_LEVELS = 127
"""uint8 images whose largest value is at most this use at most half of 0..255."""

_UNIT_TOLERANCE = 1e-3
"""Float images up to ``1 + _UNIT_TOLERANCE`` count as scaled to [0, 1] (rounding)."""

_INPUT_KEYS = ("x_train", "x_val", "x_test")


def _number(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _interval(low: float, high: float) -> str:
  return f"[{_number(low)}, {_number(high)}]"


def _keys(keys: list[str]) -> str:
  return keys[0] + " is" if len(keys) == 1 else ", ".join(keys) + " are"


def _check_not_constant(array: np.ndarray | None, key: str, source: str) -> None:
  if array is not None and array.size and float(np.min(array)) == float(np.max(array)):
    raise DataError(
        source,
        f"{key} is constant (every value {_number(float(np.min(array)))}); normalisation "
        "'standardise' divides by its standard deviation, which is 0",
    )


def check_value_range(
    dataset: ArrayDataset | RegressionDataset,
    normalisation: str,
    source: str | os.PathLike,
) -> list[str]:
  """Checks the input values against what ``normalisation`` expects of them.

  ``"mnist"`` and ``"per-channel"`` turn ``uint8`` images, pixels in 0..255,
  into ``x / 255`` normalised with MNIST's fixed mean and std ("mnist") or
  ``x_train``'s channel statistics ("per-channel"); float images are used as
  given (already network inputs). ``"standardise"`` (regression) scales
  inputs and targets by the training split's mean and standard deviation.
  Images ``(N, H, W, C)`` are checked, split by split (``x_train``,
  ``x_val``, ``x_test``); features ``(N, D)`` (two moons' points) are used
  as given and not checked. The cases:

  ============================================  ===========  ===========
  inputs                                        "mnist"      "per-channel"
  ============================================  ===========  ===========
  uint8, a split's largest value <= 1            error        error when
  (0/1 images: two values 1/255 apart)                        x_train's is > 1
                                                              or the reverse
  uint8, a split's largest value 2..127          note         fine (own stats)
  uint8, a channel of x_train constant           fine         error (std 0)
  float, a split in [0, 1] (already scaled)      note         note
  float, a split >= 0 reaching above 1           note         note
  (unscaled pixels, e.g. 0..255 as floats)
  float, a split with negative values            fine         fine
  (already normalised)
  ============================================  ===========  ===========

  Errors are the cases that do not train or cannot be normalised. Measured on
  1,500 MNIST training images, 5 epochs of the MNIST MLP (BayesBiNN): uint8
  0/1 images under "mnist" reach 10.7% test accuracy (chance) against 89.2%
  for 0..255 pixels, while floats in [0, 1] (89.4%) and floats 0..255
  (89.1%) train as well, so they get a note. Splits scaled differently
  ("per-channel") give test inputs unlike any the network trained on; a
  constant channel would divide by 0. ``"standardise"``:
  ``x_train`` or ``y_train`` constant is an error (their standard
  deviation, 0, is divided by); nothing else is.

  Args:
    dataset: the checked data set (after :func:`validate_arrays`).
    normalisation: one of :data:`NORMALISATIONS`.
    source: the file (or label) the data came from, for the messages.

  Returns:
    Notes, one line each: ``"<source>: <keys> ... in [low, high] ...;
    expected ..."`` (empty when nothing is out of the ordinary).

  Raises:
    DataError: ``"<source>: <key> is <dtype> with values in [low, high]
      ...; <normalisation> expects ..."`` for an error case above.
    ValueError: an unknown ``normalisation``.
  """
  source = str(source)
  if normalisation not in NORMALISATIONS:
    raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {normalisation!r}.")
  if normalisation == "standardise":
    _check_not_constant(dataset.x_train, "x_train", source)
    _check_not_constant(dataset.y_train, "y_train", source)
    return []
  if not isinstance(dataset, ArrayDataset) or dataset.x_train.ndim != 4:
    return []
  arrays = {k: getattr(dataset, k) for k in _INPUT_KEYS if getattr(dataset, k) is not None}
  ranges = {k: (float(np.min(a)), float(np.max(a))) for k, a in arrays.items()}
  name = f"normalisation '{normalisation}'"
  notes = []
  if dataset.x_train.dtype == np.uint8:
    expects = f"{name} expects uint8 pixels 0..255 (divided by 255, then normalised)"
    few: list[str] = []
    train_binary = ranges["x_train"][1] <= 1
    for key, (low, high) in ranges.items():
      found = f"{key} is uint8 with values in {_interval(low, high)}"
      if normalisation == "mnist" and high <= 1:
        raise DataError(
            source, f"{found}, but {expects} with MNIST's fixed mean and std: 0/1 images become "
            "two values 1/255 apart. Store the images as 0..255 (x * 255)")
      if normalisation == "per-channel" and (high <= 1) != train_binary:
        low_train, high_train = ranges["x_train"]
        raise DataError(
            source, f"{found} but x_train in {_interval(low_train, high_train)}: the splits are "
            f"scaled differently, and {name} uses x_train's statistics for every split")
      if normalisation == "mnist" and high <= FEW_LEVELS:
        few.append(key)
    if few:
      low = min(ranges[k][0] for k in few)
      high = max(ranges[k][1] for k in few)
      notes.append(str(DataError(
          source, f"{_keys(few)} uint8 with values in {_interval(low, high)}, but {expects} with "
          f"MNIST's fixed mean and std: the inputs span {high / 255:.0%} of their usual range")))
    if normalisation == "per-channel":
      channels = dataset.x_train.reshape(-1, dataset.x_train.shape[-1])
      constant = np.flatnonzero(channels.min(axis=0) == channels.max(axis=0))
      if constant.size:
        c = int(constant[0])
        raise DataError(
            source, f"x_train channel {c} is constant (every value {int(channels[0, c])}); {name} "
            "divides by each channel's standard deviation, which is 0 there")
    return notes
  groups: dict[str, list[str]] = {"images already scaled to [0, 1]?": [],
                                   "0..255 pixels stored as floats?": []}
  for key, (low, high) in ranges.items():
    if low < 0:
      continue  # already normalised: used as given
    groups[list(groups)[high > 1 + _UNIT_TOLERANCE]].append(key)
  for guess, keys in groups.items():
    if keys:
      low = min(ranges[k][0] for k in keys)
      high = max(ranges[k][1] for k in keys)
      notes.append(str(DataError(
          source, f"{_keys(keys)} {arrays[keys[0]].dtype} with values in {_interval(low, high)} "
          f"({guess}): float images are used as given, without {name}, which applies to uint8 "
          "pixels 0..255; store uint8 pixels to have them normalised")))
  return notes
