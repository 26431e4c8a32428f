"""Each optimizer as the engine sees it: starting params, evaluated network, posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesbinn_jax.experiments.config import build_config, method_of
from bayesbinn_jax.nn import MnistMLP, ToyMLP
from bayesbinn_jax.train.engine import create_train_state, make_predict_mc, make_train_step
from bayesbinn_jax.optim import BayesBiNNState, PMFState
from bayesbinn_jax.optim.nested import find_state, nonfinite_count
from bayesbinn_jax.train.methods import OPTIMIZERS, build_method

X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 2)), jnp.float32)
Y = jnp.asarray(np.arange(16) % 2, jnp.int32)


def make(name, **overrides):
  config = build_config("two-moons", name).replace(**overrides)
  method = method_of(config, steps_per_epoch=1, train_set_size=16, key=jax.random.key(0))
  state = create_train_state(ToyMLP(quantizer=method.quantizer), method, X[:1], 0)
  return method, state


def leaves(tree):
  return np.concatenate([np.ravel(l) for l in jax.tree.leaves(tree)])


def test_bayesbinn_starts_from_k_relaxed_samples_and_evaluates_sign_lambda():
  method, state = make("bayesbinn")
  assert method.num_samples == 5 and method.quantizer == "none"
  kernel = state.params["BinaryDense_0"]["kernel"]
  assert kernel.shape == (5, 2, 64) and np.all(np.abs(kernel) <= 1)
  lam = find_state(state.opt_state, BayesBiNNState).lam
  mode = method.mode_params(state.opt_state, state.params)
  np.testing.assert_array_equal(leaves(mode), np.where(leaves(lam) > 0, 1.0, -1.0))
  assert method.posterior(state.opt_state) is lam


def test_bop_starts_binary_and_pmf_from_tanh_of_the_latent():
  _, state = make("bop")
  assert set(np.unique(leaves(state.params))) <= {-1.0, 1.0}
  method, state = make("pmf")
  latent = find_state(state.opt_state, PMFState).latent
  np.testing.assert_allclose(leaves(state.params), np.tanh(leaves(latent)), rtol=1e-6)
  np.testing.assert_array_equal(leaves(method.mode_params(state.opt_state, state.params)),
                                np.where(leaves(latent) >= 0, 1.0, -1.0))


@pytest.mark.parametrize("name", ["ste", "adam"])
def test_ste_and_adam_train_their_own_params(name):
  method, state = make(name)
  assert method.quantizer == ("ste" if name == "ste" else "none")
  assert method.mode_params(state.opt_state, state.params) is state.params
  assert method.posterior is None
  with pytest.raises(ValueError, match="has no posterior"):
    make_predict_mc(method, "classification", 3)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_one_jitted_step_serves_every_optimizer(name):
  # Learning itself is checked end to end on two moons in test_cli.py.
  method, state = make(name)
  # BayesBiNN's lambda = +-15 makes every sample +-1 at first: its change is in lambda.
  trained = ((lambda st: find_state(st.opt_state, BayesBiNNState).lam) if name == "bayesbinn"
             else (lambda st: st.params))
  before = leaves(trained(state))
  step = make_train_step(method, "classification")
  for _ in range(3):
    state, metrics = step(state, X, Y)
    assert np.isfinite(float(metrics["loss"])) and 0 <= float(metrics["accuracy"]) <= 1
  assert int(state.step) == 3
  assert not np.array_equal(leaves(trained(state)), before)
  logged = {"bop": {"flip_fraction"}, "pmf": {"beta"}}.get(name, set())
  assert set(metrics) == {"loss", "accuracy", "nonfinite_streak"} | logged
  assert int(metrics["nonfinite_streak"]) == 0
  if name == "bop":
    assert 0.0 <= float(metrics["flip_fraction"]) <= 1.0
  if name == "pmf":
    assert float(metrics["beta"]) == 1.0  # grows by rho only every 100 steps


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="optimizer must be one of"):
    build_method({"lr": 0.1}, epochs=1, steps_per_epoch=1, train_set_size=1, key=jax.random.key(0))


def test_a_nonfinite_step_is_skipped_and_leaves_the_state_unchanged():
  method, state = make("bayesbinn")
  step = make_train_step(method, "classification")
  before = jax.tree.map(np.array, state.opt_state)  # the step donates its input state
  state, metrics = step(state, X.at[0, 0].set(jnp.nan), Y)
  assert not np.isfinite(float(metrics["loss"]))
  inner_before, inner_after = (find_state(s, BayesBiNNState) for s in (before, state.opt_state))
  for field in ("lam", "momentum", "key", "count"):  # notfinite_count is 1 now
    np.testing.assert_array_equal(leaves(getattr(inner_after, field)), leaves(getattr(inner_before, field)))
  assert int(nonfinite_count(state.opt_state)) == 1 and int(metrics["nonfinite_streak"]) == 1


@pytest.mark.parametrize("train_samples", [1, 3])
def test_bayesbinn_step_keeps_no_copy_of_the_state(train_samples):
  # The donated step must write lambda and the next sample in place: XLA's
  # weight-sized temporaries are the K gradients. A copy of lambda or params (what
  # an unlucky fusion of the update forces, docs/architecture.md) adds one more.
  config = build_config("mnist", "bayesbinn").replace(train_samples=train_samples)
  method = method_of(config, steps_per_epoch=1, train_set_size=100, key=jax.random.key(0))
  model = MnistMLP(hidden=256, depth=2, quantizer=method.quantizer)
  x = jnp.zeros((4, 28, 28))
  state = create_train_state(model, method, x[:1], 0)
  compiled = make_train_step(method, "classification").lower(state, x, jnp.zeros(4, jnp.int32)).compile()
  weight_bytes = 4 * sum(np.size(l) for l in jax.tree.leaves(find_state(state.opt_state, BayesBiNNState).lam))
  temp = compiled.memory_analysis().temp_size_in_bytes
  # With K > 1 the scale's denominator 1 / (1 - tanh(lambda)^2), shared by the K samples,
  # is kept once (measured: 1.02 x the weights for K = 1, 4.06 x for K = 3).
  allowed = train_samples + (0.5 if train_samples == 1 else 1.5)
  assert temp < allowed * weight_bytes, (temp / weight_bytes, allowed)
  assert find_state(state.opt_state, BayesBiNNState).momentum is None  # the MNIST preset's beta = 0


def test_bayesbinn_lambda_dtype_comes_from_the_config_and_the_key_is_stored_raw():
  hyper = build_config("two-moons", "bayesbinn").hyper
  method = build_method(hyper, epochs=1, steps_per_epoch=1, train_set_size=16, key=jax.random.key(3),
                        lam_dtype="bfloat16")
  state = method.tx.init({"w": jnp.zeros(3)})
  assert state.lam["w"].dtype == jnp.bfloat16
  # A typed key is stored as its raw data (Orbax checkpoints hold uint32 arrays).
  np.testing.assert_array_equal(state.key, jax.random.split(jax.random.key_data(jax.random.key(3)))[0])
  with pytest.raises(ValueError, match="lam_dtype must be a floating dtype"):
    build_method(hyper, epochs=1, steps_per_epoch=1, train_set_size=16, key=jax.random.key(3), lam_dtype="int8")
