"""BayesBiNN's step on lambda: the prior (KL) term, momentum with bias correction, the descent.

.. math::

  d = \\hat g + \\kappa (\\lambda - \\lambda_0), \\qquad
  m \\leftarrow \\beta m + (1 - \\beta) d, \\qquad
  \\lambda \\leftarrow \\lambda - \\frac{\\alpha_t}{1 - \\beta^t} m

with g_hat the natural gradient (:mod:`bayesbinn_jax.optim.natural_gradient`),
lambda_0 the prior (zero for one task), kappa ``kl_weight``, alpha_t the learning
rate and t the step number from 1. With beta = 0 (no momentum buffer) m = d and
this is the paper's lambda <- (1 - alpha) lambda - alpha (N s g - lambda_0).
Every intermediate is saturated to the finite range of its dtype.

References:
  Meng, Bachmann and Khan, "Training Binary Neural Networks using the Bayesian
  Learning Rule", ICML 2020, eq. (11) and Algorithm 1 (momentum and bias
  correction as in the released code).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax.optim.natural_gradient import compute_dtype, saturate


def kl_direction(g_hat: jax.Array, lam: jax.Array, prior: jax.Array | None, kl_weight: Any) -> jax.Array:
  """d = g_hat + kl_weight * (lambda - lambda_0); lambda_0 = 0 when ``prior`` is None.

  >>> kl_direction(jnp.array([1.0]), jnp.array([3.0]), jnp.array([1.0]), 0.5)
  Array([2.], dtype=float32)
  >>> kl_direction(jnp.array([1.0]), jnp.array([3.0]), None, 1.0)
  Array([4.], dtype=float32)
  """
  dtype = g_hat.dtype
  pull = lam.astype(dtype) if prior is None else lam.astype(dtype) - prior.astype(dtype)
  return saturate(g_hat + kl_weight * pull)


def momentum_average(m: jax.Array, d: jax.Array, beta: Any) -> jax.Array:
  """m <- beta m + (1 - beta) d, computed in d's dtype and stored in m's.

  >>> momentum_average(jnp.array([1.0]), jnp.array([3.0]), 0.5)
  Array([2.], dtype=float32)
  """
  return saturate((beta * m.astype(d.dtype) + (1 - beta) * d).astype(m.dtype))


def step_size(learning_rate: optax.ScalarOrSchedule, count: jax.Array, beta: Any | None) -> jax.Array:
  """alpha_t / (1 - beta^t), t = count + 1; alpha_t when ``beta`` is None (no momentum).

  ``learning_rate`` is a number or an optax schedule called with ``count``. The
  denominator is floored at float32's tiny: a momentum that rounds to 1 (0.999
  injected in bfloat16) must not divide by 0.

  >>> round(float(step_size(0.1, jnp.asarray(0), 0.5)), 6)   # 0.1 / (1 - 0.5)
  0.2
  >>> round(float(step_size(lambda c: 0.1 * (c + 1), jnp.asarray(1), None)), 6)
  0.2
  """
  alpha = learning_rate(count) if callable(learning_rate) else learning_rate
  if beta is None:
    return jnp.asarray(alpha)
  t = optax.safe_increment(count).astype(jnp.float32)
  correction = 1 - jnp.asarray(beta, jnp.float32) ** t
  return alpha / jnp.maximum(correction, jnp.finfo(jnp.float32).tiny)


def descend(lam: jax.Array, direction: jax.Array, size: jax.Array) -> jax.Array:
  """lambda - size * direction, computed in float32 or wider and stored in lambda's dtype.

  >>> descend(jnp.array([10.0]), jnp.array([4.0]), jnp.asarray(0.5))
  Array([8.], dtype=float32)
  """
  dtype = compute_dtype(lam.dtype)
  return saturate((lam.astype(dtype) - size * direction.astype(dtype)).astype(lam.dtype))
