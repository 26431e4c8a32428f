"""The epoch loop: consecutive non-finite losses stop training with a clear message."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from bayesbinn_jax.train.loop import NonFiniteLossError, train_epoch
from bayesbinn_jax.train.sharding import data_mesh


class _FakeState(NamedTuple):
  steps: int
  nonfinite_streak: int


def _fake_step(losses):
  """A train step whose k-th call reports losses[k], counting consecutive non-finite steps
  in ``nonfinite_streak`` as the engine's step does."""

  def step(state, x, y):
    loss = losses[state.steps]
    streak = 0 if np.isfinite(loss) else state.nonfinite_streak + 1
    return _FakeState(state.steps + 1, streak), {"loss": np.float32(loss), "nonfinite_streak": streak}

  return step


def _run(losses, max_nonfinite_steps, streak=0):
  x = np.zeros((len(losses) * 2, 3), np.float32)
  y = np.zeros(len(losses) * 2, np.int32)
  (steps, _), metrics = train_epoch(
      _FakeState(0, streak), _fake_step(losses), x, y, batch_size=2, seed=0, epoch=0,
      inputs=lambda a: a, mesh=data_mesh(), max_nonfinite_steps=max_nonfinite_steps)
  return steps, metrics


def test_stops_after_more_than_the_allowed_consecutive_nonfinite_steps():
  losses = [1.0, np.nan, np.inf, np.nan, 1.0]
  with pytest.raises(NonFiniteLossError, match=r"NaN or Inf for 3 consecutive steps \(epoch 1, batch 4\)"):
    _run(losses, max_nonfinite_steps=2)


def test_isolated_nonfinite_steps_and_zero_limit_do_not_stop():
  steps, metrics = _run([1.0, np.nan, 2.0, np.nan, 3.0], max_nonfinite_steps=1)
  assert steps == 5 and np.isnan(metrics["loss"])
  steps, _ = _run([np.nan] * 6, max_nonfinite_steps=0)
  assert steps == 6


def test_the_streak_carries_over_from_the_previous_epoch():
  with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
    _run([np.nan, 1.0], max_nonfinite_steps=2, streak=2)
