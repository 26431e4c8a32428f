"""Evaluation metrics: accuracy, NLL, calibration (ECE) and Gaussian regression scores.

NumPy only and float64 internally, so the numbers do not depend on the
precision the model ran in. Inputs may be NumPy or JAX arrays (anything
:func:`numpy.asarray` accepts); every check raises a ValueError that names the
offending argument.

Classification (``probs`` ``(N, C)``, integer ``labels`` ``(N,)``):

- accuracy ``= (1/N) sum_n [argmax_c p_nc == y_n]``;
- nll ``= -(1/N) sum_n log max(p_{n,y_n}, 1e-12)``;
- ece (Guo et al., 2017) ``= sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` over
  ``num_bins`` equal-width bins ``B_b = ((b-1)/M, b/M]`` of the confidence
  ``max_c p_nc``; ``acc(B_b)`` and ``conf(B_b)`` are the mean correctness and
  mean confidence of the examples in the bin (see :func:`reliability_bins`).

Regression (predictive mean ``mu``, std ``sigma``, targets ``y``):

- rmse ``= sqrt((1/N) sum_n (mu_n - y_n)^2)``;
- nll ``= (1/N) sum_n [0.5 log(2 pi s_n^2) + (y_n - mu_n)^2 / (2 s_n^2)]`` with
  ``s_n = max(sigma_n, 1e-6)``.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np

PROB_FLOOR = 1e-12
STD_FLOOR = 1e-6
# Tolerance on sum_c p_nc = 1: loose enough for float16/float32 softmax outputs.
_ROW_SUM_ATOL = 1e-3


class ReliabilityBins(NamedTuple):
  """Per-bin statistics of a reliability diagram (``num_bins`` equal-width bins).

  Attributes:
    edges: ``(num_bins + 1,)`` bin edges ``b / num_bins``; bin ``b`` is
      ``(edges[b], edges[b + 1]]`` (the first bin also takes confidence 0).
    confidence: ``(num_bins,)`` mean confidence ``max_c p_nc`` in each bin,
      NaN for an empty bin.
    accuracy: ``(num_bins,)`` fraction of correct predictions in each bin,
      NaN for an empty bin.
    count: ``(num_bins,)`` number of examples in each bin (int64).
  """

  edges: np.ndarray
  confidence: np.ndarray
  accuracy: np.ndarray
  count: np.ndarray


def as_float_array(value: Any, name: str) -> np.ndarray:
  """``value`` as a float64 array; ValueError naming ``name`` if it is not numeric."""
  try:
    array = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be a numeric array; got {type(value).__name__} ({error}).") from error
  return array


def _check_num_bins(num_bins: Any) -> int:
  if (
      isinstance(num_bins, bool)
      or not isinstance(num_bins, numbers.Real)
      or not float(num_bins).is_integer()
      or num_bins < 1
  ):
    raise ValueError(f"num_bins must be an integer >= 1; got {num_bins!r}.")
  return int(num_bins)


def _check_classification(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``probs`` ``(N, C)`` and ``labels`` ``(N,)``; returns float64 / int64 copies."""
  p = as_float_array(probs, "probs")
  if p.ndim != 2:
    raise ValueError(f"probs must be 2-D (N, C); got shape {p.shape}.")
  n, c = p.shape
  if n < 1 or c < 1:
    raise ValueError(f"probs must have N >= 1 rows and C >= 1 columns; got shape {p.shape}.")
  if not np.all(np.isfinite(p)):
    raise ValueError("probs must be finite; got NaN or inf.")
  if np.any(p < 0.0) or np.any(p > 1.0):
    raise ValueError(
        f"probs must lie in [0, 1]; got values in [{p.min():g}, {p.max():g}]."
        " Pass probabilities (e.g. softmax of the logits), not logits."
    )
  row_sums = p.sum(axis=1)
  if np.any(np.abs(row_sums - 1.0) > _ROW_SUM_ATOL):
    worst = row_sums[np.argmax(np.abs(row_sums - 1.0))]
    raise ValueError(f"probs rows must sum to 1 (within {_ROW_SUM_ATOL:g}); a row sums to {worst:g}.")

  y = np.asarray(labels)
  if y.ndim != 1:
    raise ValueError(f"labels must be 1-D (N,) class indices; got shape {y.shape}.")
  if y.shape[0] != n:
    raise ValueError(f"labels must have length N = {n} (rows of probs); got length {y.shape[0]}.")
  if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
    raise ValueError(f"labels must be integers; got dtype {y.dtype}.")
  if np.issubdtype(y.dtype, np.floating):
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
      raise ValueError("labels must be integers; got non-integral values.")
  y = y.astype(np.int64)
  if np.any(y < 0) or np.any(y >= c):
    raise ValueError(f"labels must be in [0, {c}) (C = {c} columns of probs); got values in [{y.min()}, {y.max()}].")
  return p, y


def reliability_bins(probs: Any, labels: Any, num_bins: int = 15) -> ReliabilityBins:
  """Bins examples by confidence ``max_c p_nc`` into ``num_bins`` equal-width bins.

  Bin ``b`` (0-based) is ``(b/M, (b+1)/M]`` with ``M = num_bins``; an example
  of confidence exactly ``b/M`` falls in the lower bin. For each bin returns
  ``conf(B_b) = mean_{n in B_b} max_c p_nc``, ``acc(B_b) = mean_{n in B_b}
  [argmax_c p_nc == y_n]`` (NaN when the bin is empty) and ``|B_b|``.

  Args:
    probs: ``(N, C)`` predicted class probabilities, rows summing to 1.
    labels: ``(N,)`` integer labels in ``[0, C)``.
    num_bins: number of equal-width bins ``M >= 1``.

  Raises:
    ValueError: naming ``probs``, ``labels`` or ``num_bins`` when invalid.
  """
  num_bins = _check_num_bins(num_bins)
  p, y = _check_classification(probs, labels)
  return _bins(p, y, num_bins)


def _bins(p: np.ndarray, y: np.ndarray, num_bins: int) -> ReliabilityBins:
  """:func:`reliability_bins` on validated float64 ``p`` and int64 ``y``."""
  confidence = p.max(axis=1)
  correct = (p.argmax(axis=1) == y).astype(np.float64)
  # b / M is the correctly rounded double, so a confidence written as 0.6
  # lands exactly on the edge 3 / 5 and goes to the lower bin.
  edges = np.arange(num_bins + 1, dtype=np.float64) / num_bins
  index = np.searchsorted(edges[1:-1], confidence, side="left")
  count = np.bincount(index, minlength=num_bins).astype(np.int64)
  conf_sum = np.bincount(index, weights=confidence, minlength=num_bins)
  acc_sum = np.bincount(index, weights=correct, minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
    mean_acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
  return ReliabilityBins(edges=edges, confidence=mean_conf, accuracy=mean_acc, count=count)


def ece_from_bins(bins: ReliabilityBins) -> float:
  """Expected calibration error ``sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` of given bins.

  Empty bins contribute nothing. ``N = sum_b |B_b|`` must be >= 1.
  """
  count = np.asarray(bins.count, dtype=np.float64)
  total = count.sum()
  if total < 1:
    raise ValueError("bins must hold at least one example; got all-zero count.")
  filled = count > 0
  gap = np.abs(np.asarray(bins.accuracy, np.float64)[filled] - np.asarray(bins.confidence, np.float64)[filled])
  return float(np.sum(count[filled] / total * gap))


def classification_metrics(probs: Any, labels: Any, *, num_bins: int = 15) -> dict[str, float]:
  """Accuracy, mean negative log-likelihood and ECE of predicted class probabilities.

  ``accuracy = (1/N) sum_n [argmax_c p_nc == y_n]`` (in [0, 1]; ties go to the
  lowest class index), ``nll = -(1/N) sum_n log max(p_{n,y_n}, 1e-12)``, and
  ``ece = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` from
  :func:`reliability_bins` with ``num_bins`` bins.

  Args:
    probs: ``(N, C)`` predicted probabilities (e.g. a Monte Carlo average of
      softmax outputs), rows summing to 1.
    labels: ``(N,)`` integer labels in ``[0, C)``.
    num_bins: number of ECE bins.

  Returns:
    ``{"accuracy": float, "nll": float, "ece": float}``.

  Raises:
    ValueError: naming ``probs``, ``labels`` or ``num_bins`` when invalid.
  """
  num_bins = _check_num_bins(num_bins)
  p, y = _check_classification(probs, labels)
  bins = _bins(p, y, num_bins)
  accuracy = float(np.mean(p.argmax(axis=1) == y))
  nll = float(-np.mean(np.log(np.maximum(p[np.arange(p.shape[0]), y], PROB_FLOOR))))
  return {"accuracy": accuracy, "nll": nll, "ece": ece_from_bins(bins)}


def regression_metrics(mean: Any, std: Any, targets: Any) -> dict[str, float]:
  """RMSE and mean Gaussian negative log-likelihood of a predictive distribution.

  ``rmse = sqrt((1/N) sum_n (mu_n - y_n)^2)`` and
  ``nll = (1/N) sum_n [0.5 log(2 pi s_n^2) + (y_n - mu_n)^2 / (2 s_n^2)]``,
  ``s_n = max(sigma_n, 1e-6)``.

  Args:
    mean: predictive means, any shape with ``N >= 1`` elements (flattened, so
      ``(N,)`` and ``(N, 1)`` are both accepted).
    std: predictive standard deviations ``>= 0``: a scalar (shared) or ``N``
      elements.
    targets: ``N`` target values.

  Returns:
    ``{"rmse": float, "nll": float}``.

  Raises:
    ValueError: naming ``mean``, ``std`` or ``targets`` when empty, not finite,
      of mismatched size, or (``std``) negative.
  """
  mu = as_float_array(mean, "mean").ravel()
  y = as_float_array(targets, "targets").ravel()
  sigma = as_float_array(std, "std").ravel()
  if mu.size < 1:
    raise ValueError("mean must have at least one element; got an empty array.")
  if y.size != mu.size:
    raise ValueError(f"targets must have as many elements as mean ({mu.size}); got {y.size}.")
  if sigma.size not in (1, mu.size):
    raise ValueError(f"std must be a scalar or have as many elements as mean ({mu.size}); got {sigma.size}.")
  for name, array in (("mean", mu), ("std", sigma), ("targets", y)):
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{name} must be finite; got NaN or inf.")
  if np.any(sigma < 0.0):
    raise ValueError(f"std must be >= 0; got minimum {sigma.min():g}.")
  s = np.maximum(sigma, STD_FLOOR)
  err = y - mu
  rmse = float(np.sqrt(np.mean(err**2)))
  nll = float(np.mean(0.5 * np.log(2.0 * np.pi * s**2) + err**2 / (2.0 * s**2)))
  return {"rmse": rmse, "nll": nll}
