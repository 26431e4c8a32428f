"""One training epoch and batched prediction, data-parallel over a device mesh."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from bayesbinn_jax.data.batching import Augment
from bayesbinn_jax.data.rng import SeedLike
from bayesbinn_jax.train.engine import TrainState
from bayesbinn_jax.train.sharding import process_batches, shard_batch, shard_process_batch, to_host

Inputs = Callable[[np.ndarray], np.ndarray]


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or Inf loss for too many consecutive steps."""


class EpochStopped(Exception):
  """``train_epoch`` stopped at a step boundary because ``stop()`` said so: ``state`` after
  ``step`` steps of the epoch, and ``sums`` of their metrics (as ``train_epoch(start_step=step,
  sums=sums)`` takes them to finish the epoch as if it had not stopped)."""

  def __init__(self, state: TrainState, step: int, sums: dict[str, Any]):
    super().__init__(f"stopped after step {step} of the epoch")
    self.state = state
    self.step = step
    self.sums = sums


def train_epoch(
    state: TrainState,
    step: Callable[[TrainState, Any, Any], tuple[TrainState, dict]],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: SeedLike,
    epoch: int,
    inputs: Inputs,
    mesh: Mesh,
    augment: Augment | None = None,
    max_nonfinite_steps: int = 0,
    progress: tqdm | None = None,
    start_step: int = 0,
    sums: Mapping[str, Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[TrainState, dict[str, float]]:
  """Runs one epoch of ``step`` over seeded minibatches; returns the mean metrics.

  Global batches of ``batch_size`` (the last partial batch is dropped, so
  every step has one shape) are split over the mesh's devices; each process
  reads and hands over only its own rows of each batch (one process: all). ``step``'s
  metrics carry ``"nonfinite_streak"`` (the engine's step does: the number of
  consecutive skipped steps, which carries across epochs and checkpoints); it
  is left out of the returned means. With ``max_nonfinite_steps > 0``,
  :class:`NonFiniteLossError` is raised once that streak exceeds it. The host
  reads a step's streak only after it has queued the next step, so the check
  does not leave the device idle between steps. ``seed`` (an integer or a key)
  and ``epoch`` fix the batch order and augmentation. ``progress`` is a tqdm
  bar owned by the caller (one for the whole run): it advances once per step
  and shows the epoch's running loss and accuracy.

  ``stop``, when given, is asked before every step: once it returns True,
  :class:`EpochStopped` is raised with the state and the metric sums so far.
  ``start_step`` and ``sums`` continue such an epoch: its first ``start_step``
  batches are skipped (drawn, so the order and augmentation of the rest are
  the same) and ``sums`` are those of its steps done; the result is bitwise
  that of the epoch run without a stop.
  """
  batches = process_batches(x, y, batch_size, mesh=mesh, seed=seed, epoch=epoch, augment=augment)
  total = len(x) // batch_size
  totals: dict[str, Any] = dict(sums or {})
  pending: tuple[int, Any] | None = None  # (batch index, streak) of the step before this one

  def check(index: int, streak: Any) -> None:
    nonfinite = int(streak)
    if nonfinite > max_nonfinite_steps:
      raise NonFiniteLossError(
          f"the loss was NaN or Inf for {nonfinite} consecutive steps (epoch {epoch + 1}, "
          f"batch {index + 1}); lower the learning rate, or raise max_nonfinite_steps."
      )

  for index, (xb, yb) in enumerate(itertools.islice(batches, start_step, None), start=start_step):
    if stop is not None and stop():
      if pending is not None:
        check(*pending)
      raise EpochStopped(state, index, totals)
    state, metrics = step(state, *shard_process_batch(mesh, batch_size, inputs(xb), yb))
    metrics = dict(metrics)
    streak = metrics.pop("nonfinite_streak")
    totals = {k: totals.get(k, 0.0) + v for k, v in metrics.items()}
    if max_nonfinite_steps:
      if pending is not None:
        check(*pending)
      pending = (index, streak)
    if progress is not None:
      progress.update()
      if index % 20 == 0 or index == total - 1:
        progress.set_postfix({k: f"{float(v) / (index + 1):.4f}" for k, v in totals.items()},
                             refresh=False)
  if pending is not None:
    check(*pending)
  return state, {k: float(v) / max(total, 1) for k, v in totals.items()}


def predict_batches(
    predict: Callable[..., jax.Array],
    state: TrainState,
    x: np.ndarray,
    *,
    batch_size: int,
    inputs: Inputs,
    mesh: Mesh,
    key: jax.Array | None = None,
    sample_axis: int | None = None,
) -> np.ndarray:
  """``predict(state, x_batch[, key])`` over ``x`` in batches, concatenated.

  Every batch is padded to ``batch_size`` (one compiled shape) and split over
  the mesh; every process gets the whole outputs back. ``sample_axis`` is the axis of the outputs that indexes examples
  when it is not the first (Monte Carlo outputs stacked on axis 0).
  """
  outputs = []
  for start in range(0, len(x), batch_size):
    chunk = inputs(x[start:start + batch_size])
    size = len(chunk)
    if size < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - size, *chunk.shape[1:]), chunk.dtype)])
    (batch,) = shard_batch(mesh, chunk)
    out = predict(state, batch) if key is None else predict(state, batch, jax.random.fold_in(key, start))
    outputs.append(np.take(np.asarray(to_host(out)), np.arange(size), axis=sample_axis or 0))
  return np.concatenate(outputs, axis=sample_axis or 0)
