"""Tests for bayesbinn_jax.train.calibration: hand-computed NLLs, the fitted
temperature against scipy's bounded scalar minimiser on an independent
transcription of the NLL, a known optimum, degenerate inputs, invariances and
input checks."""

from __future__ import annotations

import doctest
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize, special

from bayesbinn_jax.train import calibration
from bayesbinn_jax.train.calibration import (
    apply_temperature,
    fit_temperature,
    log_probabilities,
    temperature_nll,
)
from bayesbinn_jax.train.metrics import classification_metrics


def _reference_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  """Independent transcription with scipy: log of the samples' softmax averaged in log space."""
  z = np.asarray(logits, np.float64)
  z = z if z.ndim == 3 else z[None]
  log_probs = special.log_softmax(z / temperature, axis=-1)[:, np.arange(len(labels)), labels]
  return float(-np.mean(special.logsumexp(log_probs, axis=0) - math.log(z.shape[0])))


def _scipy_temperature(logits, labels, bounds=(1e-2, 1e2)) -> float:
  result = optimize.minimize_scalar(
      lambda log_t: _reference_nll(logits, labels, math.exp(log_t)),
      bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
      options={"xatol": 1e-10})
  return math.exp(result.x)


def _sample_labels(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
  """One label per row drawn from softmax(logits): data generated at T = 1."""
  cumulative = special.softmax(logits, axis=-1).cumsum(axis=-1)
  return np.minimum((rng.random((logits.shape[0], 1)) > cumulative).sum(axis=1), logits.shape[1] - 1)


def test_nll_by_hand():
  # one example, z = [2, 0], y = 0, T = 2: softmax([1, 0])_0 = e / (e + 1) -> NLL = log(1 + 1/e)
  assert temperature_nll([[2.0, 0.0]], [0], 2.0) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-14)
  # two samples: softmax([0, 0])_0 = 1/2, softmax([log 3, 0])_0 = 3/4 -> p_0 = 5/8 -> NLL = -log(5/8)
  mc = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
  assert temperature_nll(mc, [0], 1.0) == pytest.approx(-math.log(0.625), rel=1e-14)
  # the same samples at T = 1/2: [0, 0] -> 1/2, [2 log 3, 0] -> 9/10 -> p_0 = 7/10
  assert temperature_nll(mc, [0], 0.5) == pytest.approx(-math.log(0.7), rel=1e-14)


def test_apply_temperature_by_hand():
  # z = [log 3, 0] at T = 1/2 -> [9, 1] / 10; at T = 1 -> [3, 1] / 4
  z = np.array([[math.log(3.0), 0.0]])
  np.testing.assert_allclose(apply_temperature(z, 0.5), [[0.9, 0.1]], rtol=1e-14)
  np.testing.assert_allclose(apply_temperature(z, 1.0), [[0.75, 0.25]], rtol=1e-14)
  # two samples averaged: ([1/2, 1/2] + [9/10, 1/10]) / 2 = [7/10, 3/10]
  mc = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
  np.testing.assert_allclose(apply_temperature(mc, 0.5), [[0.7, 0.3]], rtol=1e-14)
  assert apply_temperature(z, 0.5).dtype == np.float64


def test_known_optimum_logits_three_times_too_large():
  # labels drawn from softmax(z): T = 1 is right for z, so T = 3 is right for 3 z
  rng = np.random.default_rng(0)
  z = 1.5 * rng.normal(size=(40_000, 5))
  labels = _sample_labels(rng, z)
  t = fit_temperature(3.0 * z, labels)
  assert t == pytest.approx(3.0, rel=0.03)
  assert fit_temperature(z / 4.0, labels) == pytest.approx(0.25, rel=0.03)


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_matches_scipy_bounded_minimiser(scale):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(300, 4))
  labels = _sample_labels(rng, z)
  t = fit_temperature(scale * z, labels)
  assert t == pytest.approx(_scipy_temperature(scale * z, labels), rel=1e-6)
  assert t == pytest.approx(scale, rel=0.3)  # a small sample still lands near the truth
  assert temperature_nll(scale * z, labels, t) == pytest.approx(_reference_nll(scale * z, labels, t), rel=1e-12)


def test_monte_carlo_logits_match_scipy():
  rng = np.random.default_rng(2)
  n, k, s = 400, 3, 6
  centre = rng.normal(size=(n, k))
  labels = _sample_labels(rng, centre)
  samples = 5.0 * (centre[None] + 0.5 * rng.normal(size=(s, n, k)))  # over-confident samples
  t = fit_temperature(samples, labels)
  assert t == pytest.approx(_scipy_temperature(samples, labels), rel=1e-6)
  assert t > 2.0
  assert temperature_nll(samples, labels, t) == pytest.approx(_reference_nll(samples, labels, t), rel=1e-12)
  calibrated = apply_temperature(samples, t)
  reference = special.softmax(samples / t, axis=-1).mean(axis=0)
  np.testing.assert_allclose(calibrated, reference, rtol=1e-12)
  # one sample as (1, N, C) is the same as (N, C)
  assert fit_temperature(samples[:1], labels) == fit_temperature(samples[0], labels)


@pytest.mark.parametrize("seed", range(4))
def test_monte_carlo_fit_is_the_global_minimum_of_a_fine_grid(seed):
  # NLL(T) of a mixture need not be convex in 1/T: compare with 2001 points over the bounds
  rng = np.random.default_rng(seed)
  n, k, s = 150, 4, 5
  scale, spread = rng.uniform(0.2, 5.0), rng.uniform(0.0, 3.0)
  centre = rng.normal(size=(n, k))
  samples = scale * (centre[None] + spread * rng.normal(size=(s, n, k)))
  labels = _sample_labels(rng, centre)
  t = fit_temperature(samples, labels)
  grid = np.exp(np.linspace(math.log(1e-2), math.log(1e2), 2001))
  assert temperature_nll(samples, labels, t) <= min(_reference_nll(samples, labels, g) for g in grid) + 1e-12


def test_log_probabilities_are_valid_logits():
  # softmax((z - c) / T) = softmax(z / T): log softmax(z) = z - logsumexp(z) gives the same fit
  rng = np.random.default_rng(3)
  z = 2.0 * rng.normal(size=(200, 6))
  labels = _sample_labels(rng, z / 2.0)
  log_probs = special.log_softmax(z, axis=-1)
  t = fit_temperature(z, labels)
  # the same NLL up to rounding; near its flat minimum that moves T by ~sqrt(eps)
  assert fit_temperature(log_probs, labels) == pytest.approx(t, rel=1e-6)
  assert fit_temperature(z + 100.0 * rng.normal(size=(200, 1)), labels) == pytest.approx(t, rel=1e-6)
  np.testing.assert_allclose(apply_temperature(log_probs, t), apply_temperature(z, t), rtol=1e-10, atol=1e-15)


def test_log_probabilities_by_hand():
  np.testing.assert_allclose(log_probabilities([[0.25, 0.75]]), [[math.log(0.25), math.log(0.75)]], rtol=1e-15)
  # an exact 0 is floored at the dtype's smallest normal number
  assert log_probabilities(np.array([[1.0, 0.0]], np.float32))[0, 1] == pytest.approx(
      math.log(np.finfo(np.float32).tiny))
  assert log_probabilities(np.array([[1.0, 0.0]]))[0, 1] == pytest.approx(math.log(np.finfo(np.float64).tiny))
  assert log_probabilities([[1, 0]])[0, 1] == pytest.approx(math.log(np.finfo(np.float64).tiny))
  with pytest.raises(ValueError, match=r"^probs\b"):
    log_probabilities([[2.0, -1.0]])


@pytest.mark.parametrize("scale", [0.5, 3.0, 10.0, 20.0])
def test_log_of_float32_probabilities_fits_as_logits(scale):
  # what an engine returning float32 softmax probabilities allows; at scale 20 some
  # probabilities underflow to 0 (log floored at -87.3) and T moves by < 0.2%
  rng = np.random.default_rng(6)
  z = scale * rng.normal(size=(2000, 10))
  labels = _sample_labels(rng, z / scale)
  probs32 = special.softmax(z.astype(np.float32), axis=-1).astype(np.float32)
  t = fit_temperature(log_probabilities(probs32), labels)
  assert t == pytest.approx(fit_temperature(z, labels), rel=2e-3)
  assert t == pytest.approx(scale, rel=0.1)


def test_log_of_averaged_probabilities_calibrates_the_monte_carlo_predictive():
  rng = np.random.default_rng(7)
  z = rng.normal(size=(2000, 10))
  labels = _sample_labels(rng, z)
  samples = 4.0 * (z[None] + 0.3 * rng.normal(size=(4, 2000, 10)))  # over-confident
  mean_probs = special.softmax(samples, axis=-1).mean(axis=0)
  t = fit_temperature(log_probabilities(mean_probs), labels)
  assert t > 2.0
  calibrated = apply_temperature(log_probabilities(mean_probs), t)
  raw, scaled = classification_metrics(mean_probs, labels), classification_metrics(calibrated, labels)
  assert scaled["accuracy"] == raw["accuracy"]
  assert scaled["nll"] < raw["nll"] - 0.1 and scaled["ece"] < raw["ece"]
  # per-sample scaling of the same samples calibrates as well
  per_sample = classification_metrics(apply_temperature(samples, fit_temperature(samples, labels)), labels)
  assert per_sample["nll"] < raw["nll"] - 0.1


def test_accuracy_is_invariant_and_nll_improves():
  rng = np.random.default_rng(4)
  z = rng.normal(size=(500, 10))
  labels = _sample_labels(rng, 0.2 * z)  # z is over-confident: T ~ 5
  raw = classification_metrics(special.softmax(z, axis=-1), labels)
  t = fit_temperature(z, labels)
  calibrated = classification_metrics(apply_temperature(z, t), labels)
  assert calibrated["accuracy"] == raw["accuracy"]
  np.testing.assert_array_equal(apply_temperature(z, t).argmax(axis=1), z.argmax(axis=1))
  assert calibrated["nll"] < raw["nll"] - 0.1
  assert calibrated["ece"] < raw["ece"]


def test_all_right_with_margin_runs_to_lower_bound():
  # every prediction right: NLL falls as T -> 0, so the lower bound is returned
  z = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
  labels = np.array([0, 1, 2])
  assert fit_temperature(z, labels) == pytest.approx(1e-2, rel=1e-6)
  assert fit_temperature(z, labels, bounds=(0.1, 10.0)) == pytest.approx(0.1, rel=1e-6)


def test_all_wrong_runs_to_upper_bound():
  # every prediction wrong: NLL falls as T -> infinity (towards log C)
  z = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
  labels = np.array([1, 0, 1])
  assert fit_temperature(z, labels) == pytest.approx(1e2, rel=1e-6)
  assert fit_temperature(z, labels, bounds=(0.5, 2.0)) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize(
    "logits, labels",
    [
        (np.array([[0.0], [5.0], [-3.0]]), np.array([0, 0, 0])),  # one class: NLL = 0 for every T
        (np.zeros((4, 3)), np.array([0, 1, 2, 0])),  # constant logits: NLL = log 3 for every T
        (np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 1])),  # NLL = 0 already at T = 1
        (np.full((2, 3, 2), 7.0), np.array([0, 1, 1])),  # MC, constant
    ],
)
def test_flat_nll_returns_one(logits, labels):
  assert fit_temperature(logits, labels) == 1.0


def test_accepts_jax_float32_and_float_labels():
  rng = np.random.default_rng(5)
  z = rng.normal(size=(100, 3)).astype(np.float32)
  labels = _sample_labels(rng, z)
  t = fit_temperature(jnp.asarray(z), jnp.asarray(labels))
  assert type(t) is float
  assert t == fit_temperature(z.astype(np.float64), labels.astype(np.float64))
  assert isinstance(apply_temperature(jnp.asarray(z), jnp.float32(t)), np.ndarray)


def test_docstring_example_runs():
  assert doctest.testmod(calibration, raise_on_error=True).attempted >= 1


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: fit_temperature(np.zeros(3), [0]), "logits"),
        (lambda: fit_temperature(np.zeros((1, 2, 3, 4)), [0]), "logits"),
        (lambda: fit_temperature(np.zeros((0, 3)), []), "logits"),
        (lambda: fit_temperature([[np.nan, 0.0]], [0]), "logits"),
        (lambda: fit_temperature([[-np.inf, 0.0]], [0]), "logits"),
        (lambda: fit_temperature([["a", "b"]], [0]), "logits"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0]), "labels"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 3]), "labels"),
        (lambda: fit_temperature(np.zeros((4, 2, 3)), [0, 0, 0, 0]), "labels"),  # N is axis 1
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], bounds=(2.0, 3.0)), "bounds"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], bounds=(0.0, 3.0)), "bounds"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], bounds=(0.5, np.inf)), "bounds"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], bounds=(0.5,)), "bounds"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], iterations=-1), "iterations"),
        (lambda: fit_temperature(np.zeros((2, 3)), [0, 1], iterations=2.5), "iterations"),
        (lambda: apply_temperature(np.zeros((2, 3)), 0.0), "temperature"),
        (lambda: apply_temperature(np.zeros((2, 3)), -1.0), "temperature"),
        (lambda: temperature_nll(np.zeros((2, 3)), [0, 1], np.nan), "temperature"),
        (lambda: apply_temperature(np.zeros(3), 1.0), "logits"),
    ],
)
def test_bad_inputs_name_the_argument(call, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    call()


@st.composite
def _logits_and_labels(draw):
  s = draw(st.sampled_from([None, 1, 3]))
  n = draw(st.integers(1, 20))
  c = draw(st.integers(1, 5))
  shape = (n, c) if s is None else (s, n, c)
  logits = draw(hnp.arrays(np.float64, shape, elements=st.floats(-30.0, 30.0)))
  labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
  return logits, labels


@settings(max_examples=100, deadline=None)
@given(_logits_and_labels())
def test_fit_never_worse_than_one_and_within_bounds_property(case):
  logits, labels = case
  t = fit_temperature(logits, labels, iterations=20)
  assert 1e-2 * (1 - 1e-12) <= t <= 1e2 * (1 + 1e-12)
  assert temperature_nll(logits, labels, t) <= temperature_nll(logits, labels, 1.0)
  probs = apply_temperature(logits, t)
  assert np.all(np.isfinite(probs))
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
