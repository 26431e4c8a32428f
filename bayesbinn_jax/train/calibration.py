"""Temperature scaling: one scalar T > 0 that recalibrates a classifier's logits.

Guo et al. (2017), "On calibration of modern neural networks", arXiv
1706.04599, section 4.2: the calibrated prediction is ``softmax(z / T)`` with
``T`` fitted on held-out data by minimising the negative log-likelihood

  ``NLL(T) = -(1/N) sum_n log softmax(z_n / T)_{y_n}``.

``T < 1`` sharpens an under-confident classifier, ``T > 1`` softens an
over-confident one; the argmax, hence the accuracy, never changes. For a Monte
Carlo predictive over ``S`` sampled networks with logits ``z_sn``, ``T``
scales each sample before the probabilities are averaged:

  ``p_n(T) = (1/S) sum_s softmax(z_sn / T)``,  ``NLL(T) = -(1/N) sum_n log p_n(T)_{y_n}``.

Since ``softmax(z - c) = softmax(z)``, log-probabilities are valid logits
(:func:`log_probabilities`); the log of the averaged Monte Carlo
probabilities, passed as ``(N, C)`` logits, is the other way to calibrate
that predictive (the temperature then scales the mixture's log-probabilities).

The search is over ``log T`` within ``bounds`` (so T cannot run to 0 or
infinity): a grid of :data:`GRID_POINTS` points brackets the best cell, and a
golden-section search refines it. ``NLL`` is convex in ``1/T`` for
``(N, C)`` logits, so the grid's best cell holds the minimum; when it lies at
a bound (e.g. every prediction right: ``T -> 0``; every prediction wrong:
``T -> infinity``) that bound is returned, and :func:`temperature_fit` says so
(``at_bound``): such a T is the edge of the search, not a calibration (a
network measured on its own training data, right and confident, gets
``T_min``, and its test predictions become over-confident). When no
temperature in range beats
``T = 1`` (a single class, constant logits, margins so large that the NLL is
0 in floating point), 1 is returned, so the fitted NLL is never above the NLL
at ``T = 1``.

NumPy only and float64 internally, like :mod:`bayesbinn_jax.train.metrics`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from bayesbinn_jax._checks import check_integer, check_positive
from bayesbinn_jax.train.metrics import as_float_array, as_labels, as_probs

# Default search range of T: log T in [-log 100, log 100].
DEFAULT_BOUNDS = (1e-2, 1e2)
# Points of the coarse log T grid (odd, so a symmetric range holds log T = 0).
GRID_POINTS = 41
# Golden-section iterations after the grid: each shrinks the bracket by 0.618,
# 40 of them take a two-cell bracket of width 2 * 9.2 / 40 to ~1e-9 in log T.
DEFAULT_ITERATIONS = 40
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
# A fitted log T this close to a bound's is at the bound (the search resolves ~1e-9).
_AT_BOUND_TOLERANCE = 1e-6


class TemperatureFit(NamedTuple):
  """The result of :func:`temperature_fit`.

  Attributes:
    temperature: ``T`` in ``[T_min, T_max]``.
    at_bound: ``"low"`` or ``"high"`` when the optimum lies at (or beyond) that
      bound of the search, so ``T`` is the bound rather than a minimum of
      the NLL; None otherwise (including the ``T = 1`` fallback).
  """

  temperature: float
  at_bound: str | None


def _as_logits(logits: Any) -> np.ndarray:
  """``logits`` ``(N, C)`` or ``(S, N, C)`` as ``(S, N, C)`` float64 with row maxima 0, checked finite."""
  z = as_float_array(logits, "logits")
  if z.ndim not in (2, 3):
    raise ValueError(
        f"logits must be (N, C) or (S, N, C) for S Monte Carlo samples; got shape {z.shape}."
    )
  if z.size == 0:
    raise ValueError(f"logits must have S, N, C >= 1; got shape {z.shape}.")
  if not np.all(np.isfinite(z)):
    raise ValueError(
        "logits must be finite; got NaN or inf. For log-probabilities of probabilities"
        " that may be 0, use log_probabilities(probs)."
    )
  z = z if z.ndim == 3 else z[None]
  # softmax(z - c) = softmax(z): shift each row's maximum to 0, so z / T stays <= 0
  # and rows of constant logits become exact zeros (a flat NLL, not rounding noise)
  return z - z.max(axis=-1, keepdims=True)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
  """``log sum exp`` over ``axis`` of finite ``a``, shifted by the maximum."""
  peak = a.max(axis=axis, keepdims=True)
  return np.squeeze(peak, axis) + np.log(np.exp(a - peak).sum(axis=axis))


def _log_partition(z: np.ndarray, temperature: float) -> np.ndarray:
  """``log sum_c exp(z_c / T)`` over the last axis of logits whose row maxima are 0
  (:func:`_as_logits`): the sum lies in ``[1, C]``, so no shift is needed."""
  return np.log(np.exp(z * (1.0 / temperature)).sum(axis=-1))


def _log_predictive(z: np.ndarray, temperature: float) -> np.ndarray:
  """``(N, C)`` log of ``(1/S) sum_s softmax(z_s / T)`` for ``(S, N, C)`` logits ``z``."""
  log_softmax = z / temperature - _log_partition(z, temperature)[..., None]
  if z.shape[0] == 1:
    return log_softmax[0]
  return _logsumexp(log_softmax, axis=0) - math.log(z.shape[0])


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
  """``-(1/N) sum_n log p_n(T)_{y_n}`` for ``(S, N, C)`` logits ``z`` (exact: no floor)."""
  log_softmax_y = z[:, np.arange(z.shape[1]), y] / temperature - _log_partition(z, temperature)  # (S, N)
  if z.shape[0] == 1:
    return float(-log_softmax_y.mean())
  return float(-(_logsumexp(log_softmax_y, axis=0) - math.log(z.shape[0])).mean())


def _check_bounds(bounds: Any) -> tuple[float, float]:
  try:
    low, high = (float(b) for b in bounds)
  except (TypeError, ValueError) as error:
    raise ValueError(f"bounds must be a pair (T_min, T_max) of numbers; got {bounds!r}.") from error
  if not (0.0 < low <= 1.0 <= high < math.inf):
    raise ValueError(
        f"bounds must satisfy 0 < T_min <= 1 <= T_max < inf; got {bounds!r}. Pass e.g. (0.01, 100)."
    )
  return low, high


def temperature_nll(logits: Any, labels: Any, temperature: float) -> float:
  """Mean negative log-likelihood of the temperature-scaled predictive.

  ``NLL(T) = -(1/N) sum_n log p_n(T)_{y_n}`` with
  ``p_n(T) = (1/S) sum_s softmax(z_sn / T)`` (``S = 1`` for ``(N, C)`` logits),
  computed in log space (no probability floor). Guo et al. (2017), eq. of
  section 4.2.

  Args:
    logits: ``(N, C)`` logits of one network, or ``(S, N, C)`` logits of ``S``
      sampled networks (any real dtype; log-probabilities are valid logits).
    labels: ``(N,)`` integer labels in ``[0, C)``.
    temperature: ``T > 0``.

  Returns:
    The NLL in nats per example.

  Raises:
    ValueError: naming ``logits``, ``labels`` or ``temperature`` when invalid.
  """
  z = _as_logits(logits)
  y = as_labels(labels, z.shape[1], z.shape[2], source="logits")
  check_positive("temperature", temperature)
  return _nll(z, y, float(temperature))


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    iterations: int = DEFAULT_ITERATIONS,
) -> float:
  """:func:`temperature_fit`'s temperature alone (see there)."""
  return temperature_fit(logits, labels, bounds=bounds, iterations=iterations).temperature


def temperature_fit(
    logits: Any,
    labels: Any,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    iterations: int = DEFAULT_ITERATIONS,
) -> TemperatureFit:
  """Fits the temperature ``T`` minimising :func:`temperature_nll` on held-out data.

  ``T* = argmin_{T in bounds} NLL(T)`` (Guo et al., 2017, section 4.2),
  searched on ``log T``: the NLL on a grid of :data:`GRID_POINTS` points over
  ``[log T_min, log T_max]``, then ``iterations`` golden-section steps inside
  the two grid cells around the best point. Returns exactly ``1.0`` when no
  temperature found beats ``T = 1`` (a single class, constant logits, or a
  flat NLL), and a bound when the optimum lies beyond it (every prediction
  right: ``T_min``; every prediction wrong: ``T_max``).

  Args:
    logits: ``(N, C)`` held-out logits (or log-probabilities) of the mode
      network, or ``(S, N, C)`` logits of ``S`` Monte Carlo samples, where
      ``T`` scales each sample before the probabilities are averaged.
    labels: ``(N,)`` integer labels in ``[0, C)``.
    bounds: ``(T_min, T_max)`` with ``0 < T_min <= 1 <= T_max < inf``.
    iterations: golden-section steps, an integer >= 0 (each shrinks the
      bracket on ``log T`` by a factor 0.618).

  Returns:
    A :class:`TemperatureFit`: ``T`` as a float in ``[T_min, T_max]``, and
    ``at_bound``, ``"low"``/``"high"`` when ``T`` is that bound because the
    NLL still falls beyond it (the best log T within 1e-6 of the bound's).

  Raises:
    ValueError: naming ``logits``, ``labels``, ``bounds`` or ``iterations``
      when invalid.

  Example:
    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    >>> fit = temperature_fit(z, np.array([0, 1, 1]))
    >>> temperature_nll(z, [0, 1, 1], fit.temperature) <= temperature_nll(z, [0, 1, 1], 1.0)
    True
    >>> temperature_fit(z, np.array([0, 1, 0]))  # every prediction right: T -> 0
    TemperatureFit(temperature=0.01, at_bound='low')
  """
  z = _as_logits(logits)
  y = as_labels(labels, z.shape[1], z.shape[2], source="logits")
  low, high = _check_bounds(bounds)
  check_integer("iterations", iterations, low=0)

  def objective(log_t: float) -> float:
    return _nll(z, y, math.exp(log_t))

  grid = np.linspace(math.log(low), math.log(high), GRID_POINTS)
  values = [objective(g) for g in grid]
  best = int(np.argmin(values))
  best_log_t, best_value = float(grid[best]), values[best]
  # golden-section search on [a, b], the grid cells on either side of the best point
  a, b = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, GRID_POINTS - 1)])
  c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
  fc, fd = objective(c), objective(d)
  for _ in range(int(iterations)):
    if fc <= fd:
      b, d, fd = d, c, fc
      c = b - _INV_PHI * (b - a)
      fc = objective(c)
    else:
      a, c, fc = c, d, fd
      d = a + _INV_PHI * (b - a)
      fd = objective(d)
  for log_t, value in ((c, fc), (d, fd)):
    if value < best_value:
      best_log_t, best_value = log_t, value
  if not best_value < _nll(z, y, 1.0):
    return TemperatureFit(1.0, None)
  if best_log_t <= math.log(low) + _AT_BOUND_TOLERANCE:
    return TemperatureFit(low, "low")
  if best_log_t >= math.log(high) - _AT_BOUND_TOLERANCE:
    return TemperatureFit(high, "high")
  return TemperatureFit(float(min(max(math.exp(best_log_t), low), high)), None)


def log_probabilities(probs: Any) -> np.ndarray:
  """``log p`` of predicted probabilities, usable as logits by :func:`fit_temperature`.

  ``softmax(log p / T) = softmax(z / T)`` for ``p = softmax(z)`` (the shift
  ``logsumexp(z)`` cancels), so a predictor that returns probabilities needs
  no logits for temperature scaling. Probabilities that underflowed to 0 are
  floored at the smallest normal number of their floating dtype (float32:
  ``1.2e-38``, ``log = -87.3``; float64 for non-float input), not at a
  larger constant: a floor such as ``1e-12`` cuts the logits of confident
  networks and biases ``T`` (by 4% for 10 classes with N(0, 10^2) logits).

  Args:
    probs: ``(N, C)`` probabilities (e.g. the mode network's softmax, or the
      mean of ``S`` networks' softmax outputs), rows summing to 1.

  Returns:
    ``(N, C)`` float64 log-probabilities, finite.

  Raises:
    ValueError: naming ``probs`` when invalid.
  """
  dtype = np.asarray(probs).dtype
  tiny = np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).tiny
  return np.log(np.maximum(as_probs(probs), float(tiny)))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
  """Temperature-scaled predictive probabilities ``p_n(T) = (1/S) sum_s softmax(z_sn / T)``.

  Guo et al. (2017), section 4.2; ``S = 1`` for ``(N, C)`` logits. The argmax
  of each row (the prediction) is that of ``softmax(z_n)`` for ``S = 1``.

  Args:
    logits: ``(N, C)`` logits (or log-probabilities), or ``(S, N, C)`` logits
      of ``S`` Monte Carlo samples.
    temperature: ``T > 0``, e.g. from :func:`fit_temperature`.

  Returns:
    ``(N, C)`` float64 probabilities, rows summing to 1, ready for
    :func:`bayesbinn_jax.train.metrics.classification_metrics`.

  Raises:
    ValueError: naming ``logits`` or ``temperature`` when invalid.
  """
  z = _as_logits(logits)
  check_positive("temperature", temperature)
  return np.exp(_log_predictive(z, float(temperature)))
