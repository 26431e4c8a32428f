"""Seeds for the data pipeline: NumPy generators from explicit seeds.

The data pipeline runs in NumPy, but randomness is still explicit: every
function takes a ``seed`` that is an integer, a ``jax.random`` key (typed or
raw ``uint32``), a :class:`numpy.random.SeedSequence`, or a
:class:`numpy.random.Generator`. An integer or key plus a context (e.g. the
epoch) always gives the same, independent stream, so a run restarted at
epoch ``e`` draws exactly what it drew the first time.
"""

from __future__ import annotations

import numbers
from typing import Any, Union

import numpy as np

SeedLike = Union[int, np.integer, np.random.SeedSequence, np.random.Generator, Any]
"""A seed: an int, a ``jax.random`` key, a NumPy ``SeedSequence`` or ``Generator``."""


def _entropy(seed: Any) -> int | list[int]:
  if isinstance(seed, (bool, np.bool_)):
    raise TypeError(f"seed must be an integer, a key or a Generator; got {seed!r}")
  if isinstance(seed, numbers.Integral):
    if int(seed) < 0:
      raise ValueError(f"seed must be >= 0; got {seed}")
    return int(seed)
  array = seed
  try:
    import jax  # pylint: disable=import-outside-toplevel

    if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
      array = jax.random.key_data(seed)
  except ImportError:  # pragma: no cover - jax is a dependency
    pass
  words = np.asarray(array)
  if words.size == 0 or words.dtype == np.bool_ or not np.issubdtype(words.dtype, np.integer):
    raise TypeError(
        "seed must be an integer, a jax.random key, a SeedSequence or a Generator; "
        f"got {type(seed).__name__}"
    )
  return [int(w) for w in words.astype(np.uint64).ravel()]


def as_generator(seed: SeedLike, *context: int) -> np.random.Generator:
  """A NumPy Generator for ``seed`` and an optional ``context`` of integers.

  A Generator is returned as is (``context`` ignored; its state advances as
  it is used). Any other seed gives a fresh Generator whose stream depends
  only on ``(seed, context)``: different contexts give independent streams.
  """
  if isinstance(seed, np.random.Generator):
    return seed
  if isinstance(seed, np.random.SeedSequence):
    sequence = np.random.SeedSequence(
        seed.entropy, spawn_key=tuple(seed.spawn_key) + tuple(int(c) for c in context)
    )
  else:
    sequence = np.random.SeedSequence(_entropy(seed), spawn_key=tuple(int(c) for c in context))
  return np.random.default_rng(sequence)
