"""Samples of the BayesBiNN posterior: relaxed (to train at) and exact binary (to predict with).

The posterior over each binary weight w in {-1, +1} is a Bernoulli with natural
parameter lambda, P(w = +1) = sigmoid(2 lambda). Both samplers read the same
logistic noise, so for one key the binary sample is the tau -> 0 limit of the
relaxed one:

.. math::

  \\delta = \\tfrac12 \\log \\frac{u}{1 - u}, \\quad u \\sim U(0, 1), \\qquad
  w_\\tau = \\tanh\\big((\\lambda + \\delta) / \\tau\\big) \\xrightarrow[\\tau \\to 0]{}
  \\operatorname{sign}(\\lambda + \\delta)

and sign(lambda + delta) = +1 exactly when u > sigmoid(-2 lambda), a compare that
needs neither the log nor the tanh. At a concrete temperature at or below
:data:`SATURATED_TEMPERATURE` the relaxed sample is drawn that way: tanh((lambda +
delta) / tau) differs from +-1 only where |lambda + delta| < 9.02 tau (float32's
tanh is exactly +-1 beyond 9.02), an event of probability below 4.5 tau per
weight (the density of delta is at most 1/2), about 5e-10 per weight at the
paper's tau = 1e-10. ``tests/test_sampling.py`` measures the two forms equal on
10^6 draws at 1e-10 and 1e-8.

The samplers are jitted (``num_samples``, ``generator`` and the saturated form
static): an eager call is one compiled program per tree structure and shapes
and gives the bits it gives inside a jitted step.

References:
  Meng, Bachmann and Khan, "Training Binary Neural Networks using the Bayesian
  Learning Rule", ICML 2020, eq. (8)-(9) (the relaxed sample) and Section 3.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from bayesbinn_jax import _checks
from bayesbinn_jax.optim.noise import check_generator, counter_uniform, logistic

PyTree = Any

SATURATED_TEMPERATURE = 1e-8
"""At or below this (concrete) temperature the relaxed sample is drawn as its tau -> 0 limit."""


def is_saturated(temperature: Any) -> bool:
  """True when ``temperature`` is a concrete number <= :data:`SATURATED_TEMPERATURE`.

  A traced temperature (injected by ``optax.inject_hyperparams``) is never
  saturated: its value is unknown when the step is compiled.

  >>> is_saturated(1e-10), is_saturated(1e-2)
  (True, False)
  """
  value = _checks.concrete(temperature)
  return value is not None and value <= SATURATED_TEMPERATURE


def _noise_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """Draws noise in at least float32, so that low-precision weights keep the exact law."""
  return jnp.promote_types(dtype, jnp.float32)


def _leaf_keys(lam: PyTree, key: jax.Array) -> list[jax.Array]:
  return list(jax.random.split(key, max(len(jax.tree.leaves(lam)), 1)))


def _shape(leaf: jax.Array, num_samples: int | None) -> tuple[int, ...]:
  return leaf.shape if num_samples is None else (num_samples, *leaf.shape)


def _signs(leaf: jax.Array, key: jax.Array, num_samples: int | None, generator: str) -> jax.Array:
  """sign(lambda + delta) in lambda's dtype (+1 where u > sigmoid(-2 lambda) for "counter")."""
  one = jnp.ones((), leaf.dtype)
  dtype = _noise_dtype(leaf.dtype)
  if generator == "counter":
    u = counter_uniform(key, _shape(leaf, num_samples))
    positive = u.astype(dtype) > jax.nn.sigmoid(-2 * leaf.astype(dtype))
  else:
    delta = 0.5 * logistic(key, _shape(leaf, num_samples), dtype, generator)
    positive = leaf.astype(dtype) + delta > 0
  return jnp.where(positive, one, -one)


def _relaxed(leaf: jax.Array, key: jax.Array, temperature: Any, num_samples: int | None,
             generator: str) -> jax.Array:
  dtype = _noise_dtype(leaf.dtype)
  delta = 0.5 * logistic(key, _shape(leaf, num_samples), dtype, generator)
  return jnp.tanh((leaf.astype(dtype) + delta) / jnp.asarray(temperature, dtype)).astype(leaf.dtype)


@functools.partial(jax.jit, static_argnames=("num_samples", "generator"))
def _sample_relaxed(lam: PyTree, key: jax.Array, temperature: Any, num_samples: int | None,
                    generator: str) -> PyTree:
  leaves, treedef = jax.tree.flatten(lam)
  drawn = [_relaxed(leaf, k, temperature, num_samples, generator) for leaf, k in zip(leaves, _leaf_keys(lam, key))]
  return jax.tree.unflatten(treedef, drawn)


def sample_relaxed(
    lam: PyTree,
    key: jax.Array,
    temperature: float | jax.Array = 1.0,
    num_samples: int | None = None,
    *,
    generator: str = "counter",
) -> PyTree:
  """Relaxed (Gumbel-softmax) binary sample, the weights BayesBiNN trains at.

  .. math::

    w = \\tanh((\\lambda + \\delta) / \\tau), \\quad
    \\delta = \\tfrac12 \\log(u / (1 - u)), \\quad u \\sim U(0, 1)

  drawn as its limit sign(lambda + delta) at a concrete tau <=
  :data:`SATURATED_TEMPERATURE` (see the module docstring). With
  ``num_samples=K`` every leaf gets a leading axis of size K (one network per
  Monte Carlo sample, the layout ``bayesbinn(num_samples=K)`` expects).
  Computed in at least float32, returned in lambda's dtype.

  Args:
    lam: the tree of natural parameters (``state.lam``).
    key: the PRNG key of the draw.
    temperature: tau > 0.
    num_samples: None for one network, K for K stacked.
    generator: "counter" or "threefry" (:mod:`bayesbinn_jax.optim.noise`).

  Returns:
    A tree like ``lam`` (with a leading K axis when ``num_samples=K``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> lam = {"w": jnp.array([30.0, -30.0])}
    >>> sample_relaxed(lam, jax.random.key(0), temperature=1.0)["w"]
    Array([ 1., -1.], dtype=float32)
    >>> sample_relaxed(lam, jax.random.key(0), 1.0, num_samples=3)["w"].shape
    (3, 2)
  """
  check_generator(generator)
  _checks.check_positive("temperature", temperature)  # tau <= 0 would pass as saturated
  if is_saturated(temperature):  # the tau -> 0 limit: the binary sample, bit for bit
    return _sample_binary(lam, key, num_samples, generator)
  return _sample_relaxed(lam, key, temperature, num_samples, generator)


@functools.partial(jax.jit, static_argnames=("num_samples", "generator"))
def _sample_binary(lam: PyTree, key: jax.Array, num_samples: int | None, generator: str) -> PyTree:
  leaves, treedef = jax.tree.flatten(lam)
  drawn = [_signs(leaf, k, num_samples, generator) for leaf, k in zip(leaves, _leaf_keys(lam, key))]
  return jax.tree.unflatten(treedef, drawn)


def sample_binary(
    lam: PyTree, key: jax.Array, num_samples: int | None = None, *, generator: str = "counter"
) -> PyTree:
  """Exact binary sample w in {-1, +1} with P(w = +1) = sigmoid(2 lambda).

  sign(lambda + delta) with the noise of :func:`sample_relaxed`: for the same
  key and ``generator``, the tau -> 0 limit of the relaxed sample (equal to it
  at any saturated temperature).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> w = sample_binary({"w": jnp.zeros(10_000)}, jax.random.key(1))["w"]
    >>> bool(jnp.all(jnp.abs(w) == 1)), abs(float(w.mean())) < 0.05
    (True, True)
  """
  check_generator(generator)
  return _sample_binary(lam, key, num_samples, generator)
