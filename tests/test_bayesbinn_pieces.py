"""Each piece of the BayesBiNN update alone, against a NumPy transcription, eager and jit.

The scale s, the natural gradient, the prior term, momentum, the step size, the descent and
the saturated scale; the composition is tested in test_bayesbinn.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesbinn_jax.optim import lambda_step, natural_gradient as ng

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
floats = st.floats(-30.0, 30.0, width=32)


def _maybe_jit(fn, jit, **static):
  return jax.jit(fn, static_argnames=tuple(static)) if jit else fn


@JIT
@settings(max_examples=25, deadline=None)
@given(w=st.floats(-1.0, 1.0, width=32), lam=floats, tau=st.sampled_from([1.0, 1e-2, 1e-10]))
def test_scale_equals_the_guarded_formula(jit, w, lam, tau):
  got = _maybe_jit(ng.natural_gradient_scale, jit)(jnp.float32(w), jnp.float32(lam), tau)
  mu = np.float64(jnp.tanh(jnp.float32(lam)))  # XLA's float32 tanh (a few ulps from NumPy's)
  want = ((1 - np.float64(w)) * (1 + np.float64(w)) + 1e-10) / tau / ((1 - mu) * (1 + mu) + 1e-10)
  np.testing.assert_allclose(float(got), min(want, 3.4e38), rtol=2e-5)


@JIT
def test_natural_gradient_is_n_times_the_mean_over_samples(jit):
  rng = np.random.default_rng(0)
  g, s = rng.normal(size=(3, 5)).astype(np.float32), rng.uniform(0, 2, (3, 5)).astype(np.float32)
  fn = jax.jit(ng.natural_gradient, static_argnums=(3,)) if jit else ng.natural_gradient
  got = fn(jnp.asarray(g), jnp.asarray(s), 40, True)
  np.testing.assert_allclose(got, 40 * np.mean(s.astype(np.float64) * g, axis=0), rtol=1e-5)
  one = fn(jnp.asarray(g[0]), jnp.asarray(s[0]), 40, False)
  np.testing.assert_allclose(one, 40 * s[0].astype(np.float64) * g[0], rtol=1e-6)


@JIT
def test_natural_gradient_saturates_instead_of_overflowing(jit):
  fn = jax.jit(ng.natural_gradient, static_argnums=(3,)) if jit else ng.natural_gradient
  got = fn(jnp.array([1e30, -1e30]), jnp.array([1e22, 1e22]), 60000, False)
  np.testing.assert_array_equal(got, [np.finfo(np.float32).max, -np.finfo(np.float32).max])


@JIT
@settings(max_examples=25, deadline=None)
@given(g=floats, lam=floats, prior=floats, kl=st.sampled_from([0.0, 0.5, 1.0]), beta=st.sampled_from([0.0, 0.9]))
def test_prior_momentum_and_descent_follow_their_equations(jit, g, lam, prior, kl, beta):
  d = _maybe_jit(lambda_step.kl_direction, jit)(jnp.float32(g), jnp.float32(lam), jnp.float32(prior), kl)
  np.testing.assert_allclose(float(d), g + kl * (lam - prior), rtol=1e-5, atol=1e-4)
  m = _maybe_jit(lambda_step.momentum_average, jit)(jnp.float32(1.0), d, beta)
  np.testing.assert_allclose(float(m), beta * 1.0 + (1 - beta) * float(d), rtol=1e-5, atol=1e-5)
  new = _maybe_jit(lambda_step.descend, jit)(jnp.float32(lam), m, jnp.float32(0.01))
  np.testing.assert_allclose(float(new), lam - 0.01 * float(m), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("count,beta,want", [(0, None, 0.1), (0, 0.9, 0.1 / 0.1), (4, 0.5, 0.1 / (1 - 0.5**5))])
def test_step_size_is_bias_corrected_with_t_from_one(count, beta, want):
  assert float(lambda_step.step_size(0.1, jnp.asarray(count), beta)) == pytest.approx(want, rel=1e-6)


def test_step_size_of_a_momentum_that_rounds_to_one_is_finite():
  assert np.isfinite(float(lambda_step.step_size(0.1, jnp.asarray(0), jnp.bfloat16(0.999))))


@JIT
def test_saturated_scale_is_the_scale_at_plus_minus_one(jit):
  lam = jnp.linspace(-20, 20, 101, dtype=jnp.float32)
  signs = jnp.where(lam > 0, 1.0, -1.0)
  got = _maybe_jit(ng.saturated_scale, jit)(lam, 1e-10)
  np.testing.assert_allclose(got, ng.natural_gradient_scale(signs, lam, 1e-10), rtol=1e-6)
