"""Issue 26, item 13 (library): a temperature fit whose optimum lies at or beyond the
search's bound says so (``temperature_fit(...).at_bound``), so a report can flag it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayesbinn_jax.train.calibration import (DEFAULT_BOUNDS, TemperatureFit, fit_temperature,
                                             temperature_fit, temperature_nll)


def _two_class(margin: float, right: int, wrong: int):
  """Logits (margin, 0) for every example; ``right`` of them labelled 0, ``wrong`` labelled 1.

  NLL(T) = p softplus(-m/T) + (1 - p) softplus(m/T) with p = right / (right + wrong) is
  smallest at m / T = log(p / (1 - p)), so T* = m / logit(p) (by hand)."""
  logits = np.tile([margin, 0.0], (right + wrong, 1))
  labels = np.array([0] * right + [1] * wrong)
  return logits, labels


def _optimum(margin, right, wrong):
  return margin / math.log(right / wrong)


@pytest.mark.parametrize("target", [0.02, 0.5, 40.0])
def test_an_interior_optimum_is_not_at_a_bound(target):
  margin = target * math.log(9)  # 90% right: logit(p) = log 9
  logits, labels = _two_class(margin, 9, 1)
  fit = temperature_fit(logits, labels)
  assert fit.at_bound is None
  assert fit.temperature == pytest.approx(_optimum(margin, 9, 1), rel=1e-6)
  assert fit.temperature == fit_temperature(logits, labels)


def test_an_optimum_beyond_the_lower_bound_is_flagged_and_the_bound_returned():
  margin = 0.005 * math.log(9)  # T* = 0.005 < 0.01
  logits, labels = _two_class(margin, 9, 1)
  assert temperature_fit(logits, labels) == TemperatureFit(DEFAULT_BOUNDS[0], "low")
  # every prediction right: the NLL falls as T -> 0
  logits, labels = _two_class(0.01, 10, 0)  # a margin small enough that the NLL at 0.01 is not 0
  assert temperature_fit(logits, labels) == TemperatureFit(0.01, "low")
  assert temperature_nll(logits, labels, 0.01) < temperature_nll(logits, labels, 0.02)


def test_an_optimum_beyond_the_upper_bound_is_flagged():
  logits, labels = _two_class(3.0, 0, 10)  # every prediction wrong: T -> infinity
  assert temperature_fit(logits, labels) == TemperatureFit(100.0, "high")
  assert temperature_fit(logits, labels, bounds=(0.5, 4.0)) == TemperatureFit(4.0, "high")


def test_custom_bounds_move_the_flag():
  margin = 0.3 * math.log(9)  # T* = 0.3
  logits, labels = _two_class(margin, 9, 1)
  assert temperature_fit(logits, labels, bounds=(0.5, 2.0)) == TemperatureFit(0.5, "low")
  fit = temperature_fit(logits, labels, bounds=(0.1, 2.0))
  assert fit.at_bound is None and fit.temperature == pytest.approx(0.3, rel=1e-6)


def test_monte_carlo_logits_at_the_bound_are_flagged():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 50)
  logits = rng.normal(0, 0.1, (4, 50, 3))
  logits[:, np.arange(50), labels] += 5.0  # every sample right and sure
  assert temperature_fit(logits, labels).at_bound == "low"


def test_the_fallback_to_one_is_not_a_bound():
  logits = np.zeros((6, 3))  # constant logits: a flat NLL
  assert temperature_fit(logits, np.arange(6) % 3) == TemperatureFit(1.0, None)
  assert temperature_fit(logits, np.arange(6) % 3, bounds=(1.0, 10.0)) == TemperatureFit(1.0, None)
