"""Tests of the posterior helpers: sampling law, point estimates, predictive, mc_apply."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.optim.posterior import (
    posterior_as_prior,
    posterior_mean,
    posterior_mode,
    predictive_probs,
    sample_binary,
    sample_relaxed,
)

LAMBDAS = np.array([-2.0, -0.7, -0.1, 0.0, 0.25, 1.0, 3.0], np.float32)


@pytest.mark.parametrize("rng", ["counter", "threefry"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("sampler", ["binary", "relaxed_tau_1e-10"])
def test_sampling_law_p_plus_one_is_sigmoid_two_lambda(sampler, dtype, rng):
  n = 40000
  lam = {"w": jnp.asarray(LAMBDAS, dtype)}
  if sampler == "binary":
    draws = sample_binary(lam, jax.random.PRNGKey(0), n, rng=rng)["w"]
  else:
    draws = jax.jit(sample_relaxed, static_argnums=3, static_argnames="rng")(
        lam, jax.random.PRNGKey(0), 1e-10, n, rng=rng)["w"]
  draws = np.asarray(draws, np.float32)
  assert set(np.unique(draws)) <= {-1.0, 1.0}
  frequency = np.mean(draws == 1.0, axis=0)
  expected = expit(2 * np.asarray(lam["w"], np.float64))
  sigma = np.sqrt(expected * (1 - expected) / n)
  # 4.5 standard errors per entry: a wrong law (e.g. sigmoid(lambda)) fails by > 20 sigma.
  assert np.all(np.abs(frequency - expected) < 4.5 * sigma + 1e-12), (frequency, expected)


def test_relaxed_sample_formula():
  lam = {"w": jnp.asarray(LAMBDAS)}
  key = jax.random.PRNGKey(3)
  got = sample_relaxed(lam, key, 0.5, rng="threefry")["w"]
  (leaf_key,) = jax.random.split(key, 1)
  u_logit = np.asarray(jax.random.logistic(leaf_key, LAMBDAS.shape), np.float64)  # log(u / (1 - u))
  np.testing.assert_allclose(got, np.tanh((LAMBDAS + 0.5 * u_logit) / 0.5), rtol=1e-5, atol=1e-6)


def test_binary_sample_is_the_zero_temperature_limit_of_the_relaxed_sample():
  lam = {"a": jnp.asarray(LAMBDAS), "b": jnp.zeros((3, 2))}
  key = jax.random.PRNGKey(5)
  relaxed = sample_relaxed(lam, key, 1e-10, 6)
  binary = sample_binary(lam, key, 6)
  for name in lam:
    np.testing.assert_array_equal(np.sign(relaxed[name]), binary[name])
    assert binary[name].shape == (6,) + lam[name].shape


def test_mode_mean_and_prior():
  lam = {"w": jnp.array([-3.0, -0.0, 0.0, 1e-6, 2.0])}
  np.testing.assert_array_equal(posterior_mode(lam)["w"], [-1, -1, -1, 1, 1])
  np.testing.assert_allclose(posterior_mean(lam)["w"], np.tanh([-3.0, 0, 0, 1e-6, 2.0]), rtol=1e-6)
  prior = posterior_as_prior(lam)
  np.testing.assert_array_equal(prior["w"], lam["w"])
  assert prior["w"] is not lam["w"]


def test_predictive_averages_probabilities_not_logits():
  # One weight w in {-1, +1}; logits (5w, 0). Hand computation:
  #   w = +1: softmax = (0.99331, 0.00669);  w = -1: (0.00669, 0.99331).
  # With lambda = 0 both are equally likely: the mean of probabilities is (0.5, 0.5);
  # with lambda large, w = +1 almost surely: (0.99331, 0.00669).
  def logits_fn(params):
    return jnp.stack([5.0 * params["w"], jnp.zeros_like(params["w"])], axis=-1)[None]

  probs = predictive_probs(logits_fn, {"w": jnp.array(0.0)}, jax.random.PRNGKey(0), 4000, batch_size=500)
  np.testing.assert_allclose(probs[0], [0.5, 0.5], atol=0.03)
  sure = predictive_probs(logits_fn, {"w": jnp.array(20.0)}, jax.random.PRNGKey(0), 8)
  np.testing.assert_allclose(sure[0], [0.99330715, 0.00669285], rtol=1e-5)
  with pytest.raises(ValueError, match="num_samples"):
    predictive_probs(logits_fn, {"w": jnp.array(0.0)}, jax.random.PRNGKey(0), 0)


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Dense(3, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False)(x)
    return nn.Dropout(0.5, deterministic=not train)(x)


@pytest.mark.parametrize("loop", ["vmap", "unroll"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_mc_apply_matches_a_loop_over_samples(jit, loop):
  model = _Net()
  x = jnp.arange(8.0).reshape(4, 2)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  k = 3
  params = {"Dense_0": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (k, 2, 3))}}
  apply = mc_apply(model.apply, loop=loop)

  def loss(p):
    out, updates = apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                         train=True, rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"])
    return jnp.sum(out**2, axis=(1, 2)).sum(), (out, updates)

  fn = jax.jit(jax.value_and_grad(loss, has_aux=True)) if jit else jax.value_and_grad(loss, has_aux=True)
  (_, (out, updates)), grads = fn(params)
  assert out.shape == (k, 4, 3)
  assert updates["batch_stats"]["BatchNorm_0"]["mean"].shape == (k, 3)
  # Each sample has its own dropout mask; per-sample grads equal the grads of each network alone.
  dropout_keys = jax.random.split(jax.random.PRNGKey(2), k)
  for i in range(k):
    single = {"Dense_0": {"kernel": params["Dense_0"]["kernel"][i]}}

    def loss_i(p):
      out_i, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=True,
                             rngs={"dropout": dropout_keys[i]}, mutable=["batch_stats"])
      return jnp.sum(out_i**2)

    np.testing.assert_allclose(grads["Dense_0"]["kernel"][i], jax.grad(loss_i)(single)["Dense_0"]["kernel"],
                               rtol=1e-4, atol=1e-4)
  masks = np.asarray(out) == 0
  assert not np.array_equal(masks[0], masks[1])


def test_mc_apply_errors():
  apply = mc_apply(lambda v, x, rngs=None: x)
  with pytest.raises(ValueError, match="no 'params' collection"):
    apply({"weights": {}}, 1.0)
  with pytest.raises(ValueError, match="same leading Monte Carlo axis"):
    apply({"params": {"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}}, 1.0)
  with pytest.raises(ValueError, match="loop must be one of"):
    mc_apply(lambda v, x: x, loop="scan")
