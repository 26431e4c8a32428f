"""BayesBiNN's natural gradient: the scale s and N times the mean of s * g over the samples.

.. math::

  s_k = \\frac{1 - w_k^2 + 10^{-10}}{\\tau \\, (1 - \\tanh^2\\lambda + 10^{-10})}, \\qquad
  \\hat g = \\frac{N}{K} \\sum_{k=1}^{K} s_k \\odot g_k

with w_k the relaxed sample the gradient g_k was taken at, tau the temperature, N
the training-set size and K the Monte Carlo samples. s is the derivative of the
relaxed sample w.r.t. lambda over that of the mean mu = tanh(lambda). Everything
here is computed in :func:`compute_dtype` (float32 or wider) whatever the
sample's dtype: in float16 the guard 1e-10 itself rounds to 0.

The guards are load-bearing: in float32 tanh(10) is exactly 1, and at tau =
1e-10 the sample is exactly +-1, so a saturated weight has s = (1e-10 / tau) /
1e-10 (:func:`saturated_scale`); without them the update is 0/0.

References:
  Meng, Bachmann and Khan, "Training Binary Neural Networks using the Bayesian
  Learning Rule", ICML 2020, eq. (10)-(11) and the released code's guards.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp

GUARD = 1e-10
"""The guard of the released code in both the numerator and the denominator of s."""


def compute_dtype(lam_dtype: Any) -> jnp.dtype:
  """The dtype of s and of the update: ``promote_types(lam_dtype, float32)``.

  >>> compute_dtype(jnp.bfloat16), compute_dtype(jnp.float64)
  (dtype('float32'), dtype('float64'))
  """
  return jnp.promote_types(lam_dtype, jnp.float32)


def one_minus_square(x: jax.Array) -> jax.Array:
  """1 - x^2 written as (1 - x)(1 + x).

  The product is exact near |x| = 1 and, unlike ``1 - x * x``, cannot be
  re-associated with the ``+ 1e-10`` that follows: XLA rewrites
  ``(1 - x * x) + 1e-10`` to ``(1 + 1e-10) - x * x == 1 - x * x`` in float32,
  which turns the guarded scale into 0 / 0 for saturated weights under jit.

  >>> one_minus_square(jnp.array([1.0, 0.5, -1.0]))
  Array([0.  , 0.75, 0.  ], dtype=float32)
  """
  one = jnp.ones((), x.dtype)
  return (one - x) * (one + x)


def saturate(x: jax.Array) -> jax.Array:
  """x clipped to the finite range of its dtype: an overflow becomes +-max, never Inf.

  With tau = 1e-12 the scale s reaches 1e22, and gradients of 1e30 would carry
  N s g past float32's 3.4e38; saturating every intermediate of the update
  keeps Inf (and the Inf - Inf = NaN that would follow) out of the state.

  >>> saturate(jnp.array([jnp.inf, -jnp.inf, 1.0]))
  Array([ 3.4028235e+38, -3.4028235e+38,  1.0000000e+00], dtype=float32)
  """
  big = jnp.finfo(x.dtype).max
  return jnp.clip(x, -big, big)


def natural_gradient_scale(
    sample: jax.Array, lam: jax.Array, temperature: float | jax.Array
) -> jax.Array:
  """s = (1 - w^2 + 1e-10) / tau / (1 - tanh(lambda)^2 + 1e-10), in float32 or wider.

  Args:
    sample: the relaxed sample w the gradient was taken at (any float dtype;
      a leading Monte Carlo axis broadcasts against ``lam``).
    lam: lambda.
    temperature: tau.

  Returns:
    s in :func:`compute_dtype` of lambda's dtype.

  Examples:
    >>> natural_gradient_scale(jnp.array([0.0]), jnp.array([0.0]), 1.0)
    Array([1.], dtype=float32)
    >>> natural_gradient_scale(jnp.array([1.0]), jnp.array([10.0]), 1e-10)  # (1e-10/1e-10)/1e-10
    Array([1.e+10], dtype=float32)
  """
  dtype = compute_dtype(lam.dtype)
  guard = jnp.asarray(GUARD, dtype)
  tau = jnp.asarray(temperature, dtype)
  mu = jnp.tanh(lam.astype(dtype))
  return (one_minus_square(sample.astype(dtype)) + guard) / tau / (one_minus_square(mu) + guard)


def saturated_scale(lam: jax.Array, temperature: float | jax.Array) -> jax.Array:
  """s where the sample is +-1 (1 - w^2 = 0): (1e-10 / tau) / (1 - tanh(lambda)^2 + 1e-10).

  The scale of every weight at a saturated temperature (see
  :data:`bayesbinn_jax.optim.sampling.SATURATED_TEMPERATURE`), where it does
  not depend on the sample: the update then reads neither the sample nor its
  noise. Equal to :func:`natural_gradient_scale` at w = +-1.

  >>> saturated_scale(jnp.array([10.0, 0.0]), 1e-10)
  Array([1.e+10, 1.e+00], dtype=float32)
  """
  dtype = compute_dtype(lam.dtype)
  guard = jnp.asarray(GUARD, dtype)
  mu = jnp.tanh(lam.astype(dtype))
  return guard / jnp.asarray(temperature, dtype) / (one_minus_square(mu) + guard)


def mean_over_samples(x: jax.Array) -> jax.Array:
  """The mean over the leading (Monte Carlo) axis, as a sum of its K slices.

  Equal to ``jnp.mean(x, axis=0)``; XLA's CPU backend runs a reduction over the
  major axis about 20x slower than the K - 1 elementwise additions, which it
  fuses with the computation of ``x``.

  >>> mean_over_samples(jnp.array([[1.0, 2.0], [3.0, 6.0]]))
  Array([2., 4.], dtype=float32)
  """
  return functools.reduce(operator.add, [x[i] for i in range(x.shape[0])]) / x.shape[0]


def natural_gradient(
    grad: jax.Array, scale: jax.Array, train_set_size: Any, stacked: bool
) -> jax.Array:
  """g_hat = N * mean_k(s_k * g_k), saturated, in the scale's dtype.

  Args:
    grad: g, shaped like the sample (a leading K axis when ``stacked``).
    scale: s from :func:`natural_gradient_scale` (stacked like ``grad``) or
      :func:`saturated_scale` (one network's shape, broadcast over K).
    train_set_size: N.
    stacked: whether ``grad`` carries the leading Monte Carlo axis.

  Examples:
    >>> g = jnp.array([[1.0, -2.0], [3.0, 0.0]])        # K = 2 samples of 2 weights
    >>> natural_gradient(g, jnp.array([1.0, 0.5]), 10, stacked=True)  # 10 * mean(s * g)
    Array([20., -5.], dtype=float32)
  """
  scaled = saturate(scale * grad.astype(scale.dtype))
  if stacked:
    scaled = mean_over_samples(scaled)
  return saturate(jnp.asarray(train_set_size, scale.dtype) * scaled)
