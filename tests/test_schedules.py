"""Per-epoch learning-rate schedules, checked against hand computation."""

from __future__ import annotations

import math

import pytest

from bayesbinn_jax.train.schedules import epoch_schedule


def values(schedule, steps_per_epoch, epochs):
  return [float(schedule(e * steps_per_epoch)) for e in range(epochs)]


def test_cosine_is_pytorch_cosine_annealing_stepped_per_epoch():
  # lr_e = lr_end + (lr - lr_end) (1 + cos(pi e / E)) / 2 with E = 4: 1, 0.8536, 0.5, 0.1464.
  s = epoch_schedule("cosine", 1.0, epochs=4, steps_per_epoch=10, end_learning_rate=0.0)
  assert values(s, 10, 4) == pytest.approx([1.0, 0.853553, 0.5, 0.146447], rel=1e-5)
  # Constant within an epoch.
  assert float(s(19)) == pytest.approx(float(s(10)))


def test_geometric_goes_from_lr_to_lr_end():
  s = epoch_schedule("geometric", 1e-4, epochs=3, steps_per_epoch=5, end_learning_rate=1e-5)
  assert values(s, 5, 3) == pytest.approx([1e-4, math.sqrt(1e-9), 1e-5], rel=1e-5)


def test_steps_decay_at_milestones():
  s = epoch_schedule("steps", 1e-3, epochs=3000, steps_per_epoch=1, milestones=[1500, 2500], decay=0.1)
  assert [float(s(e)) for e in (0, 1499, 1500, 2499, 2500, 2999)] == pytest.approx(
      [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rel=1e-5)


def test_schedule_restarts_after_epochs_for_continual_learning():
  s = epoch_schedule("cosine", 1.0, epochs=4, steps_per_epoch=10, end_learning_rate=0.0)
  assert float(s(40)) == pytest.approx(1.0) and float(s(60)) == pytest.approx(0.5)


def test_constant_and_bad_arguments():
  assert float(epoch_schedule("constant", 0.3, epochs=2, steps_per_epoch=1)(7)) == pytest.approx(0.3)
  with pytest.raises(ValueError, match="lr_schedule must be one of"):
    epoch_schedule("linear", 0.1, epochs=2, steps_per_epoch=1)
  with pytest.raises(ValueError, match="epochs and steps_per_epoch"):
    epoch_schedule("cosine", 0.1, epochs=0, steps_per_epoch=1)
