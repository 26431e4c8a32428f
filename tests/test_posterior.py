"""Tests of the posterior helpers: sampling law, point estimates, predictive, mc_apply,
and the helpers that read the posterior from a composed optimizer state."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import expit

from bayesbinn_jax.nn.monte_carlo import mc_apply
from bayesbinn_jax.optim.bayesbinn import bayesbinn
from bayesbinn_jax.optim.posterior import (
    mc_outputs,
    mean_params,
    mode_params,
    posterior_as_prior,
    posterior_lambda,
    posterior_mean,
    posterior_mode,
    predictive_probs,
    sample_binary,
    sample_params,
    sample_relaxed,
)

LAMBDAS = np.array([-2.0, -0.7, -0.1, 0.0, 0.25, 1.0, 3.0], np.float32)


@pytest.mark.parametrize("generator", ["counter", "threefry"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("sampler", ["binary", "relaxed_tau_1e-10"])
def test_sampling_law_p_plus_one_is_sigmoid_two_lambda(sampler, dtype, generator):
  n = 40000
  lam = {"w": jnp.asarray(LAMBDAS, dtype)}
  if sampler == "binary":
    draws = sample_binary(lam, jax.random.PRNGKey(0), n, generator=generator)["w"]
  else:
    draws = jax.jit(sample_relaxed, static_argnums=3, static_argnames="generator")(
        lam, jax.random.PRNGKey(0), 1e-10, n, generator=generator)["w"]
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
  got = sample_relaxed(lam, key, 0.5, generator="threefry")["w"]
  (leaf_key,) = jax.random.split(key, 1)
  u_logit = np.asarray(jax.random.logistic(leaf_key, LAMBDAS.shape), np.float64)  # log(u / (1 - u))
  np.testing.assert_allclose(got, np.tanh((LAMBDAS + 0.5 * u_logit) / 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("generator", ["counter", "threefry"])
def test_eager_samples_are_those_drawn_inside_a_jitted_step(generator):
  # The samplers are jitted themselves: called eagerly or inside a user's jit (temperature
  # traced, as a schedule gives it), the same program computes the same bits.
  lam = {"a": jnp.linspace(-3.0, 3.0, 13), "b": jnp.linspace(-20.0, 20.0, 7), "c": jnp.ones((2, 3), jnp.bfloat16)}
  key = jax.random.PRNGKey(2)
  for num_samples in (None, 3):
    step = jax.jit(lambda lam, key, tau: (sample_relaxed(lam, key, tau, num_samples, generator=generator),  # noqa: B023
                                          sample_binary(lam, key, num_samples, generator=generator)))  # noqa: B023
    inside = step(lam, key, 0.37)
    eager = (sample_relaxed(lam, key, 0.37, num_samples, generator=generator),
             sample_binary(lam, key, num_samples, generator=generator))
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(inside), strict=True):
      np.testing.assert_array_equal(a, b)


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


# ------------------------------------------------ helpers on composed optimizer states


class _Mixed(nn.Module):
  """Binary kernels and real biases: every leaf is used by the forward pass."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(5)(x))
    return nn.Dense(3)(x)


def _labels(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: "binary" if path[-1].key == "kernel" else "real", params)


def _mixed(dtype=jnp.float32):
  model = _Mixed()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), dtype)
  params = jax.tree.map(lambda p: (p + 0.25).astype(dtype), model.init(jax.random.PRNGKey(0), x)["params"])
  tx = optax.multi_transform({"binary": bayesbinn(1e-2, 10, lambda_init=1.0, key=4), "real": optax.adam(1e-2)},
                             _labels(params))
  return model, x, params, tx


def _kernels_and_biases(tree):
  return ([tree[layer]["kernel"] for layer in ("Dense_0", "Dense_1")],
          [tree[layer]["bias"] for layer in ("Dense_0", "Dense_1")])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_helpers_on_multi_transform_fill_the_real_leaves_from_params(dtype):
  model, x, params, tx = _mixed(dtype)
  state = tx.init(params)
  lam = posterior_lambda(state)
  assert isinstance(lam["Dense_0"]["bias"], optax.MaskedNode)
  lam_kernels, _ = _kernels_and_biases(lam)
  for helper, expected in ((mode_params, lambda l: np.where(l > 0, 1.0, -1.0)), (mean_params, np.tanh)):
    for fn in (helper, jax.jit(helper)):
      out = fn(state, params)
      kernels, biases = _kernels_and_biases(out)
      for k, l in zip(kernels, lam_kernels):
        assert k.dtype == dtype
        np.testing.assert_allclose(np.asarray(k, np.float32), expected(np.asarray(l)), rtol=1e-2)
      for b, p in zip(biases, _kernels_and_biases(params)[1]):
        assert b is p or np.array_equal(b, p)
      model.apply({"params": out}, x)  # the full tree runs the model
  # Train a step from a relaxed sample, then the predictive runs on the whole model.
  params = sample_params(state, params, jax.random.PRNGKey(1), temperature=1.0)
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x).astype(jnp.float32) ** 2))(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  params = optax.apply_updates(params, updates)
  logits_fn = lambda w: model.apply({"params": w}, x)  # noqa: E731
  probs = predictive_probs(logits_fn, state, jax.random.PRNGKey(2), 8, params=params)
  assert probs.shape == (6, 3) and probs.dtype == jnp.float32
  np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)
  # The C networks are sample_params(state, params, k) for the split keys.
  keys = jax.random.split(jax.random.PRNGKey(2), 8)
  by_hand = np.mean([jax.nn.softmax(logits_fn(sample_params(state, params, k)).astype(jnp.float32), axis=-1)
                     for k in keys], axis=0)
  # bfloat16: the vectorised and the one-by-one forward passes round differently.
  np.testing.assert_allclose(probs, by_hand, atol=1e-6 if dtype == jnp.float32 else 2e-3)
  with pytest.raises(ValueError, match="pass params="):
    predictive_probs(logits_fn, state, jax.random.PRNGKey(2), 8)


def test_sample_params_equals_the_lambda_tree_samplers_and_stacks():
  params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
  state = bayesbinn(1e-3, 10, lambda_init=0.5).init(params)
  key = jax.random.PRNGKey(3)
  relaxed = sample_params(state, params, key, temperature=0.5, generator="threefry")
  np.testing.assert_array_equal(relaxed["w"], sample_relaxed(state.lam, key, 0.5, generator="threefry")["w"])
  binary = sample_params(state, params, key, 4)
  np.testing.assert_array_equal(binary["w"], sample_binary(state.lam, key, 4)["w"])
  assert binary["w"].shape == (4, 4, 3)
  # On a multi_transform state the unowned leaves are broadcast to the sample axis.
  tx = optax.multi_transform({"binary": bayesbinn(1e-3, 10), "real": optax.sgd(0.1)}, {"w": "binary", "b": "real"})
  mixed = sample_params(tx.init(params), {"w": params["w"], "b": jnp.arange(3.0)}, key, 2)
  assert mixed["w"].shape == (2, 4, 3)
  np.testing.assert_array_equal(mixed["b"], [[0.0, 1.0, 2.0]] * 2)


@pytest.mark.parametrize("wrap", ["bare", "chain", "inject", "multisteps", "apply_if_finite"])
def test_helpers_find_the_state_in_every_wrapper(wrap):
  params = {"w": jnp.zeros((4, 3))}
  inner = bayesbinn(1e-3, 10, lambda_init=1.0, key=5)
  tx = {
      "bare": lambda: inner,
      "chain": lambda: optax.chain(optax.clip(1.0), inner),
      "inject": lambda: optax.inject_hyperparams(bayesbinn)(learning_rate=1e-3, train_set_size=10,
                                                            lambda_init=1.0, key=5),
      "multisteps": lambda: optax.MultiSteps(inner, every_k_schedule=2),
      "apply_if_finite": lambda: optax.apply_if_finite(inner, 3),
  }[wrap]()
  state = tx.init(params)
  lam = inner.init(params).lam
  np.testing.assert_array_equal(posterior_lambda(state)["w"], lam["w"])
  np.testing.assert_array_equal(mode_params(state, params)["w"], posterior_mode(lam)["w"])
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(mc_outputs(lambda w: w["w"], state, key, 3),
                                mc_outputs(lambda w: w["w"], lam, key, 3))


def test_helpers_name_what_is_wrong():
  params = {"w": jnp.zeros((4, 3))}
  with pytest.raises(ValueError, match="holds no BayesBiNNState"):
    mode_params(optax.adam(1e-3).init(params), params)
  state = bayesbinn(1e-3, 10).init(params)
  with pytest.raises(ValueError, match=r"params at \['w'\] has shape \(5,\)"):
    mode_params(state, {"w": jnp.zeros(5)})
  with pytest.raises(ValueError, match="tree structure"):
    mode_params(state, {"v": jnp.zeros((4, 3))})
  # K stacked training params are accepted: the mode is one network in their dtype.
  stacked = {"w": jnp.zeros((2, 4, 3), jnp.bfloat16)}
  mode = mode_params(state, stacked)["w"]
  assert mode.shape == (4, 3) and mode.dtype == jnp.bfloat16


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_a_temperature_that_is_not_positive_is_refused_not_read_as_saturated(temperature):
  # tau <= 0 is below SATURATED_TEMPERATURE, so without the check it drew the binary sample
  # silently while bayesbinn() refuses the same value.
  params = {"w": jnp.zeros((4, 3))}
  state = bayesbinn(1e-3, 10).init(params)
  with pytest.raises(ValueError, match=r"temperature must be in \(0, inf\)"):
    sample_params(state, params, jax.random.key(0), temperature=temperature)
  # The smallest positive temperature is still the binary limit.
  tiny = sample_params(state, params, jax.random.key(0), temperature=1e-30)["w"]
  assert set(np.unique(np.asarray(tiny))) <= {-1.0, 1.0}
