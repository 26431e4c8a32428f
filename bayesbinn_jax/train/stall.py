"""A note for a run that has not started to learn: the loss after the first epoch is still
at or above ln(number of classes), the loss of a uniform guess (issue 30).

With BayesBiNN this is, most often, a temperature the other settings do not suit: at
tau >= 1e-2 the paper's lr = 1e-4 (with lambda_init = 10, train_set_scale = 1) leaves
every weight at its initial sign (docs/temperature.md). The note names the settings
that fall short of :func:`bayesbinn_jax.optim.temperature.recipe` and gives the
recipe's values.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from bayesbinn_jax.optim.temperature import TRAIN_SET_SIZE, recipe

MIN_STEPS = 5
"""A first epoch of fewer steps (two moons: 1) says little yet: no note."""

RELATIVE_TOLERANCE = 0.05
"""A setting within 5% of the recipe's value counts as the recipe's."""


def _differs(value: Any, target: float) -> bool:
  return not (isinstance(value, (int, float)) and abs(value - target) <= RELATIVE_TOLERANCE * abs(target))


def stalled_training_note(
    train_loss: float, num_classes: int, optimizer: str, config: Mapping[str, Any],
    train_set_size: int = TRAIN_SET_SIZE, steps: int = MIN_STEPS,
) -> str | None:
  """The note for a run whose mean training loss after its first epoch is >= ln(num_classes).

  Args:
    train_loss: the mean training loss of the first epoch (cross-entropy, nats).
    num_classes: the number of classes (the loss of a uniform guess is ln of it).
    optimizer: the optimizer's name ("bayesbinn", "ste", ...).
    config: the run's settings; BayesBiNN's note reads ``temperature``,
      ``lambda_init``, ``lr`` and ``train_set_scale``, the others' ``lr`` when present.
    train_set_size: N, the training examples (the recipe keeps lr * train_set_scale * N).
    steps: the steps of the first epoch; below MIN_STEPS there is no note.

  Returns:
    One sentence naming the likely cause (temperature, lambda_init, learning rate)
    and, for BayesBiNN, the recipe's values for the run's temperature; None when
    the loss is below ln(num_classes), is not finite, there are fewer than two
    classes, or the epoch had fewer than MIN_STEPS steps.
  """
  if (num_classes < 2 or steps < MIN_STEPS or not math.isfinite(train_loss)
      or train_loss < math.log(num_classes)):
    return None
  head = (f"the training loss after the first epoch, {train_loss:.3f}, is not below "
          f"ln({num_classes}) = {math.log(num_classes):.3f}, the loss of a uniform guess: "
          "the network has not started to learn.")
  if optimizer != "bayesbinn":
    lr = config.get("lr")
    return head + (f" Likely cause: the learning rate (lr={lr:g})." if isinstance(lr, (int, float))
                   else " Likely cause: the optimizer's step size.")
  tau = config.get("temperature")
  if not isinstance(tau, (int, float)) or not tau > 0:
    return head
  good = recipe(tau, train_set_size=train_set_size)
  lambda_init, lr, scale = config.get("lambda_init"), config.get("lr"), config.get("train_set_scale", 1)
  causes = []
  if _differs(lambda_init, good["lambda_init"]):
    causes.append(f"lambda_init={lambda_init:g} (recipe {good['lambda_init']:.4g})")
  if isinstance(lr, (int, float)) and lr < (1 - RELATIVE_TOLERANCE) * good["lr"]:
    causes.append(f"lr={lr:g} (recipe {good['lr']:.4g})")
  if isinstance(scale, (int, float)) and scale < (1 - RELATIVE_TOLERANCE) * good["train_set_scale"]:
    causes.append(f"train_set_scale={scale:g} (recipe {good['train_set_scale']})")
  if not causes:
    return head + (f" The temperature {tau:g}, lambda_init, lr and train_set_scale follow the recipe; "
                   "check the data and the labels.")
  return head + (f" Likely cause: temperature {tau:g} with {', '.join(causes)}: the lambda steps "
                 "lr*N*s*g are too short to carry lambda across the band |lambda| < 7.9 where float32 "
                 "leaves them no scale s, so no weight changes sign (docs/temperature.md). The recipe "
                 f"for temperature {tau:g}: lambda_init={good['lambda_init']:.4g}, lr={good['lr']:.4g}, "
                 f"train_set_scale={good['train_set_scale']}.")
