"""The epoch loop: consecutive non-finite losses stop training with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from bayesbinn_jax.train.loop import NonFiniteLossError, train_epoch
from bayesbinn_jax.train.sharding import data_mesh


def _fake_step(losses):
  """A train step whose k-th call reports losses[k]; the state is (steps, streak), the streak
  counting consecutive non-finite steps as optax.apply_if_finite does."""

  def step(state, x, y):
    steps, streak = state
    loss = losses[steps]
    return (steps + 1, 0 if np.isfinite(loss) else streak + 1), {"loss": np.float32(loss)}

  return step


def _run(losses, max_nonfinite_steps, streak=0):
  x = np.zeros((len(losses) * 2, 3), np.float32)
  y = np.zeros(len(losses) * 2, np.int32)
  (steps, _), metrics = train_epoch(
      (0, streak), _fake_step(losses), x, y, batch_size=2, seed=0, epoch=0, inputs=lambda a: a,
      mesh=data_mesh(), max_nonfinite_steps=max_nonfinite_steps,
      nonfinite_streak=lambda state: state[1])
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
