"""Fingerprints of a data set: the shape, dtype and SHA-256 of each of its arrays.

A run records the fingerprint of the data it trains on; a resumed run compares
its own data with it (:func:`first_difference`), so a run never goes on with
another training set than the one it started with.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping

import numpy as np

Fingerprint = dict[str, dict[str, Any]]
"""``{array name: {"shape": [...], "dtype": "uint8", "sha256": hex}}``."""


def array_fingerprint(array: np.ndarray) -> dict[str, Any]:
  """The shape, dtype and SHA-256 of the bytes of ``array`` (in C order, little-endian)."""
  array = np.asarray(array)
  if array.dtype.byteorder == ">":
    array = array.astype(array.dtype.newbyteorder("<"))
  digest = hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() if array.size else hashlib.sha256().hexdigest()
  return {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": digest}


def fingerprint(arrays: Mapping[str, np.ndarray | None]) -> Fingerprint:
  """The :func:`array_fingerprint` of every array of ``arrays`` that is not None, by name."""
  return {name: array_fingerprint(array) for name, array in sorted(arrays.items()) if array is not None}


def dataset_fingerprint(dataset: Any) -> Fingerprint:
  """The fingerprint of every array field of a data set dataclass (``x_train``, ``y_train``,
  ``x_val``, ...; fields that are None are left out)."""
  return fingerprint({field.name: getattr(dataset, field.name) for field in dataclasses.fields(dataset)
                      if isinstance(getattr(dataset, field.name), np.ndarray)})


def describe(entry: Mapping[str, Any] | None) -> str:
  """``(540, 8, 8) uint8 sha256 1a2b3c4d5e6f`` (the first 12 hex digits), or ``absent``."""
  if not isinstance(entry, Mapping):
    return "absent"
  return f"{tuple(entry.get('shape', ()))} {entry.get('dtype')} sha256 {str(entry.get('sha256'))[:12]}"


def first_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
  """The first array on which two fingerprints differ, e.g. ``x_train: (540, 8, 8) uint8
  sha256 1a2b3c4d5e6f vs (540, 8, 8) uint8 sha256 99aa00bb11cc``; None when they are equal."""
  for name in sorted(set(saved) | set(current)):
    if saved.get(name) != current.get(name):
      return f"{name}: {describe(saved.get(name))} vs {describe(current.get(name))}"
  return None
