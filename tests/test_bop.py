"""Tests of bayesbinn_jax.optim.bop: bop, BopState and binarize_params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.bop import BopState, binarize_params, bop

from optim_helpers import apply_sequence, train_two_moons, two_moons_accuracy, two_moons_mlp


@pytest.mark.parametrize("jit", [False, True])
def test_bop_two_steps_hand_computed(jit):
  w = jnp.array([1.0, -1.0, 1.0, -1.0], jnp.float32)
  grads_seq = [
      jnp.array([0.4, -0.4, 0.1, 0.3], jnp.float32),
      jnp.array([0.0, 0.0, 0.3, -0.1], jnp.float32),
  ]
  # gamma = 0.5, threshold = 0.1.
  # Step 1: m = 0.5 * 0 + 0.5 g = [0.2, -0.2, 0.05, 0.15]
  #         w * m = [0.2, 0.2, 0.05, -0.15] > 0.1 -> flip [T, T, F, F]
  #         updates = [-2, 2, 0, 0], w = [-1, 1, 1, -1], flip_fraction = 2/4.
  # Step 2: m = 0.5 m + 0.5 g = [0.1, -0.1, 0.175, 0.025]
  #         w * m = [-0.1, -0.1, 0.175, -0.025] -> flip [F, F, T, F]
  #         w = [-1, 1, -1, -1], flip_fraction = 1/4.
  (w1, s1), (w2, s2) = apply_sequence(bop(threshold=0.1, gamma=0.5), w, grads_seq, jit=jit)
  assert isinstance(s1, BopState)
  np.testing.assert_array_equal(np.asarray(w1), [-1.0, 1.0, 1.0, -1.0])
  np.testing.assert_allclose(np.asarray(s1.momentum), [0.2, -0.2, 0.05, 0.15], rtol=1e-6)
  assert float(s1.flip_fraction) == 0.5
  assert int(s1.count) == 1
  np.testing.assert_array_equal(np.asarray(w2), [-1.0, 1.0, -1.0, -1.0])
  np.testing.assert_allclose(
      np.asarray(s2.momentum), [0.1, -0.1, 0.175, 0.025], rtol=1e-6
  )
  assert float(s2.flip_fraction) == 0.25
  assert int(s2.count) == 2


def test_bop_updates_are_minus_two_w_or_zero():
  tx = bop(threshold=0.0, gamma=1.0)
  w = jnp.array([1.0, -1.0, 1.0, -1.0])
  # gamma = 1: m = g; flip where w * g > 0: [T, T, F, F].
  updates, state = tx.update(jnp.array([1.0, -2.0, -3.0, 4.0]), tx.init(w), w)
  np.testing.assert_array_equal(np.asarray(updates), [-2.0, 2.0, 0.0, 0.0])
  assert updates.dtype == w.dtype
  assert state.flip_fraction.dtype == jnp.float32


def _numpy_bop(params, grads_seq, threshold_fn, gamma_fn):
  """Independent float64 transcription of Bop over a dict of arrays."""
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in w.items()}
  total = sum(v.size for v in w.values())
  history, margin = [], np.inf
  for count, grads in enumerate(grads_seq):
    tau, gamma = threshold_fn(count), gamma_fn(count)
    flipped = 0
    new_w = {}
    for k in w:
      m[k] = (1 - gamma) * m[k] + gamma * np.asarray(grads[k], np.float64)
      agree = w[k] * m[k]
      margin = min(margin, float(np.min(np.abs(agree - tau))))
      flip = agree > tau
      flipped += int(flip.sum())
      new_w[k] = np.where(flip, -w[k], w[k])
    w = new_w
    history.append(({k: v.copy() for k, v in w.items()},
                    {k: v.copy() for k, v in m.items()}, flipped / total))
  return history, margin


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("schedules", [False, True])
def test_bop_matches_numpy(jit, schedules):
  rng = np.random.default_rng(0)
  params = {
      "a": rng.choice([-1.0, 1.0], (5, 4)).astype(np.float32),
      "b": {"c": rng.choice([-1.0, 1.0], (7,)).astype(np.float32)},
  }
  flat = lambda tree: {"a": tree["a"], "c": tree["b"]["c"]}
  grads_seq = [
      jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
      for _ in range(8)
  ]
  # A zero gradient only shrinks |m|: nothing that did not flip can flip then.
  grads_seq[4] = jax.tree.map(np.zeros_like, grads_seq[4])
  if schedules:
    threshold = optax.linear_schedule(0.05, 0.2, transition_steps=8)
    gamma = optax.exponential_decay(0.5, transition_steps=3, decay_rate=0.5)
    threshold_fn = lambda count: 0.05 + 0.15 * min(count, 8) / 8
    gamma_fn = lambda count: 0.5 * 0.5 ** (count / 3)
  else:
    threshold, gamma = 0.1, 0.3
    threshold_fn, gamma_fn = (lambda count: 0.1), (lambda count: 0.3)
  expected, margin = _numpy_bop(
      flat(params), [flat(g) for g in grads_seq], threshold_fn, gamma_fn
  )
  assert margin > 1e-5  # no decision sits on the threshold
  fractions = [f for _, _, f in expected]
  assert max(fractions) > 0 and min(fractions) == 0  # flips and a no-flip step

  got = apply_sequence(
      bop(threshold, gamma), jax.tree.map(jnp.asarray, params), grads_seq, jit=jit
  )
  for (g_params, g_state), (e_w, e_m, e_fraction) in zip(got, expected):
    for k, v in flat(g_params).items():
      np.testing.assert_array_equal(np.asarray(v), e_w[k])
    for k, v in flat(g_state.momentum).items():
      np.testing.assert_allclose(np.asarray(v), e_m[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(g_state.flip_fraction), e_fraction, rtol=1e-6)
  assert int(got[-1][1].count) == 8


def test_bop_params_stay_binary_over_many_steps():
  params = {
      "x": binarize_params(jax.random.normal(jax.random.PRNGKey(0), (16, 8))),
      "y": binarize_params(jax.random.normal(jax.random.PRNGKey(1), (8,))),
  }
  tx = bop(threshold=1e-2, gamma=0.1)

  @jax.jit
  def train(params, key):
    def step(carry, key):
      params, state = carry
      keys = jax.random.split(key, 2)
      grads = {"x": jax.random.normal(keys[0], (16, 8)),
               "y": jax.random.normal(keys[1], (8,))}
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), state.flip_fraction

    keys = jax.random.split(key, 300)
    return jax.lax.scan(step, (params, tx.init(params)), keys)

  (final, state), fractions = train(params, jax.random.PRNGKey(2))
  for leaf in jax.tree.leaves(final):
    assert set(np.unique(np.asarray(leaf)).tolist()) <= {-1.0, 1.0}
  fractions = np.asarray(fractions)
  assert fractions.sum() > 1.0  # many flips happened over the run
  assert np.all((fractions >= 0) & (fractions <= 1))
  assert int(state.count) == 300


def test_binarize_params():
  params = {
      "a": jnp.array([0.3, -0.2, 0.0, -0.0, 1e-30, -1e-30], jnp.float32),
      "b": jnp.array([[-2.0, 0.5]], jnp.bfloat16),
  }
  out = binarize_params(params)
  np.testing.assert_array_equal(np.asarray(out["a"]), [1, -1, 1, 1, 1, -1])
  np.testing.assert_array_equal(np.asarray(out["b"], np.float32), [[-1, 1]])
  assert out["a"].dtype == jnp.float32 and out["b"].dtype == jnp.bfloat16


def test_bop_requires_params():
  tx = bop(threshold=0.0, gamma=0.5)
  w = jnp.ones(3)
  with pytest.raises(ValueError, match="params"):
    tx.update(w, tx.init(w))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(threshold=-1e-8, gamma=0.1), "threshold"),
        (dict(threshold=float("nan"), gamma=0.1), "threshold"),
        (dict(threshold=1e-8, gamma=0.0), "gamma"),
        (dict(threshold=1e-8, gamma=-0.1), "gamma"),
        (dict(threshold=1e-8, gamma=1.5), "gamma"),
    ],
)
def test_bop_rejects_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    bop(**kwargs)


def test_bop_accepts_edge_hyperparameters_and_schedules():
  bop(threshold=0.0, gamma=1.0)
  bop(threshold=optax.constant_schedule(1e-8), gamma=optax.constant_schedule(1e-3))


def test_bop_multi_transform_recipe():
  # The recipe of the module docstring: Bop on kernels, Adam on the rest.
  rng = np.random.default_rng(4)
  params = {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)},
      "bn": {"scale": jnp.asarray(rng.normal(size=3), jnp.float32)},
  }
  labels = jax.tree.map_with_path(
      lambda path, _: "binary" if path[-1].key == "kernel" else "real", params
  )
  tx = optax.multi_transform(
      {"binary": bop(threshold=0.05, gamma=0.5), "real": optax.adam(0.1)}, labels
  )
  params = jax.tree.map(
      lambda label, p: binarize_params(p) if label == "binary" else p, labels, params
  )
  np.testing.assert_array_equal(
      np.abs(np.asarray(params["dense"]["kernel"])), np.ones((4, 3))
  )
  grads_seq = [
      jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
      for _ in range(5)
  ]
  got_params, got_state = apply_sequence(tx, params, grads_seq, jit=True)[-1]

  kernel_hist = apply_sequence(
      bop(threshold=0.05, gamma=0.5),
      params["dense"]["kernel"],
      [g["dense"]["kernel"] for g in grads_seq],
      jit=False,
  )
  scale_hist = apply_sequence(
      optax.adam(0.1), params["bn"]["scale"], [g["bn"]["scale"] for g in grads_seq], jit=False
  )
  np.testing.assert_array_equal(
      np.asarray(got_params["dense"]["kernel"]), np.asarray(kernel_hist[-1][0])
  )
  np.testing.assert_allclose(
      np.asarray(got_params["bn"]["scale"]), np.asarray(scale_hist[-1][0]), rtol=1e-5
  )
  # flip_fraction counts the binary kernels only.
  fraction = optax.tree.get(got_state, "flip_fraction")
  assert float(fraction) == float(kernel_hist[-1][1].flip_fraction)
  assert any(float(s.flip_fraction) > 0 for _, s in kernel_hist)


def test_bop_inject_hyperparams():
  rng = np.random.default_rng(5)
  w = jnp.asarray(rng.choice([-1.0, 1.0], 10), jnp.float32)
  grads_seq = [jnp.asarray(rng.normal(size=10), jnp.float32) for _ in range(4)]
  tx = optax.inject_hyperparams(bop)(threshold=0.1, gamma=0.5)
  got = apply_sequence(tx, w, grads_seq, jit=True)
  want = apply_sequence(bop(threshold=0.1, gamma=0.5), w, grads_seq, jit=False)
  for (g, _), (e, _) in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
  assert float(optax.tree.get(got[-1][1], "flip_fraction")) == float(
      want[-1][1].flip_fraction
  )

  # An injected threshold above every |m| stops all flips.
  state = tx.init(w)
  state.hyperparams["threshold"] = jnp.asarray(1e3)
  updates, state = jax.jit(tx.update)(grads_seq[0], state, w)
  np.testing.assert_array_equal(np.asarray(updates), np.zeros(10))
  assert float(optax.tree.get(state, "flip_fraction")) == 0.0


@pytest.mark.slow
def test_bop_trains_two_moons():
  model, params = two_moons_mlp(quantizer="none")
  params, _, fractions = train_two_moons(
      model,
      bop(threshold=1e-6, gamma=1e-3),
      binarize_params(params),
      record=lambda opt_state: opt_state.flip_fraction,
  )
  assert float(np.sum(fractions)) > 0
  for leaf in jax.tree.leaves(params):
    assert set(np.unique(np.asarray(leaf)).tolist()) <= {-1.0, 1.0}
  accuracy = two_moons_accuracy(model, params)
  assert accuracy >= 0.9


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_params_that_are_not_binary_are_binarised_by_the_update(jit):
  # Catches Bop's -2w update on float params (the network's init): after 20 steps no weight
  # was +-1 and nothing said so. Now the first update leaves every weight at +-1.
  import warnings as _warnings
  from bayesbinn_jax.optim.bop import NotBinaryParamsWarning
  tx = bop(threshold=0.0, gamma=1.0)
  params = {"w": jnp.array([0.3, -0.2, 0.0, 1.0])}
  state = tx.init(params)
  grads = {"w": jnp.array([1.0, 1.0, -1.0, -1.0])}
  update = jax.jit(tx.update) if jit else tx.update
  with _warnings.catch_warnings(record=True) as caught:
    _warnings.simplefilter("always")
    updates, _ = update(grads, state, params)
  new = optax.apply_updates(params, updates)
  # signs [1, -1, 1, 1]; m = g; flip where sign * m > 0: [True, False, False, False]. The first
  # step lands within one ulp of +-1 (0.3 + (-1 - 0.3) rounds to -0.99999994 in float32); the
  # next one, whose target - w is exact, leaves every weight exactly +-1.
  np.testing.assert_allclose(new["w"], [-1.0, -1.0, 1.0, 1.0], rtol=0, atol=1.2e-7)
  state = tx.init(new)
  updates, _ = update({"w": jnp.zeros(4)}, state, new)
  np.testing.assert_array_equal(optax.apply_updates(new, updates)["w"], [-1.0, -1.0, 1.0, 1.0])
  warned = [w for w in caught if issubclass(w.category, NotBinaryParamsWarning)]
  assert (len(warned) == 1 and "params at ['w'] are not +-1" in str(warned[0].message)) if not jit else not warned
