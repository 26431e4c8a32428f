"""Tests of the BayesBiNN transform against hand computation and a NumPy transcription."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.bayesbinn import BayesBiNNState, bayesbinn, natural_gradient_scale
from bayesbinn_jax.optim.posterior import sample_relaxed

from optim_helpers import apply_sequence


def reference_step(lam, momentum, prior, samples, grads, count, *, lr, n, tau, beta, kl_weight):
  """The update of algorithm.md, transcribed line by line in NumPy (float64).

  ``samples`` and ``grads`` have a leading Monte Carlo axis. mu is tanh of the
  float32 lambda, as the library computes it in the parameters' dtype (in
  float32, tanh(10) == 1 exactly, which is what the 1e-10 guards are for).
  """
  lam64 = lam.astype(np.float64)
  mu = np.tanh(lam.astype(np.float32)).astype(np.float64)
  w = samples.astype(np.float64)
  s = (1 - w * w + 1e-10) / tau / (1 - mu * mu + 1e-10)
  g_hat = n * np.mean(s * grads.astype(np.float64), axis=0)
  momentum = beta * momentum + (1 - beta) * (g_hat + kl_weight * (lam64 - prior))
  t = count + 1
  lam64 = lam64 - lr * momentum / (1 - beta**t)
  return lam64, momentum


CONFIGS = [
    dict(temperature=1.0, momentum=0.0, num_samples=1, kl_weight=1.0, prior=False),
    dict(temperature=1.0, momentum=0.9, num_samples=1, kl_weight=1.0, prior=False),
    dict(temperature=1e-2, momentum=0.99, num_samples=3, kl_weight=0.5, prior=True),
    dict(temperature=1e-10, momentum=0.0, num_samples=1, kl_weight=1.0, prior=True),
    dict(temperature=1e-10, momentum=0.9, num_samples=2, kl_weight=2.0, prior=False),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_update_matches_numpy_transcription(config, jit):
  k, tau, beta, kl = config["num_samples"], config["temperature"], config["momentum"], config["kl_weight"]
  lr, n, shape = 1e-3, 50, (4, 3)
  rng = np.random.default_rng(0)
  prior = {"w": rng.normal(0, 2, shape).astype(np.float32)} if config["prior"] else None
  tx = bayesbinn(
      lr, n, temperature=tau, num_samples=k, momentum=beta, lambda_init=1.5,
      lambda_init_std=0.5, prior_lambda=prior, kl_weight=kl, key=3,
  )
  one = {"w": jnp.zeros(shape, jnp.float32)}
  state0 = tx.init(one)
  # The sample the state holds (its sample_key): the first update's scale comes from it.
  params = sample_relaxed(state0.lam, state0.sample_key, tau, k if k > 1 else None)
  grads_seq = [
      jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 1, p.shape), jnp.float32), params)
      for _ in range(4)
  ]
  # (params, state) before each step and after the last. The run starts from state0:
  # tx.init takes params without the Monte Carlo axis.
  history = [(params, state0)] + apply_sequence(tx, params, grads_seq, jit=jit, state=state0)

  lam = np.asarray(state0.lam["w"], np.float64)
  mom = np.zeros(shape)
  prior_np = np.zeros(shape) if prior is None else prior["w"].astype(np.float64)
  for step, grads in enumerate(grads_seq):
    w, state = history[step]
    np.testing.assert_allclose(np.asarray(state.lam["w"]), lam, rtol=1e-5, atol=1e-6)
    samples = np.asarray(w["w"]).reshape((k,) + shape)
    lam, mom = reference_step(
        np.asarray(state.lam["w"]), mom, prior_np, samples,
        np.asarray(grads["w"]).reshape((k,) + shape), step,
        lr=lr, n=n, tau=tau, beta=beta, kl_weight=kl,
    )
    new_params, new_state = history[step + 1]
    assert int(new_state.count) == step + 1
    np.testing.assert_allclose(np.asarray(new_state.lam["w"]), lam, rtol=1e-5, atol=1e-5)
    if beta == 0:
      assert new_state.momentum is None  # m is the natural gradient itself: no buffer
    else:
      np.testing.assert_allclose(np.asarray(new_state.momentum["w"]), mom, rtol=1e-5, atol=1e-5)
    # The model now holds the next relaxed sample, drawn from the new lambda.
    _, sample_key = jax.random.split(state.key)
    expected = sample_relaxed(new_state.lam, sample_key, tau, k if k > 1 else None)
    np.testing.assert_allclose(new_params["w"], expected["w"], atol=2e-7)
    assert new_params["w"].shape == w["w"].shape


def test_one_step_by_hand():
  # lambda = 0.5, w = 0.2, g = 1, N = 10, lr = 0.1, tau = 1, beta = 0, no prior:
  #   mu = tanh(0.5) = 0.46211716,   1 - mu^2 = 0.78644773
  #   s = (1 - 0.04) / 0.78644773 = 1.22067,   g_hat = 10 * s * 1 = 12.2067
  #   lambda' = 0.5 - 0.1 * (12.2067 + 0.5) = -0.77067
  # count = 1: after the first update the scale comes from the params the model holds.
  tx = bayesbinn(0.1, 10)
  state = tx.init({"w": jnp.zeros(())})._replace(lam={"w": jnp.array(0.5)}, count=jnp.array(1))
  _, state = tx.update({"w": jnp.array(1.0)}, state, {"w": jnp.array(0.2)})
  assert float(state.lam["w"]) == pytest.approx(-0.77067, abs=1e-4)
  assert state.momentum is None
  # The same step with a momentum buffer (beta = 0.5, t = 2, bias correction 1 - 0.25 = 0.75):
  #   m = 0.5 * 12.7067 = 6.35335,   lambda' = 0.5 - 0.1 * 6.35335 / 0.75 = -0.347113
  tx = bayesbinn(0.1, 10, momentum=0.5)
  state = tx.init({"w": jnp.zeros(())})._replace(lam={"w": jnp.array(0.5)}, count=jnp.array(1))
  _, state = tx.update({"w": jnp.array(1.0)}, state, {"w": jnp.array(0.2)})
  assert float(state.momentum["w"]) == pytest.approx(6.35335, abs=1e-3)
  assert float(state.lam["w"]) == pytest.approx(-0.347113, abs=1e-4)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_nonfinite_gradient_skips_the_step(momentum, jit):
  tx = bayesbinn(1e-3, 10, momentum=momentum)
  state = tx.init({"w": jnp.zeros((4,)), "b": jnp.zeros(())})
  params = sample_relaxed(state.lam, jax.random.PRNGKey(0), 1.0)
  update = jax.jit(tx.update) if jit else tx.update
  # One good step first, so that momentum and count are not at their initial values.
  good = {"w": jnp.array([1.0, -1.0, 0.5, 0.0]), "b": jnp.array(0.3)}
  updates, state = update(good, state, params)
  params = optax.apply_updates(params, updates)
  assert int(state.notfinite_count) == 0
  before = state
  for streak, bad in enumerate((jnp.nan, jnp.inf, -jnp.inf), start=1):
    grads = {"w": good["w"], "b": jnp.array(bad)}  # one bad leaf skips every leaf
    updates, state = update(grads, state, params)
    for leaf in jax.tree.leaves(updates):
      np.testing.assert_array_equal(leaf, 0.0)
    for old, new in zip(jax.tree.leaves(before._replace(notfinite_count=0)),
                        jax.tree.leaves(state._replace(notfinite_count=0)), strict=True):
      np.testing.assert_array_equal(new, old)
    assert int(state.count) == 1
    assert int(state.notfinite_count) == streak  # consecutive skipped steps
  # A finite step is taken and resets the count, as optax.apply_if_finite's.
  _, state = update(good, state, params)
  assert int(state.count) == 2 and int(state.notfinite_count) == 0
  state = before
  # Without the skip, the NaN reaches lambda.
  raw = bayesbinn(1e-3, 10, momentum=momentum, skip_nonfinite=False)
  _, raw_state = raw.update({"w": good["w"], "b": jnp.array(jnp.nan)}, state, params)
  assert np.isnan(float(raw_state.lam["b"]))


def test_momentum_buffer_only_when_momentum_can_be_nonzero():
  params = {"w": jnp.zeros((3,))}
  assert bayesbinn(1e-3, 10).init(params).momentum is None
  assert bayesbinn(1e-3, 10, momentum=0.9).init(params).momentum["w"].shape == (3,)
  # An injected momentum may change during training: the buffer is always kept.
  tx = optax.inject_hyperparams(bayesbinn)(learning_rate=1e-3, train_set_size=10, momentum=0.0)
  state = tx.init(params)
  assert state.inner_state.momentum["w"].shape == (3,)
  state.hyperparams["momentum"] = jnp.asarray(0.5)
  _, state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, sample_relaxed(
      state.inner_state.lam, jax.random.PRNGKey(0), 1.0))
  assert np.any(np.asarray(state.inner_state.momentum["w"]) != 0)


def test_learning_rate_schedule_called_with_count_from_zero():
  seen = []

  def schedule(count):
    seen.append(count)
    return 0.1 * (count + 1)

  tx = bayesbinn(schedule, 1)
  state = tx.init({"w": jnp.zeros(())})._replace(lam={"w": jnp.array(0.0)})
  # lambda = 0, the first update: w is the state's own sample w0, g = 1:
  # s = 1 - w0^2 (mu = 0), g_hat = s, lambda' = 0 - lr(0) * s with lr(0) = 0.1.
  w0 = float(sample_relaxed(state.lam, state.sample_key, 1.0)["w"])
  _, state = tx.update({"w": jnp.array(1.0)}, state, {"w": jnp.array(0.0)})
  assert float(state.lam["w"]) == pytest.approx(-0.1 * (1 - w0 * w0), rel=1e-5)
  assert 0 < 1 - w0 * w0 < 1
  assert int(seen[0]) == 0


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_saturated_lambda_at_tiny_temperature_stays_finite(jit):
  # float32: tanh(10) == 1 and tanh((10 + delta) / 1e-10) == 1, so without the guards
  # s = 0 / 0. With them s = (1e-10 / 1e-10) / 1e-10 = 1e10. XLA folds the naive
  # (1 - w*w) + 1e-10 into 1 - w*w under jit, which this test catches.
  lam = jnp.array([10.0, -10.0, 30.0, -1e4], jnp.float32)
  w = jnp.array([1.0, -1.0, 1.0, -1.0], jnp.float32)
  scale = jax.jit(natural_gradient_scale) if jit else natural_gradient_scale
  np.testing.assert_allclose(scale(w, lam, 1e-10), 1e10, rtol=1e-6)

  n, lr = 60000, 1e-4
  tx = bayesbinn(lr, n, temperature=1e-10)
  state = tx.init({"w": lam})._replace(lam={"w": lam})
  grads = {"w": jnp.array([1e-3, 1e-3, -1e-3, 0.0], jnp.float32)}
  update = jax.jit(tx.update) if jit else tx.update
  updates, new_state = update(grads, state, {"w": w})
  assert np.all(np.isfinite(updates["w"])) and np.all(np.isfinite(new_state.lam["w"]))
  expected = np.asarray(lam, np.float64) - lr * (n * 1e10 * np.asarray(grads["w"]) + np.asarray(lam))
  np.testing.assert_allclose(new_state.lam["w"], expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_keep_lambda_in_float32_and_updates_in_their_dtype(dtype):
  params = {"w": jnp.zeros((8, 4), dtype)}
  tx = bayesbinn(1e-3, 100, temperature=1e-10, momentum=0.9)
  state = tx.init(params)
  assert state.lam["w"].dtype == jnp.float32 and state.momentum["w"].dtype == jnp.float32
  params = jax.tree.map(lambda w: w.astype(dtype), sample_relaxed(state.lam, jax.random.PRNGKey(0), 1e-10))
  grads = {"w": jnp.full((8, 4), 1e-2, dtype)}
  for update in (tx.update, jax.jit(tx.update)):
    updates, new_state = update(grads, state, params)
    assert updates["w"].dtype == dtype and new_state.lam["w"].dtype == jnp.float32
    # The float32 transcription: lambda is float32, only w and g were rounded to dtype.
    lam, _ = reference_step(
        np.asarray(state.lam["w"]), 0.0, 0.0,
        np.asarray(params["w"], np.float32)[None], np.asarray(grads["w"], np.float32)[None], 0,
        lr=1e-3, n=100, tau=1e-10, beta=0.9, kl_weight=1.0,
    )
    np.testing.assert_allclose(new_state.lam["w"], lam, rtol=1e-5)


@pytest.mark.parametrize("lam_dtype", [jnp.bfloat16, jnp.float16])
def test_lam_dtype_sets_the_state_dtype(lam_dtype):
  tx = bayesbinn(1e-3, 100, momentum=0.9, lam_dtype=lam_dtype, prior_lambda={"w": np.ones(3)})
  state = tx.init({"w": jnp.zeros(3, jnp.float32)})
  expected = jnp.dtype(lam_dtype)
  for tree in (state.lam, state.momentum, state.prior_lam):
    assert tree["w"].dtype == expected
  params = sample_relaxed(state.lam, jax.random.PRNGKey(0), 1.0)
  updates, new_state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, jax.tree.map(
      lambda w: w.astype(jnp.float32), params))
  assert updates["w"].dtype == jnp.float32 and new_state.lam["w"].dtype == expected
  with pytest.raises(ValueError, match="lam_dtype must be a floating dtype"):
    bayesbinn(1e-3, 10, lam_dtype=jnp.int32)


def test_init_lambda_signs_and_noise():
  params = {"a": jnp.zeros((100, 50)), "b": jnp.zeros((7,))}
  lam = bayesbinn(1e-3, 10, lambda_init=15.0).init(params).lam
  values = np.asarray(lam["a"])
  assert set(np.unique(values)) == {-15.0, 15.0}
  assert abs(np.mean(values > 0) - 0.5) < 0.05
  noisy = np.asarray(bayesbinn(1e-3, 10, lambda_init=10.0, lambda_init_std=2.0).init(params).lam["a"])
  deviation = np.abs(noisy) - 10.0
  assert abs(deviation.std() - 2.0) < 0.2
  # Without noise (no normal draw) the signs are those drawn beside the noise: same key, same signs.
  same_signs = np.asarray(bayesbinn(1e-3, 10, lambda_init=10.0, lambda_init_std=1e-3).init(params).lam["a"])
  plain = np.asarray(bayesbinn(1e-3, 10, lambda_init=10.0).init(params).lam["a"])
  np.testing.assert_array_equal(np.sign(same_signs), np.sign(plain))
  np.testing.assert_array_equal(np.abs(plain), 10.0)


def test_same_key_gives_bitwise_identical_runs_and_other_keys_differ():
  params = {"w": jnp.zeros((16, 8))}

  def run(key):
    tx = bayesbinn(1e-2, 100, momentum=0.9, key=key)
    state = tx.init(params)
    w = sample_relaxed(state.lam, jax.random.PRNGKey(0), 1.0)
    for _ in range(5):
      updates, state = jax.jit(tx.update)({"w": jnp.sin(w["w"])}, state, w)
      w = optax.apply_updates(w, updates)
    return np.asarray(state.lam["w"])

  np.testing.assert_array_equal(run(1), run(1))
  assert not np.array_equal(run(1), run(2))
  # An int seed s is the raw key PRNGKey(s); a typed key with the same data draws the same.
  np.testing.assert_array_equal(run(1), run(jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(run(1), run(jax.random.wrap_key_data(jax.random.PRNGKey(1))))
  np.testing.assert_array_equal(run(np.int64(1)), run(1))


def test_the_state_keeps_the_kind_of_key_given():
  params = {"w": jnp.zeros(3)}
  typed = bayesbinn(1e-3, 10, key=jax.random.key(0)).init(params).key
  assert jnp.issubdtype(typed.dtype, jax.dtypes.prng_key)
  raw = bayesbinn(1e-3, 10, key=0).init(params).key
  assert raw.dtype == jnp.uint32 and raw.shape == (2,)


@pytest.mark.parametrize("key", [1.5, True, jnp.zeros(2, jnp.float32), jnp.zeros(3, jnp.uint32), "0"])
def test_bad_key_is_refused(key):
  with pytest.raises(ValueError, match="key must be an int seed"):
    bayesbinn(1e-3, 10, key=key)


def test_num_samples_stacked_params_give_stacked_updates():
  k = 4
  tx = bayesbinn(1e-3, 100, num_samples=k, lambda_init=0.5)
  state = tx.init({"w": jnp.zeros((5, 3))})
  params = sample_relaxed(state.lam, jax.random.PRNGKey(0), 1.0, k)
  assert params["w"].shape == (k, 5, 3)
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
  assert updates["w"].shape == (k, 5, 3) and state.lam["w"].shape == (5, 3)
  new_params = optax.apply_updates(params, updates)
  # The K new samples are distinct draws.
  assert not np.allclose(new_params["w"][0], new_params["w"][1])


def test_init_takes_one_network_or_k_stacked_networks():
  tx = bayesbinn(1e-3, 100, num_samples=3, key=0)
  one = {"a": jnp.zeros((5, 2)), "b": jnp.zeros(())}
  stacked = jax.tree.map(lambda x: jnp.zeros((3, *x.shape), jnp.bfloat16), one)
  from_one, from_stacked = tx.init(one), tx.init(stacked)
  for a, b in zip(jax.tree.leaves(from_one), jax.tree.leaves(from_stacked), strict=True):
    np.testing.assert_array_equal(a, b)  # same lambda (float32), count, key
  assert from_stacked.lam["a"].shape == (5, 2) and from_stacked.lam["b"].shape == ()
  # K = 1: a leading axis is part of the network.
  assert bayesbinn(1e-3, 100).init(stacked).lam["a"].shape == (3, 5, 2)


def test_update_accepts_extra_arguments():
  tx = bayesbinn(1e-3, 10)
  state = tx.init({"w": jnp.zeros(3)})
  params = sample_relaxed(state.lam, jax.random.PRNGKey(0), 1.0)
  plain = tx.update({"w": jnp.ones(3)}, state, params)
  extra = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.asarray(1.0), loss=2.0)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(extra), strict=True):
    np.testing.assert_array_equal(a, b)


class TestCompositions:

  def test_multi_transform_binary_kernels_and_real_params(self):
    params = {"kernel": jnp.zeros((3, 2)), "scale": jnp.ones((2,))}
    labels = {"kernel": "binary", "scale": "real"}
    tx = optax.multi_transform(
        {"binary": bayesbinn(1e-3, 10, temperature=1e-10), "real": optax.adam(0.1)}, labels
    )
    state = tx.init(params)
    grads = {"kernel": jnp.ones((3, 2)), "scale": jnp.ones((2,))}
    updates, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert set(np.unique(np.abs(np.asarray(new["kernel"])))) == {1.0}
    np.testing.assert_allclose(new["scale"], 0.9, rtol=1e-5)

  def test_inject_hyperparams_changes_learning_rate_and_temperature(self):
    tx = optax.inject_hyperparams(bayesbinn)(learning_rate=0.1, train_set_size=1, temperature=1.0)
    state = tx.init({"w": jnp.zeros(())})
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1)
    state.hyperparams["learning_rate"] = jnp.asarray(0.5)
    inner = state.inner_state._replace(lam={"w": jnp.array(0.0)}, count=jnp.array(1))
    state = state._replace(inner_state=inner)
    # lambda = 0, w = 0, g = 1, N = 1, a later update: lambda' = -lr * (s g) = -0.5.
    _, state = jax.jit(tx.update)({"w": jnp.array(1.0)}, state, {"w": jnp.array(0.0)})
    assert float(state.inner_state.lam["w"]) == pytest.approx(-0.5)

  def test_apply_if_finite_skips_the_step_and_keeps_the_state(self):
    tx = optax.apply_if_finite(bayesbinn(1e-3, 10, momentum=0.9), max_consecutive_errors=3)
    params = {"w": jnp.zeros((4,))}
    state = tx.init(params)
    params = sample_relaxed(state.inner_state.lam, jax.random.PRNGKey(0), 1.0)
    updates, new_state = jax.jit(tx.update)({"w": jnp.array([1.0, jnp.nan, 0.0, 1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], 0.0)
    for field in ("lam", "momentum"):
      np.testing.assert_array_equal(getattr(new_state.inner_state, field)["w"],
                                    getattr(state.inner_state, field)["w"])
    np.testing.assert_array_equal(new_state.inner_state.key, state.inner_state.key)
    assert int(new_state.inner_state.count) == 0 and int(new_state.notfinite_count) == 1


class TestBadInput:

  @pytest.mark.parametrize(
      "kwargs, name",
      [
          (dict(learning_rate=0.0), "learning_rate"),
          (dict(learning_rate=-1e-3), "learning_rate"),
          (dict(temperature=0.0), "temperature"),
          (dict(temperature=-1.0), "temperature"),
          (dict(train_set_size=0), "train_set_size"),
          (dict(train_set_size=2.5), "train_set_size"),
          (dict(momentum=1.0), "momentum"),
          (dict(momentum=-0.1), "momentum"),
          (dict(num_samples=0), "num_samples"),
          (dict(kl_weight=-1.0), "kl_weight"),
          (dict(lambda_init_std=-1.0), "lambda_init_std"),
      ],
  )
  def test_bad_hyperparameter_names_the_argument(self, kwargs, name):
    args = dict(learning_rate=1e-3, train_set_size=10) | kwargs
    with pytest.raises(ValueError, match=name):
      bayesbinn(**args)

  def test_prior_with_other_tree_or_shapes(self):
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    with pytest.raises(ValueError, match="prior_lambda must have the tree structure"):
      bayesbinn(1e-3, 10, prior_lambda={"a": jnp.zeros((2, 3))}).init(params)
    with pytest.raises(ValueError, match=r"prior_lambda at \['b'\] has shape \(5,\)"):
      bayesbinn(1e-3, 10, prior_lambda={"a": jnp.zeros((2, 3)), "b": jnp.zeros(5)}).init(params)

  def test_missing_params(self):
    tx = bayesbinn(1e-3, 10)
    state = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="bayesbinn needs params"):
      tx.update({"w": jnp.zeros(3)}, state)

  def test_params_not_shaped_like_the_state(self):
    tx = bayesbinn(1e-3, 10)
    state = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"params at \['w'\] has shape \(4,\)"):
      tx.update({"w": jnp.zeros(4)}, state, {"w": jnp.zeros(4)})
    with pytest.raises(ValueError, match="num_samples=1 needs params"):
      tx.update({"w": jnp.zeros((2, 3))}, state, {"w": jnp.zeros((2, 3))})
    stacked = bayesbinn(1e-3, 10, num_samples=2)
    with pytest.raises(ValueError, match=r"num_samples=2 needs params of shape \(2, 3\)"):
      stacked.update({"w": jnp.zeros(3)}, stacked.init({"w": jnp.zeros(3)}), {"w": jnp.zeros(3)})

  def test_non_floating_leaf_is_named_at_init_and_update(self):
    tx = bayesbinn(1e-3, 10)
    params = {"w": jnp.zeros(3), "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(ValueError, match=r"params at \['step'\] has dtype int32.*multi_transform"):
      tx.init(params)
    state = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"grads at \['w'\] has dtype int32"):
      tx.update({"w": jnp.zeros(3, jnp.int32)}, state, {"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"params at \['w'\] has dtype int32"):
      tx.update({"w": jnp.zeros(3)}, state, {"w": jnp.zeros(3, jnp.int32)})

  def test_grads_not_shaped_like_params(self):
    tx = bayesbinn(1e-3, 10)
    state = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="grads"):
      tx.update({"v": jnp.zeros(3)}, state, {"w": jnp.zeros(3)})


def test_state_fields_are_the_public_api():
  assert BayesBiNNState._fields == ("count", "lam", "momentum", "prior_lam", "key", "sample_key", "notfinite_count")
