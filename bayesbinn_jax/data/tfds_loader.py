"""Loading MNIST / CIFAR-10 / CIFAR-100 through TensorFlow Datasets, without TensorFlow.

``tfds.data_source`` gives random access to the prepared ArrayRecord files
and decodes examples with NumPy (and PIL for the PNG images); TensorFlow is
not needed, unlike ``tfds.load``. The data must already be prepared under
``data_dir`` unless ``download=True`` and the network can be reached.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.validation import validate_arrays


def _open_split(
    tfds: Any, name: str, split: str, data_dir: str | None, download: bool, source: str
) -> Any:
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except Exception as error:  # tfds raises many types: missing data, bad names, ...
    first_line = (str(error).strip().splitlines() or [""])[0].rstrip(": ")
    hint = "" if download else (
        "; with download=False the data must already be prepared (ArrayRecord format) "
        "in data_dir"
    )
    raise DataError(
        source, f"cannot open split {split!r} ({type(error).__name__}: {first_line}){hint}"
    ) from error


def _read_split(
    data_source: Any, split: str, image_key: str, label_key: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
  count = len(data_source)
  if count == 0:
    raise DataError(source, f"split {split!r} is empty")
  images: np.ndarray | None = None
  labels = np.empty((count,), np.int64)
  for index in range(count):
    example = data_source[index]
    if image_key not in example or label_key not in example:
      raise DataError(
          source,
          f"examples have no {image_key!r}/{label_key!r} features "
          f"(found: {', '.join(sorted(example))})",
      )
    image = np.asarray(example[image_key])
    if images is None:
      images = np.empty((count,) + image.shape, image.dtype)
    elif image.shape != images.shape[1:]:
      raise DataError(
          source,
          f"split {split!r} example {index} has image shape {image.shape}, "
          f"not {images.shape[1:]}",
      )
    images[index] = image
    labels[index] = int(example[label_key])
  assert images is not None  # count > 0
  return images, labels


def _metadata_num_classes(data_source: Any, label_key: str) -> int | None:
  """The ClassLabel size in the data set's metadata, or None when unknown."""
  try:
    feature = data_source.dataset_info.features[label_key]
    value = feature.num_classes
  except (AttributeError, KeyError, TypeError):
    return None
  return int(value) if isinstance(value, (int, np.integer)) and value >= 2 else None


def load_tfds(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    splits: tuple[str, str] = ("train", "test"),
    image_key: str = "image",
    label_key: str = "label",
    allow_unseen_labels: bool = False,
) -> ArrayDataset:
  """Loads a tfds image classification set (``"mnist"``, ``"cifar10"``, ``"cifar100"``).

  Each split is read in full through ``tfds.data_source`` into ``uint8``
  NHWC images and ``int32`` labels (CIFAR-100's ``"label"`` is the fine
  label, 100 classes). ``num_classes`` comes from the data set's metadata.

  Args:
    name: the tfds name, optionally with a version (``"mnist:3.0.1"``).
    data_dir: where tfds keeps prepared data; None uses tfds' default.
    download: let tfds download and prepare missing data (needs network).
    splits: the (train, test) split names.
    image_key: the image feature.
    label_key: the label feature.
    allow_unseen_labels: accept test labels the training split lacks
      (refused by default: see :func:`validate_arrays`).

  Raises:
    DataError: ``"tfds:<name>[ (data_dir)]: <problem>"`` when the data cannot be
      opened (not prepared, unknown name) or is invalid.
  """
  folder = None if data_dir is None else os.fspath(data_dir)
  source = f"tfds:{name}" + ("" if folder is None else f" ({folder})")
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as error:  # an optional dependency: the 'tfds' extra
    raise DataError(
        source, f"tensorflow-datasets is not installed ({error}). Install it with "
        "pip install 'bayesbinn_jax[tfds]', or give the data as a .npz file or an image folder."
    ) from error
  arrays: dict[str, np.ndarray] = {}
  num_classes = None
  for key, split in zip(("train", "test"), splits):
    data_source = _open_split(tfds, name, split, folder, download, source)
    if num_classes is None:
      num_classes = _metadata_num_classes(data_source, label_key)
    arrays[f"x_{key}"], arrays[f"y_{key}"] = _read_split(
        data_source, split, image_key, label_key, source
    )
  return validate_arrays(arrays, source=source, num_classes=num_classes,
                         allow_unseen_labels=allow_unseen_labels)
