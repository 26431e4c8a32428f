"""The counter-based uniform generator: range, uniformity, independence, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesbinn_jax import bayesbinn
from bayesbinn_jax.optim.noise import counter_uniform, logistic


def test_open_unit_interval_and_23_bit_grid():
  u = np.asarray(counter_uniform(jax.random.PRNGKey(0), (1 << 22,)), np.float64)
  assert 0 < u.min() and u.max() < 1
  # u = (n + 1/2) / 2^23 exactly, n an integer in [0, 2^23): the extremes stay off 0 and 1.
  n = u * 2**23 - 0.5
  np.testing.assert_array_equal(n, np.round(n))
  assert n.min() >= 0 and n.max() <= 2**23 - 1
  assert np.all(np.isfinite(np.asarray(logistic(jax.random.PRNGKey(0), (1 << 22,), jnp.float32))))


def test_uniform_ks_and_no_correlation_between_neighbours():
  u = np.asarray(counter_uniform(jax.random.PRNGKey(1), (200_000,)), np.float64)
  assert stats.kstest(u, "uniform").pvalue > 1e-3
  # Lag-1 and lag-64 correlations of a good generator are ~ N(0, 1/n): |r| < 5/sqrt(n) = 0.011.
  for lag in (1, 64):
    assert abs(np.corrcoef(u[:-lag], u[lag:])[0, 1]) < 0.011
  # 256-bin chi-square on the top 8 bits.
  counts = np.bincount((u * 256).astype(int), minlength=256)
  assert stats.chisquare(counts).pvalue > 1e-3


def test_keys_give_independent_streams_and_the_same_key_the_same_stream():
  a, b = jax.random.split(jax.random.PRNGKey(2))
  ua, ub = (np.asarray(counter_uniform(k, (100_000,)), np.float64) for k in (a, b))
  assert abs(np.corrcoef(ua, ub)[0, 1]) < 0.016
  np.testing.assert_array_equal(ua, np.asarray(jax.jit(counter_uniform, static_argnums=1)(a, (100_000,))))
  typed = jax.random.wrap_key_data(a)
  np.testing.assert_array_equal(ua, np.asarray(counter_uniform(typed, (100_000,))))


def test_logistic_noise_moments():
  # Standard logistic: mean 0, variance pi^2 / 3.
  x = np.asarray(logistic(jax.random.PRNGKey(3), (400_000,), jnp.float32), np.float64)
  assert abs(x.mean()) < 0.02 and abs(x.var() - np.pi**2 / 3) < 0.05
  assert stats.kstest(x, "logistic").pvalue > 1e-3


def test_bad_generator_is_refused():
  with pytest.raises(ValueError, match="generator must be one of"):
    bayesbinn(1e-3, 10, generator="mersenne")
  with pytest.raises(ValueError, match="generator must be one of"):
    logistic(jax.random.PRNGKey(0), (3,), jnp.float32, "mersenne")
