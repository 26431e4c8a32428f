"""The contracts a Flax or optax user relies on: any start trains, no shape guessing, strict args.

Each test names the wrong code it catches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import bayesbinn_jax as bb
from bayesbinn_jax.data import two_moons
from bayesbinn_jax.nn import ToyMLP
from bayesbinn_jax.optim.natural_gradient import natural_gradient_scale, saturated_scale
from bayesbinn_jax.optim.sampling import SATURATED_TEMPERATURE, sample_binary, sample_relaxed
from bayesbinn_jax.optim.noise import counter_uniform


def _moons_setup():
  moons = two_moons(seed=0)
  model = ToyMLP(outputs=2)
  x, y = moons.x_train, moons.y_train
  schedule = optax.piecewise_constant_schedule(1e-3, {1500: 0.1, 2500: 0.1})
  tx = bb.bayesbinn(schedule, train_set_size=len(x), momentum=0.99, lambda_init=15.0, key=0)
  params = jax.jit(model.init, static_argnames="train")(jax.random.key(0), x, train=False)["params"]
  return model, x, y, tx, params


def _loss(apply_fn, x, y):
  return lambda p: optax.softmax_cross_entropy_with_integer_labels(apply_fn({"params": p}, x, train=True), y).mean()


def _train_two_moons(key: jax.Array, from_sample: jax.Array) -> jax.Array:
  """The README's two-moons loop (3000 steps); the mode's train accuracy. It starts from the
  network's init (``TrainState.create``), or, where ``from_sample``, from a posterior sample
  (``bb.sample_params``; the optimizer state is the same: init reads only the shapes)."""
  model, x, y, _, params = _moons_setup()
  schedule = optax.piecewise_constant_schedule(1e-3, {1500: 0.1, 2500: 0.1})
  tx = bb.bayesbinn(schedule, train_set_size=len(x), momentum=0.99, lambda_init=15.0, key=key)
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  sampled = bb.sample_params(state.opt_state, params, jax.random.fold_in(key, 1), temperature=1.0)
  state = state.replace(params=jax.tree.map(lambda s, p: jnp.where(from_sample, s, p), sampled, params))

  def one(state, _):
    return state.apply_gradients(grads=jax.grad(_loss(state.apply_fn, x, y))(state.params)), None

  state = jax.lax.scan(one, state, None, length=3000)[0]
  mode = bb.mode_params(state.opt_state, state.params)
  return (model.apply({"params": mode}, x, train=False).argmax(-1) == y).mean()


def test_every_documented_start_trains_two_moons():
  # Catches an update that takes the first gradient's scale from params that are no sample
  # (TrainState.create on the network's init): lambda reached 6.8e7 and the mode 80%. A single
  # seed at tau = 1 swings by 10 points either way, so six seeds run at once (vmapped) and
  # their median is held to the README's 95% (measured: 0.985 create, 0.995 sample on 8 seeds).
  # Both starts run in one compiled program (12 lanes: 2 starts x 6 seeds).
  keys = jax.random.split(jax.random.key(0), 6)
  starts = jnp.array([False, True])
  run = jax.vmap(jax.vmap(_train_two_moons, in_axes=(0, None)), in_axes=(None, 0))
  accuracies = jax.jit(run)(keys, starts)
  for start, row in zip(("train_state_create", "sample_params"), accuracies):
    assert float(jnp.median(row)) >= 0.95, (start, row)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_first_update_takes_the_scale_from_the_states_own_sample(jit):
  # Catches the first update reading s from the params (the network's init): the update must
  # equal the one taken at the sample the state holds, whatever the params are.
  model, x, y, tx, params = _moons_setup()
  opt_state = tx.init(params)
  held = sample_relaxed(opt_state.lam, opt_state.sample_key, 1.0)
  grads = jax.jit(jax.grad(_loss(model.apply, x, y)))(params)  # the input; the update is tested
  update = jax.jit(tx.update) if jit else tx.update
  _, from_init = update(grads, opt_state, params)
  _, from_held = update(grads, opt_state, held)
  for a, b in zip(jax.tree.leaves(from_init.lam), jax.tree.leaves(from_held.lam)):
    np.testing.assert_array_equal(a, b)
  assert max(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(from_init.lam)) < 100


def test_later_updates_take_the_scale_from_the_params():
  # Catches an update that always redraws the held sample: a caller's own sample (count > 0)
  # must be the point the scale is taken at. lambda = 0, w = 0.6, g = 1, N = 1, lr = 1:
  # s = (1 - 0.36 + 1e-10) / (1 + 1e-10), lambda' = -s.
  tx = bb.bayesbinn(1.0, 1, temperature=1.0)
  state = tx.init({"w": jnp.zeros(())})._replace(lam={"w": jnp.array(0.0)}, count=jnp.array(3))
  _, state = tx.update({"w": jnp.array(1.0)}, state, {"w": jnp.array(0.6)})
  assert float(state.lam["w"]) == pytest.approx(-0.64, rel=1e-6)


def _multi_transform_k3():
  labels = {"kernel": "binary", "scale": "real"}
  tx = optax.multi_transform({"binary": bb.bayesbinn(1e-2, 10, num_samples=3, lambda_init=1.0),
                              "real": optax.adam(1e-2)}, labels)
  one = {"kernel": jnp.zeros((2, 2)), "scale": jnp.zeros((2,))}
  stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (3, *p.shape)), one)
  state = tx.init(stacked)
  params = bb.sample_params(state, one, jax.random.key(1), 3, temperature=1.0)
  params["scale"] = jnp.arange(6.0).reshape(3, 2)  # the K copies as Adam may leave them
  return tx, state, params


def test_mode_and_mean_give_one_networks_shapes_for_every_leaf():
  # Catches helpers that leave the leaves BayesBiNN does not train stacked (3, 2).
  _, state, params = _multi_transform_k3()
  for helper in (bb.mode_params, bb.mean_params):
    out = helper(state, params)
    assert out["kernel"].shape == (2, 2) and out["scale"].shape == (2,)
    np.testing.assert_array_equal(out["scale"], [0.0, 1.0])  # the first network's
  assert set(np.unique(np.asarray(bb.mode_params(state, params)["kernel"]))) <= {-1.0, 1.0}


def test_sample_params_broadcasts_one_network_of_the_other_leaves():
  _, state, params = _multi_transform_k3()
  drawn = bb.sample_params(state, params, jax.random.key(2), 4)
  assert drawn["kernel"].shape == (4, 2, 2) and drawn["scale"].shape == (4, 2)
  np.testing.assert_array_equal(drawn["scale"], np.tile([0.0, 1.0], (4, 1)))
  single = bb.sample_params(state, params, jax.random.key(2))
  assert single["scale"].shape == (2,)


def test_helpers_refuse_a_leaf_without_the_stacked_axis():
  _, state, params = _multi_transform_k3()
  params["scale"] = jnp.zeros((2,))
  with pytest.raises(ValueError, match=r"params at \['scale'\] has shape \(2,\).*3 networks stacked"):
    bb.mode_params(state, params)


def test_update_refuses_params_that_do_not_fit_lambda_exactly():
  # Catches guessing the layout from shapes: with K = 1, stacked params of a leading 1 are refused.
  tx = bb.bayesbinn(1e-3, 10)
  state = tx.init({"w": jnp.zeros(3)})
  with pytest.raises(ValueError, match=r"num_samples=1 needs params of shape \(3,\)"):
    tx.update({"w": jnp.zeros((1, 3))}, state, {"w": jnp.zeros((1, 3))})


@pytest.mark.parametrize("bad", [None, "100", True, 1.5, 0, -3, np.float32(2.5)])
def test_train_set_size_accepts_positive_integers_only(bad):
  with pytest.raises(ValueError, match="train_set_size must be a positive integer"):
    bb.bayesbinn(1e-3, train_set_size=bad)


@pytest.mark.parametrize("good", [1, 60000, np.int64(7), jnp.asarray(100.0)])
def test_train_set_size_takes_integers_of_any_kind(good):
  bb.bayesbinn(1e-3, train_set_size=good)


def test_tree_map_params_reaches_lambda_momentum_and_prior():
  # Catches init tripping on optax's placeholder params (the prior check did) and a state
  # whose params-shaped fields are not mapped.
  params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  prior = jax.tree.map(jnp.ones_like, params)
  tx = bb.bayesbinn(1e-3, 10, momentum=0.9, prior_lambda=prior)
  state = tx.init(params)
  mapped = optax.tree_map_params(tx, lambda p: jnp.full_like(p, 7.0), state)
  for field in (mapped.lam, mapped.momentum, mapped.prior_lam):
    assert all(bool(jnp.all(leaf == 7.0)) for leaf in jax.tree.leaves(field))
  assert int(mapped.count) == 0
  np.testing.assert_array_equal(jax.random.key_data(mapped.key), jax.random.key_data(state.key))
  specs = optax.tree_map_params(tx, lambda _, spec: spec, state, jax.tree.map(lambda _: "spec", params),
                                transform_non_params=lambda _: None)
  assert specs.lam == {"w": "spec", "b": "spec"} and specs.count is None


@pytest.mark.parametrize("tau", [1e-10, SATURATED_TEMPERATURE])
def test_saturated_sampler_equals_the_tanh_form(tau):
  # The compare u > sigmoid(-2 lambda) must give the bits of tanh((lambda + delta) / tau):
  # catches a wrong threshold (sigmoid(2 lambda)) or a sign flip.
  lam = jnp.asarray(np.random.default_rng(0).normal(0, 3, 1_000_000), jnp.float32)
  key = jax.random.key(5)
  fast = sample_relaxed({"w": lam}, key, tau)["w"]
  u = counter_uniform(jax.random.split(key, 1)[0], lam.shape)
  tanh_form = jnp.tanh((lam + 0.5 * jnp.log(u / (1 - u))) / tau)
  assert int(jnp.sum(fast != tanh_form)) <= 1  # rounding at lambda + delta ~ 0, about 1e-7 a weight
  np.testing.assert_array_equal(fast, sample_binary({"w": lam}, key)["w"])
  p_plus = float(jnp.mean(fast[jnp.abs(lam - 0.5) < 0.05] > 0))
  assert p_plus == pytest.approx(float(jax.nn.sigmoid(1.0)), abs=0.01)


def test_saturated_update_equals_the_general_formula_at_plus_minus_one():
  # saturated_scale must be natural_gradient_scale at w = +-1, and the saturated update must
  # equal the same step taken through the general path (a temperature just above the threshold
  # scaled back): catches a wrong guard or tau in the fast path.
  lam = jnp.asarray(np.random.default_rng(1).normal(0, 5, 1000), jnp.float32)
  ones = jnp.where(lam > 0, 1.0, -1.0)
  np.testing.assert_allclose(saturated_scale(lam, 1e-10), natural_gradient_scale(ones, lam, 1e-10), rtol=1e-6)
  tx = bb.bayesbinn(1e-4, 100, temperature=1e-10)
  state = tx.init({"w": jnp.zeros(1000)})._replace(lam={"w": lam})
  params = sample_relaxed(state.lam, state.sample_key, 1e-10)
  grads = {"w": jnp.asarray(np.random.default_rng(2).normal(0, 1e-3, 1000), jnp.float32)}
  _, new = jax.jit(tx.update)(grads, state, params)
  s = np.asarray(natural_gradient_scale(params["w"], lam, 1e-10), np.float64)
  expected = np.asarray(lam, np.float64) - 1e-4 * (100 * s * np.asarray(grads["w"]) + np.asarray(lam))
  np.testing.assert_allclose(new.lam["w"], expected, rtol=1e-5)


def test_update_refuses_params_of_another_tree_structure():
  # Catches zipping params and lambda leaf by leaf when their trees differ (same leaf count,
  # other keys): the update would pair each gradient with another weight's lambda.
  tx = bb.bayesbinn(1e-3, 10)
  state = tx.init({"a": jnp.zeros(3), "b": jnp.zeros(3)})
  other = {"a": jnp.zeros(3), "c": jnp.zeros(3)}
  with pytest.raises(ValueError, match="tree structure of the params init got"):
    tx.update(other, state, other)
