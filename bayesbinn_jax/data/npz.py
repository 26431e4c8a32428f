"""Loading ``.npz`` archives of plain arrays (MNIST, CIFAR, any image set)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.validation import (
    CLASSIFICATION_KEYS,
    VALIDATION_KEYS,
    validate_arrays,
)

# A zip archive starts with a local file header, or is empty (end record only).
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def read_npz(
    path: str | os.PathLike,
    keys: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
  """Reads the arrays ``keys`` (and those of ``optional`` present) from an ``.npz``.

  The archive is opened with ``allow_pickle=False``: it must hold plain
  arrays only. Other members are not read.

  Raises:
    DataError: naming ``path``, when the file is missing, is not a zip/npz
      archive, is truncated or corrupt, holds object (pickled) arrays, or
      lacks one of ``keys``.
  """
  source = os.fspath(path)
  if not os.path.exists(source):
    raise DataError(source, "file not found")
  if not os.path.isfile(source):
    raise DataError(source, "not a regular file")
  try:
    with open(source, "rb") as handle:
      magic = handle.read(4)
  except OSError as error:
    raise DataError(source, f"cannot read file ({error.strerror or error})") from error
  if magic not in _ZIP_MAGICS:
    raise DataError(source, "not an .npz archive (no zip signature)")

  arrays: dict[str, np.ndarray] = {}
  try:
    with np.load(source, allow_pickle=False) as archive:
      if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(source, "not an .npz archive")
      names = set(archive.files)
      missing = [k for k in keys if k not in names]
      if missing:
        found = ", ".join(sorted(names)) or "none"
        raise DataError(source, f"missing array(s) {', '.join(missing)} (found: {found})")
      for key in keys + tuple(k for k in optional if k in names):
        try:
          arrays[key] = archive[key]
        except ValueError as error:
          if "allow_pickle" in str(error) or "pickle" in str(error).lower():
            raise DataError(
                source, f"array {key} holds pickled Python objects; only plain arrays are accepted"
            ) from error
          raise
        if not isinstance(arrays[key], np.ndarray):
          raise DataError(source, f"corrupt .npz archive: member {key} is not a .npy array")
  except DataError:
    raise
  except zipfile.BadZipFile as error:
    raise DataError(source, f"corrupt or truncated zip archive ({error})") from error
  except Exception as error:  # zlib.error, EOFError, header parse errors, ...
    raise DataError(
        source, f"corrupt or truncated .npz archive ({type(error).__name__}: {error})"
    ) from error
  return arrays


def load_npz(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    allow_unseen_labels: bool = False,
) -> ArrayDataset:
  """Loads an image classification set from an ``.npz`` archive.

  The archive holds ``x_train, y_train, x_test, y_test`` (optionally
  ``x_val, y_val``): images ``uint8`` ``(N, H, W)`` or ``(N, H, W, C)``
  (or ``float32`` features ``(N, D)``), integer labels. Works for MNIST (``shared/data/mnist.npz``), CIFAR or any
  set of that form; see :func:`validate_arrays` for the rules.

  Args:
    path: the ``.npz`` file.
    num_classes: the number of classes, or None to infer ``max label + 1``.
    allow_unseen_labels: accept test/validation labels that ``y_train`` lacks
      (refused by default: see :func:`validate_arrays`).

  Raises:
    DataError: ``"<path>: <problem>"`` for an unreadable file or invalid arrays.
  """
  arrays = read_npz(path, CLASSIFICATION_KEYS, VALIDATION_KEYS)
  return validate_arrays(arrays, source=os.fspath(path), num_classes=num_classes,
                         allow_unseen_labels=allow_unseen_labels)
