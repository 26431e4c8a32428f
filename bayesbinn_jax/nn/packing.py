"""The one +-1 check and the one bit packer of the library (1-bit files and xnor inference).

Bit layout everywhere: +1 -> bit 1, -1 -> bit 0, little-endian within a word:
bit ``j`` of word ``k`` holds element ``w k + j`` of the packed axis (``w`` the word
width: 8, 32 or 64); the padding bits of the last word are 0. A ``uint8`` packing
of a flattened array is exactly ``np.packbits(bits, bitorder="little")``, and the
``uint64`` words are the ``uint32`` words read two at a time (little-endian), so
every width shares one layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

WORD_DTYPES: tuple[Any, ...] = (np.uint8, np.uint32, np.uint64)
"""Word types :func:`pack_bits_np` packs into."""


class NotBinaryError(ValueError):
  """A leaf or kernel that is not exactly +-1 (carries ``name``, ``count``, ``size``)."""

  def __init__(self, message: str, name: str, count: int, size: int):
    super().__init__(message)
    self.name, self.count, self.size = name, count, size


def check_pm1(name: str, w: Any, *, hint: str = "") -> np.ndarray:
  """Returns ``w`` as a host array if every element is exactly +-1, else raises.

  Accepts floating (including bfloat16) and signed-integer arrays.

  Raises:
    NotBinaryError: ``"<name> is not binary: k of n values are not exactly +-1
      (e.g. v at index i)"`` followed by ``hint``; also for other dtypes.
  """
  w = np.asarray(jax.device_get(w))
  if not (jnp.issubdtype(w.dtype, jnp.floating) or np.issubdtype(w.dtype, np.signedinteger)):
    raise NotBinaryError(
        f"{name} has dtype {w.dtype}; a binary leaf must be a real (float or signed integer) "
        f"array of +-1.{hint}", name, w.size, w.size)
  values = w if np.issubdtype(w.dtype, np.number) else w.astype(np.float32)  # bfloat16 etc.
  bad = ~((values == 1) | (values == -1))
  if bad.any():
    first = np.unravel_index(int(np.argmax(bad)), w.shape) if w.ndim else ()
    count = int(bad.sum())
    raise NotBinaryError(
        f"{name} is not binary: {count} of {w.size} values are not exactly +-1 "
        f"(e.g. {float(values[first])!r} at index {tuple(int(i) for i in first)}).{hint}",
        name, count, w.size)
  return w


def pack_bits_np(bits: Any, dtype: Any = np.uint8) -> np.ndarray:
  """Packs booleans along the last axis into words: (..., n) -> (..., ceil(n / width)).

  ``dtype`` is ``np.uint8`` (``np.packbits(..., bitorder="little")``), ``np.uint32``
  or ``np.uint64``. Host (NumPy) version, used at packing time.
  """
  dtype = np.dtype(dtype)
  if dtype.type not in WORD_DTYPES:
    raise ValueError(f"dtype must be one of uint8, uint32, uint64; got {dtype}.")
  bits = np.asarray(bits, bool)
  width = 8 * dtype.itemsize
  pad = (-bits.shape[-1]) % width
  bits = np.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
  packed = np.packbits(bits, axis=-1, bitorder="little")
  return np.ascontiguousarray(packed).view(dtype.newbyteorder("<")).astype(dtype)


def pack_bits(bits: jax.Array) -> jax.Array:
  """JAX version of :func:`pack_bits_np` into ``uint32`` words (traceable, for inference)."""
  bits = jnp.asarray(bits)
  pad = (-bits.shape[-1]) % 32
  bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
  bits = jnp.reshape(bits, bits.shape[:-1] + (-1, 32)).astype(jnp.uint32)
  shifts = jnp.arange(32, dtype=jnp.uint32)
  return jnp.sum(bits << shifts, axis=-1, dtype=jnp.uint32)


def unpack_bits_np(words: Any, count: int) -> np.ndarray:
  """The inverse of :func:`pack_bits_np` along the last axis: the first ``count`` bits, bool."""
  words = np.ascontiguousarray(words)
  as_bytes = words.astype(words.dtype.newbyteorder("<")).view(np.uint8)
  return np.unpackbits(as_bytes, axis=-1, count=count, bitorder="little").astype(bool)
