"""Tests for bayesbinn_jax.train.metrics: hand-computed examples, limiting
predictors, calibration of a calibrated synthetic predictor, input checks and
properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bayesbinn_jax.train.metrics import (
    ReliabilityBins,
    auroc,
    brier_score,
    classification_metrics,
    ece_from_bins,
    misclassification_auroc,
    ood_auroc,
    predictive_entropy,
    regression_metrics,
    reliability_bins,
    uncertainty_metrics,
)

# Four examples, two classes. Confidence = max prob, prediction = argmax.
#   n  probs        y  conf  pred  correct
#   1  [0.9, 0.1]   0  0.9   0     1
#   2  [0.3, 0.7]   0  0.7   1     0
#   3  [0.6, 0.4]   0  0.6   0     1     (0.6 sits on an edge for M = 5 and M = 15)
#   4  [0.2, 0.8]   1  0.8   1     1     (0.8 sits on an edge for M = 5 and M = 15)
FOUR_PROBS = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
FOUR_LABELS = np.array([0, 0, 0, 1])


def test_four_examples_five_bins_by_hand():
  # M = 5, bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]; an edge goes to the lower bin.
  #   bin 2 (.4,.6]: n3            count 1, conf .6,             acc 1   -> |1 - .6|   = .4
  #   bin 3 (.6,.8]: n2, n4        count 2, conf (.7+.8)/2 = .75, acc 1/2 -> |.5 - .75| = .25
  #   bin 4 (.8,1]:  n1            count 1, conf .9,             acc 1   -> |1 - .9|   = .1
  # ECE = 1/4 * .4 + 2/4 * .25 + 1/4 * .1 = .1 + .125 + .025 = .25
  # accuracy = 3/4; nll = -(log .9 + log .3 + log .6 + log .8) / 4
  m = classification_metrics(FOUR_PROBS, FOUR_LABELS, num_bins=5)
  assert m["accuracy"] == pytest.approx(0.75)
  assert m["ece"] == pytest.approx(0.25, abs=1e-12)
  expected_nll = -(math.log(0.9) + math.log(0.3) + math.log(0.6) + math.log(0.8)) / 4
  assert m["nll"] == pytest.approx(expected_nll, rel=1e-12)
  assert set(m) == {"accuracy", "nll", "ece"}
  assert all(type(v) is float for v in m.values())

  bins = reliability_bins(FOUR_PROBS, FOUR_LABELS, num_bins=5)
  np.testing.assert_array_equal(bins.count, [0, 0, 1, 2, 1])
  np.testing.assert_allclose(bins.edges, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
  np.testing.assert_allclose(bins.confidence[2:], [0.6, 0.75, 0.9])
  np.testing.assert_allclose(bins.accuracy[2:], [1.0, 0.5, 1.0])
  assert np.all(np.isnan(bins.confidence[:2])) and np.all(np.isnan(bins.accuracy[:2]))
  assert ece_from_bins(bins) == m["ece"]


def test_four_examples_default_fifteen_bins_by_hand():
  # M = 15, edges k/15: .6 = 9/15 -> bin 8, .7 in (10/15, 11/15] -> bin 10,
  # .8 = 12/15 -> bin 11, .9 in (13/15, 14/15] -> bin 13: one example per bin.
  # ECE = (|1-.6| + |0-.7| + |1-.8| + |1-.9|) / 4 = (.4 + .7 + .2 + .1) / 4 = .35
  m = classification_metrics(FOUR_PROBS, FOUR_LABELS)
  assert m["ece"] == pytest.approx(0.35, abs=1e-12)
  bins = reliability_bins(FOUR_PROBS, FOUR_LABELS)
  assert bins.count.shape == (15,) and bins.edges.shape == (16,)
  np.testing.assert_array_equal(np.nonzero(bins.count)[0], [8, 10, 11, 13])


def test_single_bin_ece_is_gap_of_means():
  # M = 1: ECE = |mean accuracy - mean confidence| = |3/4 - (.9+.7+.6+.8)/4| = |.75 - .75| = 0
  assert classification_metrics(FOUR_PROBS, FOUR_LABELS, num_bins=1)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_perfect_one_hot_predictor():
  labels = np.array([2, 0, 1, 1, 2])
  probs = np.eye(3)[labels]
  m = classification_metrics(probs, labels)
  # accuracy 1, nll = -log 1 = 0, all confidence 1 in the top bin with accuracy 1 -> ece 0
  assert m == {"accuracy": 1.0, "nll": 0.0, "ece": 0.0}


def test_confidently_wrong_one_hot_predictor_uses_floor():
  labels = np.array([0, 1, 2, 0])
  probs = np.eye(3)[(labels + 1) % 3]
  m = classification_metrics(probs, labels)
  # p(y) = 0 is clipped at 1e-12: nll = -log 1e-12 = 12 log 10 ~ 27.63; conf 1, acc 0 -> ece 1
  assert m["accuracy"] == 0.0
  assert m["nll"] == pytest.approx(12 * math.log(10), rel=1e-12)
  assert m["ece"] == pytest.approx(1.0)


def test_uniform_predictor():
  c, n = 4, 40
  labels = np.arange(n) % c
  probs = np.full((n, c), 1.0 / c)
  m = classification_metrics(probs, labels)
  # argmax ties go to class 0, which is 1/4 of the labels: accuracy .25;
  # nll = log 4; every confidence is .25 with accuracy .25 in one bin -> ece 0
  assert m["accuracy"] == pytest.approx(0.25)
  assert m["nll"] == pytest.approx(math.log(4))
  assert m["ece"] == pytest.approx(0.0, abs=1e-12)


def test_calibrated_synthetic_predictor_has_small_ece():
  rng = np.random.default_rng(0)
  n, c = 200_000, 3
  probs = rng.dirichlet(np.full(c, 0.7), size=n)
  # labels drawn from the predicted distribution: calibrated by construction
  cumulative = probs.cumsum(axis=1)
  labels = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), c - 1)
  m = classification_metrics(probs, labels)
  assert m["ece"] < 0.01
  # a miscalibrated (over-confident) version of the same predictor is caught
  sharp = probs**3 / (probs**3).sum(axis=1, keepdims=True)
  assert classification_metrics(sharp, labels)["ece"] > 0.05


def test_accepts_float32_and_integral_float_labels():
  # float32 0.6 is 0.60000002 > 3/5, so use M = 4 where no confidence is near an edge:
  #   bin (.5,.75]: n2 (.7, wrong), n3 (.6, right): conf .65, acc .5 -> gap .15
  #   bin (.75,1]:  n1 (.9), n4 (.8), both right:  conf .85, acc 1  -> gap .15
  # ECE = 2/4 * .15 + 2/4 * .15 = .15
  m32 = classification_metrics(FOUR_PROBS.astype(np.float32), FOUR_LABELS.astype(np.float32), num_bins=4)
  assert m32["ece"] == pytest.approx(0.15, abs=1e-6)
  assert m32["accuracy"] == 0.75


@pytest.mark.parametrize(
    "probs, labels, kwargs, name",
    [
        (np.array([0.5, 0.5]), np.array([0]), {}, "probs"),  # 1-D
        (np.zeros((0, 2)), np.zeros(0, int), {}, "probs"),  # N = 0
        (np.array([[np.nan, 1.0]]), np.array([0]), {}, "probs"),
        (np.array([[2.0, -1.0]]), np.array([0]), {}, "probs"),  # logits, not probs
        (np.array([[0.5, 0.2]]), np.array([0]), {}, "probs"),  # row sums to 0.7
        (FOUR_PROBS, FOUR_LABELS[:3], {}, "labels"),  # length mismatch
        (FOUR_PROBS, FOUR_LABELS[:, None], {}, "labels"),  # 2-D
        (FOUR_PROBS, np.array([0, 1, 2, 0]), {}, "labels"),  # 2 >= C
        (FOUR_PROBS, np.array([0, -1, 1, 0]), {}, "labels"),
        (FOUR_PROBS, np.array([0.0, 0.5, 1.0, 0.0]), {}, "labels"),  # not integral
        (FOUR_PROBS, np.array([True, False, True, False]), {}, "labels"),
        (FOUR_PROBS, FOUR_LABELS, {"num_bins": 0}, "num_bins"),
        (FOUR_PROBS, FOUR_LABELS, {"num_bins": 2.5}, "num_bins"),
    ],
)
def test_bad_classification_inputs_name_the_argument(probs, labels, kwargs, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    classification_metrics(probs, labels, **kwargs)
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    reliability_bins(probs, labels, **kwargs)


def test_ece_from_bins_rejects_empty():
  empty = ReliabilityBins(np.linspace(0, 1, 3), np.full(2, np.nan), np.full(2, np.nan), np.zeros(2, np.int64))
  with pytest.raises(ValueError, match="^bins"):
    ece_from_bins(empty)


@st.composite
def _probs_and_labels(draw):
  n = draw(st.integers(1, 30))
  c = draw(st.integers(1, 5))
  raw = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.0, 1.0)))
  raw = raw + 1e-3
  probs = raw / raw.sum(axis=1, keepdims=True)
  labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
  num_bins = draw(st.integers(1, 20))
  return probs, labels, num_bins


@settings(max_examples=150, deadline=None)
@given(_probs_and_labels())
def test_metric_ranges_property(case):
  probs, labels, num_bins = case
  m = classification_metrics(probs, labels, num_bins=num_bins)
  assert 0.0 <= m["accuracy"] <= 1.0
  assert 0.0 <= m["ece"] <= 1.0
  assert 0.0 <= m["nll"] <= -math.log(1e-12) + 1e-9
  bins = reliability_bins(probs, labels, num_bins)
  assert bins.count.sum() == probs.shape[0]
  # ECE is at least the single-bin gap |accuracy - mean confidence| (triangle inequality).
  single = abs(m["accuracy"] - probs.max(axis=1).mean())
  assert m["ece"] >= single - 1e-12


def _binary_entropy(p: float) -> float:
  return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _auroc_by_pairs(scores, positive) -> float:
  """Independent O(n^2) transcription: count every (positive, negative) pair, ties half."""
  pos = [s for s, is_pos in zip(scores, positive) if is_pos]
  neg = [s for s, is_pos in zip(scores, positive) if not is_pos]
  wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
  return wins / (len(pos) * len(neg))


def test_predictive_entropy_by_hand():
  probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]])
  # 0 log 0 = 0; H([.5, .5]) = log 2; uniform over 3: log 3; H([.5, .25, .25]) = .5 log 2 + 2 * .25 log 4 = 1.5 log 2
  expected = [0.0, math.log(2), math.log(3), 1.5 * math.log(2)]
  np.testing.assert_allclose(predictive_entropy(probs), expected, rtol=1e-12, atol=0)
  assert predictive_entropy(np.ones((2, 1))).tolist() == [0.0, 0.0]  # one class: no uncertainty


def test_brier_by_hand():
  # n1 y=0: (.9-1)^2 + .1^2 = .02;  n2 y=0: (.3-1)^2 + .7^2 = .98
  # n3 y=0: (.6-1)^2 + .4^2 = .32;  n4 y=1: .2^2 + (.8-1)^2 = .08  -> mean 1.40 / 4 = .35
  assert brier_score(FOUR_PROBS, FOUR_LABELS) == pytest.approx(0.35, abs=1e-12)
  labels = np.array([2, 0, 1])
  assert brier_score(np.eye(3)[labels], labels) == 0.0  # right and certain
  assert brier_score(np.eye(3)[(labels + 1) % 3], labels) == 2.0  # wrong and certain
  assert brier_score(np.full((3, 4), 0.25), [0, 1, 2]) == pytest.approx(0.75)  # uniform: 1 - 1/C


@pytest.mark.parametrize(
    "scores, positive, expected",
    [
        # every positive above every negative
        ([0.1, 0.4, 0.35, 0.8], [False, True, False, True], 1.0),
        # positives .35 and .8 vs negatives .1 and .4: (1 + 0) + (1 + 1) = 3 of 4 pairs
        ([0.1, 0.4, 0.35, 0.8], [False, False, True, True], 0.75),
        # positives 1 and 0 vs negatives 1 and 2: (.5 + 0) + (0 + 0) = .5 of 4 pairs
        ([1.0, 1.0, 2.0, 0.0], [True, False, False, True], 0.125),
        # all scores equal: every pair a tie
        ([3.0, 3.0, 3.0], [1, 0, 1], 0.5),
        # reversed order
        ([0.0, 1.0, 2.0], [True, False, False], 0.0),
    ],
)
def test_auroc_by_hand(scores, positive, expected):
  assert auroc(scores, positive) == expected
  assert _auroc_by_pairs(scores, positive) == expected


def test_auroc_undefined_without_both_classes_is_nan():
  assert math.isnan(auroc([0.1, 0.2], [True, True]))
  assert math.isnan(auroc([0.1, 0.2], [0, 0]))


def test_misclassification_auroc_by_hand():
  # FOUR_PROBS: only n2 is wrong. Entropies H(.9) = .325, H(.7) = .611 (n2), H(.6) = .673, H(.8) = .500:
  # n2 beats n1 and n4, loses to n3 -> AUROC = 2/3
  entropies = [_binary_entropy(p) for p in (0.9, 0.7, 0.6, 0.8)]
  assert entropies[2] > entropies[1] > entropies[3] > entropies[0]
  assert misclassification_auroc(FOUR_PROBS, FOUR_LABELS) == pytest.approx(2 / 3, abs=1e-15)
  labels = np.array([0, 1])
  assert math.isnan(misclassification_auroc(np.eye(2)[labels], labels))  # no mistakes


def test_ood_auroc_by_hand():
  # in-distribution entropies 0, H(.9); OOD entropies log 2, H(.9):
  # log 2 beats both (2), H(.9) beats 0 (1) and ties H(.9) (.5) -> 3.5 / 4
  probs_in = np.array([[1.0, 0.0], [0.9, 0.1]])
  probs_out = np.array([[0.5, 0.5], [0.1, 0.9]])
  assert ood_auroc(probs_in, probs_out) == 0.875
  assert ood_auroc(probs_out, probs_in) == 0.125  # roles swapped: 1 - AUROC
  # a confident in-distribution predictor and uniform OOD predictions: perfect separation
  assert ood_auroc(np.eye(3), np.full((5, 3), 1 / 3)) == 1.0


def test_uncertainty_metrics_combines_the_parts():
  m = uncertainty_metrics(FOUR_PROBS, FOUR_LABELS)
  assert set(m) == {"brier", "entropy", "misclassification_auroc"}
  assert all(type(v) is float for v in m.values())
  assert m["brier"] == pytest.approx(0.35, abs=1e-12)
  assert m["entropy"] == pytest.approx(np.mean([_binary_entropy(p) for p in (0.9, 0.7, 0.6, 0.8)]), rel=1e-12)
  assert m["misclassification_auroc"] == pytest.approx(2 / 3, abs=1e-15)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(np.int64, st.integers(2, 40), elements=st.integers(0, 4)),  # few values: many ties
    st.data(),
)
def test_auroc_matches_pair_count_property(scores, data):
  positive = data.draw(hnp.arrays(bool, scores.shape))
  value = auroc(scores, positive)
  if positive.all() or not positive.any():
    assert math.isnan(value)
    return
  assert value == pytest.approx(_auroc_by_pairs(scores.tolist(), positive.tolist()), abs=1e-12)
  assert auroc(-scores, positive) == pytest.approx(1.0 - value, abs=1e-12)


def test_auroc_matches_pair_count_on_large_continuous_scores():
  rng = np.random.default_rng(0)
  positive = rng.random(600) < 0.3
  scores = np.round(rng.normal(size=600) + positive, 1)  # rounded: ties across classes
  assert auroc(scores, positive) == pytest.approx(_auroc_by_pairs(scores, positive), abs=1e-12)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: auroc(np.zeros((2, 2)), np.zeros((2, 2), bool)), "scores"),
        (lambda: auroc([0.0, np.nan], [True, False]), "scores"),
        (lambda: auroc(["a", "b"], [True, False]), "scores"),
        (lambda: auroc([0.0, 1.0], [True]), "positive"),
        (lambda: auroc([0.0, 1.0], [1, 2]), "positive"),
        (lambda: predictive_entropy([0.5, 0.5]), "probs"),
        (lambda: brier_score(FOUR_PROBS, FOUR_LABELS[:2]), "labels"),
        (lambda: misclassification_auroc(FOUR_PROBS + 1, FOUR_LABELS), "probs"),
        (lambda: uncertainty_metrics(FOUR_PROBS, [0, 1, 2, 0]), "labels"),
        (lambda: ood_auroc(np.eye(2), np.full((2, 3), 1 / 3)), "probs_out"),
        (lambda: ood_auroc(np.full((1, 2), 0.7), np.eye(2)), "probs_in"),
        (lambda: ood_auroc(np.eye(2), np.zeros((0, 2))), "probs_out"),
    ],
)
def test_bad_uncertainty_inputs_name_the_argument(call, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    call()


def test_regression_by_hand():
  # mean [0, 1], std [1, 2], targets [1, 1]: errors [1, 0]
  # rmse = sqrt((1 + 0) / 2)
  # nll = ((.5 log 2pi + 1/2) + (.5 log(2pi * 4) + 0)) / 2
  m = regression_metrics(np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([1.0, 1.0]))
  assert m["rmse"] == pytest.approx(math.sqrt(0.5))
  expected = ((0.5 * math.log(2 * math.pi) + 0.5) + 0.5 * math.log(8 * math.pi)) / 2
  assert m["nll"] == pytest.approx(expected, rel=1e-12)
  assert set(m) == {"rmse", "nll"}


def test_regression_matches_scipy_and_accepts_scalar_std_and_column_shapes():
  from scipy import stats

  rng = np.random.default_rng(1)
  mean, std, y = rng.normal(size=50), rng.uniform(0.1, 2.0, 50), rng.normal(size=50)
  m = regression_metrics(mean[:, None], std, y)
  assert m["nll"] == pytest.approx(-stats.norm.logpdf(y, mean, std).mean(), rel=1e-10)
  assert m["rmse"] == pytest.approx(np.sqrt(np.mean((mean - y) ** 2)), rel=1e-12)
  shared = regression_metrics(mean, 0.5, y)
  assert shared["nll"] == pytest.approx(-stats.norm.logpdf(y, mean, 0.5).mean(), rel=1e-10)


def test_regression_std_floor():
  # std 0 is floored to 1e-6: exact targets give nll = .5 log(2pi 1e-12), finite
  m = regression_metrics([1.0, 2.0], [0.0, 0.0], [1.0, 2.0])
  assert m["rmse"] == 0.0
  assert m["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * 1e-12))


@pytest.mark.parametrize(
    "mean, std, targets, name",
    [
        ([], [], [], "mean"),
        ([0.0, 1.0], [1.0, 1.0], [1.0], "targets"),
        ([0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0], "std"),
        ([0.0, 1.0], [1.0, -1.0], [1.0, 1.0], "std"),
        ([0.0, np.nan], [1.0, 1.0], [1.0, 1.0], "mean"),
        ([0.0, 1.0], [1.0, 1.0], [np.inf, 1.0], "targets"),
        (["a", "b"], [1.0, 1.0], [1.0, 1.0], "mean"),
    ],
)
def test_bad_regression_inputs_name_the_argument(mean, std, targets, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    regression_metrics(mean, std, targets)
