"""Learning-rate schedules stepped once per epoch, as in the paper's PyTorch code.

Each factory returns an optax schedule of the optimizer step count. The epoch is
``(count // steps_per_epoch) % epochs``: the schedule is constant within an
epoch and, in continual learning, restarts with every task of ``epochs``
epochs (the released code resets the learning rate per task).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "geometric", "steps")


def epoch_schedule(
    kind: str,
    learning_rate: float,
    *,
    epochs: int,
    steps_per_epoch: int,
    end_learning_rate: float = 1e-16,
    milestones: Sequence[int] = (),
    decay: float = 0.1,
) -> optax.Schedule:
  """A per-epoch learning-rate schedule.

  - ``constant``: lr.
  - ``cosine``: lr_end + (lr - lr_end) (1 + cos(pi e / E)) / 2 (PyTorch's
    CosineAnnealingLR with T_max = E epochs, eta_min = lr_end).
  - ``geometric``: lr (lr_end / lr)^(e / (E - 1)), from lr at the first epoch
    to lr_end at the last.
  - ``steps``: lr * decay^(number of milestones <= e) (MultiStepLR).
  """
  if kind not in SCHEDULES:
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}; got {kind!r}.")
  if epochs < 1 or steps_per_epoch < 1:
    raise ValueError(f"epochs and steps_per_epoch must be >= 1; got {epochs}, {steps_per_epoch}.")

  def epoch_of(count: jnp.ndarray) -> jnp.ndarray:
    return ((jnp.asarray(count) // steps_per_epoch) % epochs).astype(jnp.float32)

  if kind == "constant":
    return lambda count: jnp.asarray(learning_rate, jnp.float32)
  if kind == "cosine":
    return lambda count: end_learning_rate + (learning_rate - end_learning_rate) * 0.5 * (
        1 + jnp.cos(math.pi * epoch_of(count) / epochs))
  if kind == "geometric":
    ratio = math.log(end_learning_rate / learning_rate) / max(epochs - 1, 1)
    return lambda count: learning_rate * jnp.exp(ratio * epoch_of(count))
  boundaries = jnp.asarray(sorted(milestones), jnp.float32)
  return lambda count: learning_rate * decay ** jnp.sum(epoch_of(count) >= boundaries)
