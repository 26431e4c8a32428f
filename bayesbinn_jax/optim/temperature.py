"""BayesBiNN settings that train at a given temperature: lambda_init, lr and train_set_scale.

The paper's MNIST settings (lr 1e-4, lambda_init 10) train at tau = 1e-10 and stall
at tau >= 1e-4 (docs/temperature.md, measured by benchmarks/temperature_scale.py).
Why, in three facts about s = (1 - w^2 + 1e-10) / tau / (1 - mu^2 + 1e-10):

1. float32 ``tanh`` returns exactly +-1 from |x| ~ 7.9 (XLA; 9.0 correctly rounded):
   for |lambda| >= LAMBDA_SATURATED, 1 - mu^2 = 0, and wherever the sample is
   saturated too (|lambda + delta| >= 7.9 tau) s = 1e-10 / tau / 1e-10 = 1/tau, set by
   the guards alone: a dense, deterministic step lr N g / tau ("guard step").
2. Inside, |lambda| < LAMBDA_SATURATED, a saturated sample gives
   s = 1e-10 / (tau (1 - mu^2)), about 0; only an unsaturated one (a share
   p = UNSATURATED_WIDTH * tau * (1 - mu^2) of the draws) gives s ~ 1 / p. E[s] ~ 1:
   lambda moves by lr N dL/dmu per step on average, in rare kicks ("Bayes step").
3. The band |lambda| < LAMBDA_SATURATED is a trap for guard steps: a weight whose
   guard step is shorter than the band, lr N |g| / tau < 2 LAMBDA_SATURATED, lands in
   it and then moves only by Bayes steps, 1e4 times slower with the paper's lr.

Recipe (for the paper's lr_0 = 1e-4, N = 54,000 and gradients |g| >= GRADIENT of the
MNIST MLP at initialisation): every weight's guard step must jump the trap,

    lr * train_set_scale * N |g| / tau >= 2 LAMBDA_SATURATED,
    i.e. lr * train_set_scale >= lr_0 tau / TAU_PAPER,
    TAU_PAPER = lr_0 N GRADIENT / (2 LAMBDA_SATURATED) = 7.2e-8,

below which the paper's settings suffice (its own sweep, 500 epochs: 98.86% at 1e-10,
98.82% at 1e-8, 98.41% at 1e-7, 98.01% at 1e-6, 93.67% at 1e-5). The recipe keeps the
paper's lr, whose 1/lr = 1e4 steps of memory the guard dynamics need (with lr = 1e-2 and
train_set_scale 140 at tau = 1e-2: 93.6% after one epoch, against 96.8% at tau = 1e-10;
with lr = 0.1 the loss rose again after 40 steps, measured), and puts the whole factor
into train_set_scale (N): ceil(tau / TAU_PAPER), 1,394 at tau = 1e-4, 139,330 at 1e-2.
The guard step lr_0 N train_set_scale g / tau is then that of tau = TAU_PAPER at every
temperature, and lambda_init stays 10 (>= LAMBDA_SATURATED: the first step is a guard
step). This trains (2 epochs: 96.9% after the first at tau = 1e-4 and 1e-2, measured),
but a train_set_scale > 1 is a colder posterior: like the paper's tau = 1e-10 it is in
effect a point mass.

:func:`bayes_regime` gives the other choice: the honest posterior (train_set_scale 1),
where the Bayes steps carry the learning. They need p / lr >= 1 (at least one
unsaturated draw per weight in the 1/lr steps lambda remembers), so lr = LR_MAX and
lambda_init the largest lambda with p >= lr: 1 - tanh^2(lambda_init) =
lr / (UNSATURATED_WIDTH tau) (tau = 1e-2: 1.69; 1e-1: 2.87; 1: 4.03), possible from
TAU_BAYES = LR_MAX / UNSATURATED_WIDTH = 1.3e-3. The posterior is then broad
(lambda* = -N dL/dmu, of order 1 for most of the 10.5 M weights with N = 54,000): at
tau = 1e-2 the MNIST MLP reaches 85.1% in 2 epochs (docs/temperature.md).
"""

from __future__ import annotations

import math
from typing import Any, Collection, Mapping

LAMBDA_SATURATED = 7.9
"""|lambda| from which float32 tanh(lambda) is exactly +-1 under XLA (7.905; 9.01 correctly
rounded): there 1 - mu^2 = 0 and the guards set s = 1/tau for saturated samples."""

UNSATURATED_WIDTH = 7.9
"""A relaxed sample tanh(x / tau) is below 1 in float32 for |x| < 7.9 tau, so the share of
unsaturated draws is about 7.9 tau (1 - mu^2) (the density of the logistic noise delta
at -lambda is (1 - mu^2) / 2)."""

PAPER_LR = 1e-4
"""The paper's MNIST learning rate, lr_0."""

PAPER_LAMBDA_INIT = 10.0
"""The paper's lambda_init."""

TRAIN_SET_SIZE = 54_000
"""N of the MNIST preset (60,000 less the 10% validation split)."""

GRADIENT = 2.1e-7
"""The 1% quantile of |g| over the MNIST MLP's weights in its first 100 steps at
tau = 1e-4 (benchmarks/results/temperature_scale.json): 99% of the weights have
larger gradients."""

TAU_PAPER = PAPER_LR * TRAIN_SET_SIZE * GRADIENT / (2 * LAMBDA_SATURATED)
"""Below this temperature (7.2e-8) the paper's settings jump the trap."""

LR_MAX = 1e-2
"""The learning rate of :func:`bayes_regime`: lambda forgets its start in 1/lr = 100 steps."""

TAU_BAYES = LR_MAX / UNSATURATED_WIDTH
"""From this temperature (1.27e-3) on, p >= LR_MAX is possible: the Bayes regime can learn."""


def needed_product(temperature: float, train_set_size: int = TRAIN_SET_SIZE) -> float:
  """lr * train_set_scale that makes the guard step jump the trap for |g| >= GRADIENT:
  lr_0 tau / TAU_PAPER x TRAIN_SET_SIZE / N (the guard step is lr N' |g| / tau, N' = N x scale)."""
  _check_temperature(temperature)
  if not (isinstance(train_set_size, int) and train_set_size >= 1):
    raise ValueError(f"train_set_size must be an integer >= 1; got {train_set_size!r}.")
  return PAPER_LR * temperature / TAU_PAPER * TRAIN_SET_SIZE / train_set_size


def recipe_lr(temperature: float, lr: float = PAPER_LR, train_set_size: int = TRAIN_SET_SIZE) -> float:
  """The learning rate of :func:`recipe`: the preset's ``lr`` (the paper's 1e-4 on MNIST),
  whose memory of 1/lr steps the guard dynamics need; ``temperature`` and
  ``train_set_size`` are checked."""
  needed_product(temperature, train_set_size)
  return lr


def recipe_train_set_scale(temperature: float, lr: float = PAPER_LR,
                           train_set_size: int = TRAIN_SET_SIZE) -> int:
  """The train_set_scale of :func:`recipe`: :func:`needed_product` over the learning rate,
  rounded up (1 where the learning rate suffices)."""
  return _scale_for(temperature, recipe_lr(temperature, lr, train_set_size), train_set_size)


def _scale_for(temperature: float, lr: float, train_set_size: int = TRAIN_SET_SIZE) -> int:
  """The smallest train_set_scale >= 1 with lr * train_set_scale >= needed_product."""
  need = needed_product(temperature, train_set_size) / lr
  return max(1, math.ceil(need * (1 - 1e-12)))


def recipe(temperature: float, lr: float = PAPER_LR, train_set_size: int = TRAIN_SET_SIZE) -> dict[str, Any]:
  """BayesBiNN settings that train at ``temperature`` (guard steps that jump the trap; see the
  module docstring).

  Args:
    temperature: tau > 0.
    lr: the preset's learning rate (the paper's 1e-4 on MNIST), used where it suffices.
    train_set_size: N, the training examples (the MNIST preset's 54,000 by default); the
      recipe keeps lr * train_set_scale * N.

  Returns:
    ``{"lambda_init": 10.0, "lr": lr, "lr_scale": 1.0, "train_set_scale": ...}``.

  Raises:
    ValueError: a temperature or lr that is not a finite number > 0, a train_set_size < 1.
  """
  _check_lr(lr)
  step = recipe_lr(temperature, lr, train_set_size)
  return {"lambda_init": PAPER_LAMBDA_INIT, "lr": step, "lr_scale": step / lr,
          "train_set_scale": _scale_for(temperature, step, train_set_size)}


def bayes_lambda_init(temperature: float) -> float:
  """lambda_init of :func:`bayes_regime`: artanh(sqrt(1 - LR_MAX / (UNSATURATED_WIDTH tau))),
  the paper's 10 below TAU_BAYES (where no lambda gives p >= LR_MAX), at most 10."""
  _check_temperature(temperature)
  share = LR_MAX / (UNSATURATED_WIDTH * temperature)  # the 1 - mu^2 that makes p = lr
  if share >= 1:
    return PAPER_LAMBDA_INIT
  return min(PAPER_LAMBDA_INIT, math.atanh(math.sqrt(1.0 - share)))


def bayes_regime(temperature: float) -> dict[str, float]:
  """Settings for the honest posterior at ``temperature`` >= TAU_BAYES (train_set_scale 1):
  ``{"lambda_init": bayes_lambda_init(tau), "lr": LR_MAX, "train_set_scale": 1}``. It learns
  at tau >= TAU_BAYES, but to a broad posterior (85.1% at tau = 1e-2 in 2 epochs, MNIST MLP).

  Raises:
    ValueError: a temperature below TAU_BAYES (no lambda gives p >= LR_MAX there) or not > 0.
  """
  _check_temperature(temperature)
  if temperature < TAU_BAYES:
    raise ValueError(f"temperature must be >= {TAU_BAYES:.3g} for the Bayes regime; got {temperature!r}.")
  return {"lambda_init": bayes_lambda_init(temperature), "lr": LR_MAX, "train_set_scale": 1}


def _check_lr(lr: float) -> None:
  if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
    raise ValueError(f"lr must be a finite number > 0; got {lr!r}.")


def _check_temperature(temperature: float) -> None:
  if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
    raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")


RECIPE_KEYS = ("lambda_init", "lr", "train_set_scale")
"""The settings :func:`apply_recipe` fills in."""


def apply_recipe(settings: Mapping[str, Any], given: Collection[str],
                 train_set_size: int = TRAIN_SET_SIZE) -> dict[str, Any]:
  """``settings`` (a flat config with ``temperature``, ``lr``, ``lambda_init``,
  ``train_set_scale``) with the recipe for its temperature, when ``temperature`` is among the
  ``given`` keys (set by the user): each of :data:`RECIPE_KEYS` not given itself takes the
  value of ``recipe(settings["temperature"], lr=settings["lr"], train_set_size=N)``, except
  that with a given lr the train_set_scale is the one that lr needs. Otherwise ``settings``
  unchanged (a copy)."""
  result = dict(settings)
  if "temperature" not in given:
    return result
  good = recipe(result["temperature"], lr=result["lr"], train_set_size=train_set_size)
  for key in RECIPE_KEYS:
    if key not in given:
      result[key] = good[key]
  if "lr" in given and "train_set_scale" not in given:
    result["train_set_scale"] = _scale_for(result["temperature"], result["lr"], train_set_size)
  return result
