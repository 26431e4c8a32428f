"""Reading IDX files, the format of the official MNIST distribution.

An IDX file is a header followed by the array in C order, big-endian:

- 4 magic bytes: ``0x00 0x00``, a type code (``0x08`` uint8, ``0x09`` int8,
  ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64) and
  the number of dimensions ``d``;
- ``d`` big-endian uint32 sizes;
- the data, ``prod(sizes) * itemsize`` bytes, nothing after.

Files may be gzip-compressed; compression is recognised by its magic bytes,
not by the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping

import numpy as np

from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.validation import validate_arrays

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_IDX_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
"""The official MNIST file names (without ``.gz``), by array key."""

_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of an uncompressed IDX file into an array.

  Returns the array in native byte order with the header's shape and dtype.

  Raises:
    DataError: naming ``source``, for a wrong magic number, an unknown type
      code, a truncated header or data, or bytes after the data.
  """
  if len(data) < 4:
    raise DataError(source, f"truncated IDX header ({len(data)} bytes, need at least 4)")
  zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
  if zero != 0:
    raise DataError(
        source,
        f"bad IDX magic number 0x{int.from_bytes(data[:4], 'big'):08x} "
        "(must start with two zero bytes)",
    )
  if code not in IDX_DTYPES:
    raise DataError(source, f"unknown IDX type code 0x{code:02x} in magic number")
  if ndim == 0:
    raise DataError(source, "IDX header declares 0 dimensions")
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise DataError(
        source,
        f"truncated IDX header ({len(data)} bytes, need {header_size} for {ndim} dimensions)",
    )
  shape = tuple(
      int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
  )
  dtype = IDX_DTYPES[code]
  expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
  actual = len(data) - header_size
  if actual < expected:
    raise DataError(
        source,
        f"truncated IDX data: shape {shape} needs {expected} bytes after the header, got {actual}",
    )
  if actual > expected:
    raise DataError(
        source,
        f"{actual - expected} unexpected bytes after the IDX data of shape {shape}",
    )
  array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_size)
  return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file, gzip-compressed or not.

  Raises:
    DataError: naming ``path``, when it is missing, unreadable, corrupt gzip,
      or not a valid IDX file (see :func:`parse_idx`).
  """
  source = os.fspath(path)
  try:
    with open(source, "rb") as handle:
      data = handle.read()
  except FileNotFoundError as error:
    raise DataError(source, "file not found") from error
  except OSError as error:
    raise DataError(source, f"cannot read file ({error.strerror or error})") from error
  if data[:2] == _GZIP_MAGIC:
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
      raise DataError(source, f"corrupt or truncated gzip data ({error})") from error
  return parse_idx(data, source=source)


def _find(directory: str, name: str) -> str | None:
  for candidate in (name + ".gz", name):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def load_idx_dir(
    directory: str | os.PathLike,
    *,
    filenames: Mapping[str, str] = MNIST_IDX_FILES,
    num_classes: int | None = None,
    allow_unseen_labels: bool = False,
) -> ArrayDataset:
  """Loads MNIST (or a set in the same layout) from its four IDX files.

  For each of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` the ``.gz``
  file is used when present, else the uncompressed one.

  Args:
    directory: the folder holding the files.
    filenames: file names (without ``.gz``) by key ``x_train, y_train,
      x_test, y_test``; defaults to the MNIST names (also Fashion-MNIST's).
    num_classes: the number of classes, or None to infer ``max label + 1``.
    allow_unseen_labels: accept test labels that the training labels lack
      (refused by default: see :func:`validate_arrays`).

  Raises:
    DataError: naming the directory or the file at fault: missing files,
      bad headers, truncated data, images that are not 3-D, labels that are
      not 1-D, counts of images and labels that differ, invalid labels,
      test labels the training labels lack.
  """
  folder = os.fspath(directory)
  if not os.path.isdir(folder):
    raise DataError(folder, "not a directory")
  found = {key: _find(folder, name) for key, name in filenames.items()}
  missing = [f"{filenames[k]}[.gz]" for k, p in found.items() if p is None]
  if missing:
    raise DataError(folder, f"missing IDX file(s) {', '.join(missing)}")
  paths = {key: path for key, path in found.items() if path is not None}

  arrays = {}
  for key, path in paths.items():
    array = read_idx(path)
    want = 3 if key.startswith("x") else 1
    if array.ndim != want:
      kind = "images (N, H, W)" if want == 3 else "labels (N,)"
      raise DataError(path, f"has {array.ndim} dimensions {array.shape}; expected {kind}")
    arrays[key] = array
  for split in ("train", "test"):
    images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if images.shape[0] != labels.shape[0]:
      raise DataError(
          folder,
          f"{os.path.basename(paths[f'y_{split}'])} has {labels.shape[0]} labels but "
          f"{os.path.basename(paths[f'x_{split}'])} has {images.shape[0]} images",
      )
  return validate_arrays(arrays, source=folder, num_classes=num_classes,
                         allow_unseen_labels=allow_unseen_labels)
