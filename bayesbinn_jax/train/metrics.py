"""Evaluation metrics: accuracy, NLL, calibration (ECE), uncertainty scores and Gaussian regression scores.

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
  mean confidence of the examples in the bin (see :func:`reliability_bins`);
- brier ``= (1/N) sum_n sum_c (p_nc - [c == y_n])^2``;
- predictive entropy ``H_n = -sum_c p_nc log p_nc`` (nats, ``0 log 0 = 0``);
- auroc ``= (1/(P Q)) sum_{i pos} sum_{j neg} ([s_i > s_j] + 0.5 [s_i == s_j])``
  (Mann-Whitney U, ties count half): misclassification AUROC scores wrong
  predictions (positives) by entropy, OOD AUROC scores out-of-distribution
  inputs (positives) against in-distribution ones (Hendrycks and Gimpel, 2017).

Regression (predictive mean ``mu``, std ``sigma``, targets ``y``):

- rmse ``= sqrt((1/N) sum_n (mu_n - y_n)^2)``;
- nll ``= (1/N) sum_n [0.5 log(2 pi s_n^2) + (y_n - mu_n)^2 / (2 s_n^2)]`` with
  ``s_n = max(sigma_n, 1e-6)``.
"""

from __future__ import annotations

import math
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
  count: np.ndarray  # type: ignore[assignment]  # the field shadows tuple.count


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
  return int(num_bins)  # type: ignore[call-overload]  # an integral numbers.Real


def as_probs(probs: Any, name: str = "probs") -> np.ndarray:
  """``probs`` ``(N, C)`` as float64, checked to be finite probabilities whose rows sum to 1.

  Raises:
    ValueError: naming ``name`` when ``probs`` is not 2-D with ``N, C >= 1``,
      not finite, outside ``[0, 1]``, or a row sums to more than 1e-3 away
      from 1.
  """
  p = as_float_array(probs, name)
  if p.ndim != 2:
    raise ValueError(f"{name} must be 2-D (N, C); got shape {p.shape}.")
  n, c = p.shape
  if n < 1 or c < 1:
    raise ValueError(f"{name} must have N >= 1 rows and C >= 1 columns; got shape {p.shape}.")
  if not np.all(np.isfinite(p)):
    raise ValueError(f"{name} must be finite; got NaN or inf.")
  if np.any(p < 0.0) or np.any(p > 1.0):
    raise ValueError(
        f"{name} must lie in [0, 1]; got values in [{p.min():g}, {p.max():g}]."
        " Pass probabilities (e.g. softmax of the logits), not logits."
    )
  row_sums = p.sum(axis=1)
  if np.any(np.abs(row_sums - 1.0) > _ROW_SUM_ATOL):
    worst = row_sums[np.argmax(np.abs(row_sums - 1.0))]
    raise ValueError(f"{name} rows must sum to 1 (within {_ROW_SUM_ATOL:g}); a row sums to {worst:g}.")
  return p


def as_labels(labels: Any, num_examples: int, num_classes: int, *, source: str = "probs") -> np.ndarray:
  """``labels`` ``(N,)`` as int64, checked to be integral class indices in ``[0, C)``.

  Args:
    labels: ``(N,)`` integer (or integral float) class indices.
    num_examples: ``N``, the number of rows of the predictions.
    num_classes: ``C``, the number of classes of the predictions.
    source: name of the predictions argument, quoted in the messages.

  Raises:
    ValueError: naming ``labels`` when not 1-D of length ``N``, not integral,
      boolean, or out of ``[0, C)``.
  """
  y = np.asarray(labels)
  if y.ndim != 1:
    raise ValueError(f"labels must be 1-D (N,) class indices; got shape {y.shape}.")
  if y.shape[0] != num_examples:
    raise ValueError(f"labels must have length N = {num_examples} (rows of {source}); got length {y.shape[0]}.")
  if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
    raise ValueError(f"labels must be integers; got dtype {y.dtype}.")
  if np.issubdtype(y.dtype, np.floating):
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
      raise ValueError("labels must be integers; got non-integral values.")
  y = y.astype(np.int64)
  if np.any(y < 0) or np.any(y >= num_classes):
    raise ValueError(
        f"labels must be in [0, {num_classes}) (C = {num_classes} classes of {source});"
        f" got values in [{y.min()}, {y.max()}]."
    )
  return y


def _check_classification(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``probs`` ``(N, C)`` and ``labels`` ``(N,)``; returns float64 / int64 copies."""
  p = as_probs(probs)
  return p, as_labels(labels, *p.shape)


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


def predictive_entropy(probs: Any) -> np.ndarray:
  """Entropy of each predictive distribution, ``H_n = -sum_c p_nc log p_nc`` in nats.

  ``0 log 0 = 0``, so a one-hot row has entropy 0 and a uniform row over
  ``C`` classes has entropy ``log C``. The score of out-of-distribution and
  misclassification detection (Hendrycks and Gimpel, 2017, arXiv 1610.02136).

  Args:
    probs: ``(N, C)`` predicted probabilities (mode or Monte Carlo mean), rows
      summing to 1.

  Returns:
    ``(N,)`` float64 entropies in ``[0, log C]`` (nats).

  Raises:
    ValueError: naming ``probs`` when invalid.
  """
  return _entropy(as_probs(probs))


def _entropy(p: np.ndarray) -> np.ndarray:
  """:func:`predictive_entropy` of validated float64 ``p``."""
  terms = p * np.log(np.where(p > 0.0, p, 1.0))  # 0 log 0 = 0
  return np.clip(-terms.sum(axis=1), 0.0, math.log(p.shape[1]))


def auroc(scores: Any, positive: Any) -> float:
  """Area under the ROC curve of ``scores`` separating positives from negatives.

  Exact Mann-Whitney form with ties counted half:
  ``AUROC = (1 / (P Q)) sum_{i pos} sum_{j neg} ([s_i > s_j] + 0.5 [s_i == s_j])``
  for ``P`` positives and ``Q`` negatives, computed in ``O(N log N)`` from
  mid-ranks: ``AUROC = (R_pos - P (P + 1) / 2) / (P Q)`` where ``R_pos`` is the
  sum of the positives' ranks (tied scores share their mean rank). 1 means
  every positive scores above every negative, 0.5 is chance.

  Args:
    scores: ``(N,)`` finite scores, higher meaning "more likely positive".
    positive: ``(N,)`` booleans (or 0/1), True for the positive class.

  Returns:
    The AUROC in ``[0, 1]`` as a float; NaN when there are no positives or no
    negatives (the area is undefined).

  Raises:
    ValueError: naming ``scores`` or ``positive`` when not 1-D of one length,
      not finite, or (``positive``) not boolean.
  """
  s = as_float_array(scores, "scores")
  if s.ndim != 1:
    raise ValueError(f"scores must be 1-D (N,); got shape {s.shape}.")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores must be finite; got NaN or inf.")
  pos = np.asarray(positive)
  if pos.shape != s.shape:
    raise ValueError(f"positive must have the shape of scores {s.shape}; got {pos.shape}.")
  if pos.dtype != bool:
    if not np.all(np.isin(pos, (0, 1))):
      raise ValueError("positive must be booleans (or 0/1 integers); got other values.")
    pos = pos.astype(bool)
  return _auroc(s, pos)


def _auroc(s: np.ndarray, pos: np.ndarray) -> float:
  """:func:`auroc` of validated float64 ``s`` and boolean ``pos``."""
  num_pos = int(pos.sum())
  num_neg = pos.size - num_pos
  if num_pos == 0 or num_neg == 0:
    return math.nan
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  # the tie group of value j occupies ranks start_j + 1 .. start_j + counts_j; its mid-rank:
  start = np.cumsum(counts) - counts
  mid_rank = start + (counts + 1) / 2.0
  rank_sum = float(mid_rank[inverse.ravel()][pos].sum())
  return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


def brier_score(probs: Any, labels: Any) -> float:
  """Multi-class Brier score ``(1/N) sum_n sum_c (p_nc - [c == y_n])^2``.

  In ``[0, 2]``: 0 for a correct one-hot prediction, 2 for a wrong one,
  ``1 - 1/C`` for the uniform prediction (Brier, 1950).

  Args:
    probs: ``(N, C)`` predicted probabilities, rows summing to 1.
    labels: ``(N,)`` integer labels in ``[0, C)``.

  Raises:
    ValueError: naming ``probs`` or ``labels`` when invalid.
  """
  p, y = _check_classification(probs, labels)
  return _brier(p, y)


def _brier(p: np.ndarray, y: np.ndarray) -> float:
  onehot = np.zeros_like(p)
  onehot[np.arange(p.shape[0]), y] = 1.0
  return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def misclassification_auroc(probs: Any, labels: Any) -> float:
  """AUROC of the predictive entropy at flagging wrong predictions.

  Positives are the examples with ``argmax_c p_nc != y_n`` (ties to the lowest
  index, as in :func:`classification_metrics`), the score is
  :func:`predictive_entropy`, and the area is :func:`auroc` (ties count half).

  Args:
    probs: ``(N, C)`` predicted probabilities, rows summing to 1.
    labels: ``(N,)`` integer labels in ``[0, C)``.

  Returns:
    The AUROC in ``[0, 1]``; NaN when every prediction is right (or every one
    wrong).

  Raises:
    ValueError: naming ``probs`` or ``labels`` when invalid.
  """
  p, y = _check_classification(probs, labels)
  return _auroc(_entropy(p), p.argmax(axis=1) != y)


def ood_auroc(probs_in: Any, probs_out: Any) -> float:
  """AUROC of the predictive entropy at telling out-of-distribution inputs apart.

  The out-of-distribution examples are the positive class and the score is
  :func:`predictive_entropy` (Hendrycks and Gimpel, 2017, arXiv 1610.02136):
  ``AUROC = (1 / (N_in N_out)) sum_{i out} sum_{j in} ([H_i > H_j] + 0.5 [H_i == H_j])``.

  Args:
    probs_in: ``(N_in, C)`` probabilities on in-distribution test inputs.
    probs_out: ``(N_out, C)`` probabilities of the same predictive on
      out-of-distribution inputs (same ``C``).

  Returns:
    The AUROC in ``[0, 1]`` (1: every OOD input is more uncertain than every
    in-distribution input; 0.5: no better than chance).

  Raises:
    ValueError: naming ``probs_in`` or ``probs_out`` when invalid or when
      their numbers of classes differ.
  """
  p_in = as_probs(probs_in, "probs_in")
  p_out = as_probs(probs_out, "probs_out")
  if p_out.shape[1] != p_in.shape[1]:
    raise ValueError(
        f"probs_out must have the C = {p_in.shape[1]} columns of probs_in; got {p_out.shape[1]}."
    )
  scores = np.concatenate([_entropy(p_in), _entropy(p_out)])
  positive = np.concatenate([np.zeros(p_in.shape[0], bool), np.ones(p_out.shape[0], bool)])
  return _auroc(scores, positive)


def uncertainty_metrics(probs: Any, labels: Any) -> dict[str, float]:
  """Brier score, mean predictive entropy and misclassification AUROC in one pass.

  ``brier`` from :func:`brier_score`, ``entropy = (1/N) sum_n H_n`` (nats)
  from :func:`predictive_entropy`, ``misclassification_auroc`` from
  :func:`misclassification_auroc` (NaN when every prediction is right).

  Args:
    probs: ``(N, C)`` predicted probabilities, rows summing to 1.
    labels: ``(N,)`` integer labels in ``[0, C)``.

  Returns:
    ``{"brier": float, "entropy": float, "misclassification_auroc": float}``.

  Raises:
    ValueError: naming ``probs`` or ``labels`` when invalid.
  """
  p, y = _check_classification(probs, labels)
  entropy = _entropy(p)
  return {
      "brier": _brier(p, y),
      "entropy": float(entropy.mean()),
      "misclassification_auroc": _auroc(entropy, p.argmax(axis=1) != y),
  }


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
