"""Minibatches for one epoch: seeded, reproducible and resumable.

The order of epoch ``e`` depends only on ``(seed, e)`` and the augmentation
of batch ``b`` only on ``(seed, e, b)``, so a run restarted from a checkpoint
at ``(epoch, batch)`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax._checks import check_integer

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def num_batches(num_examples: int, batch_size: int, drop_last: bool = False) -> int:
  """Batches per epoch: ``floor(N / B)`` with ``drop_last``, else ``ceil(N / B)``."""
  check_integer("batch_size", batch_size, low=1)
  if drop_last:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def examples_left_out(num_examples: int, batch_size: int) -> int:
  """Examples an epoch of full batches leaves out: ``N mod B`` (``drop_last``).

  The training loop drops the last partial batch, so these examples (a
  different draw of them each shuffled epoch) are not seen in that epoch;
  e.g. 150 examples in batches of 100 give 1 step and leave out 50.
  """
  check_integer("num_examples", num_examples, low=0)
  check_integer("batch_size", batch_size, low=1)
  return int(num_examples) % int(batch_size)


def epoch_order(num_examples: int, seed: SeedLike, epoch: int = 0) -> np.ndarray:
  """The permutation of ``range(num_examples)`` used for ``epoch``."""
  check_integer("epoch", epoch, low=0)
  return as_generator(seed, int(epoch), _SHUFFLE_STREAM).permutation(num_examples)


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: SeedLike | None = None,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    augment: Augment | None = None,
    start_batch: int = 0,
    rows: slice | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the ``(x_batch, y_batch)`` minibatches of one epoch.

  Every example is in exactly one batch (with ``drop_last``, the last
  ``N mod B`` examples of the order are left out of this epoch).

  Args:
    x: inputs ``(N, ...)``.
    y: targets ``(N, ...)``.
    batch_size: examples per batch.
    seed: integer, jax key or SeedSequence: the order and augmentation are
      then functions of ``(seed, epoch)``. A ``numpy`` Generator is used
      as is (its state advances; resuming is then the caller's business).
      Required when ``shuffle`` or ``augment``.
    epoch: the epoch number, which selects the permutation.
    shuffle: visit the examples in a seeded random order; False keeps order.
    drop_last: leave out a final batch smaller than ``batch_size``.
    augment: ``augment(x_batch, rng) -> x_batch`` applied to each batch,
      e.g. :func:`augment_cifar`.
    start_batch: skip the first batches (resume mid-epoch).
    rows: yield only these rows of every batch (one process's share of a
      global batch); only they are read from ``x`` and ``y``, except with
      ``augment``, which draws for the whole batch and is sliced after.
  """
  x, y = np.asarray(x), np.asarray(y)
  check_integer("batch_size", batch_size, low=1)
  check_integer("start_batch", start_batch, low=0)
  check_integer("epoch", epoch, low=0)
  if x.shape[:1] != y.shape[:1]:
    raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
  if (shuffle or augment is not None) and seed is None:
    raise ValueError("seed is required when shuffle=True or augment is given")
  count = x.shape[0]
  batch_size, epoch = int(batch_size), int(epoch)
  order = epoch_order(count, seed, epoch) if shuffle else np.arange(count)
  for index in range(int(start_batch), num_batches(count, batch_size, drop_last)):
    chosen = order[index * batch_size : (index + 1) * batch_size]
    if augment is not None:
      x_batch = augment(x[chosen], as_generator(seed, epoch, _AUGMENT_STREAM, index))
      yield (x_batch, y[chosen]) if rows is None else (x_batch[rows], y[chosen][rows])
    else:
      chosen = chosen if rows is None else chosen[rows]
      yield x[chosen], y[chosen]
