"""Helpers shared by the optimizer tests: stepping a transform, two-moons training.

Imported as ``from optim_helpers import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax


def apply_sequence(tx, params, grads_seq, *, jit, state=None):
  """Runs ``tx`` along ``grads_seq``, eager or jitted.

  Starts from ``state``, or ``tx.init(params)`` when it is None, and returns
  the ``(params, state)`` after every step.
  """
  if state is None:
    state = tx.init(params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  if jit:
    step = jax.jit(step)
  history = []
  for grads in grads_seq:
    params, state = step(params, state, grads)
    history.append((params, state))
  return history


@functools.cache
def two_moons_data():
  """The training inputs and integer labels of ``two_moons(seed=0)``."""
  from bayesbinn_jax.data import two_moons  # pylint: disable=g-import-not-at-top

  moons = two_moons(seed=0)
  return moons.x_train, moons.y_train


def two_moons_mlp(quantizer):
  """A two-class ``ToyMLP(hidden=(64, 64))`` and its params from PRNGKey(0)."""
  from bayesbinn_jax.nn import ToyMLP  # pylint: disable=g-import-not-at-top

  x, _ = two_moons_data()
  model = ToyMLP(hidden=(64, 64), outputs=2, quantizer=quantizer)
  return model, model.init(jax.random.PRNGKey(0), x, train=False)["params"]


def train_two_moons(model, tx, params, opt_state=None, *, steps=300, record=None):
  """Full-batch softmax cross-entropy on the two moons: one jitted ``lax.scan``.

  Starts from ``opt_state``, or ``tx.init(params)`` when it is None. Returns
  the final ``(params, opt_state)`` and ``record(opt_state)`` after every step
  (stacked by the scan; None without ``record``).
  """
  x, y = two_moons_data()
  if opt_state is None:
    opt_state = tx.init(params)

  def loss_fn(params):
    logits = model.apply({"params": params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train(params, opt_state):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      recorded = None if record is None else record(opt_state)
      return (optax.apply_updates(params, updates), opt_state), recorded

    return jax.lax.scan(step, (params, opt_state), None, length=steps)

  (params, opt_state), records = train(params, opt_state)
  return params, opt_state, records


def two_moons_accuracy(model, params):
  """The accuracy of ``model`` (in eval mode) with ``params`` on the two moons."""
  x, y = two_moons_data()
  logits = model.apply({"params": params}, x, train=False)
  return float(np.mean(np.asarray(logits).argmax(-1) == y))
