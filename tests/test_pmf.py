"""Tests of bayesbinn_jax.optim.pmf: pmf, PMFState and the helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.pmf import (
    PMFState,
    pmf,
    pmf_lr_schedule,
    pmf_mode,
    pmf_weights,
)

from optim_helpers import apply_sequence, train_two_moons, two_moons_accuracy, two_moons_mlp


def _run(tx, latent, grads_seq, jit):
  """Starts from pmf_weights(init state); returns (params, state) per step."""
  state = tx.init(latent)
  return apply_sequence(tx, pmf_weights(state), grads_seq, jit=jit, state=state)


@pytest.mark.parametrize("jit", [False, True])
def test_pmf_one_step_hand_computed(jit):
  u = jnp.array([0.5, -1.0, 0.0], jnp.float32)
  g = jnp.array([1.0, 2.0, -0.5], jnp.float32)
  # beta = 1: w = tanh(u) = [0.46211716, -0.76159416, 0]
  # 1 - w^2 = [0.78644773, 0.41997434, 1]
  # d = g * 1 * (1 - w^2) + 0.1 u = [0.83644773, 0.73994868, -0.5]
  # first Adam step = d / (|d| + 1e-8) ~ [1, 1, -1]
  # u' = u - 0.01 * step = [0.49, -1.01, 0.01]
  # beta_interval = 1: beta' = min(2 * 1, 1e4) = 2
  # w' = tanh(2 u') = [0.7530659, -0.96541369, 0.01999733]
  tx = pmf(0.01, rho=2.0, beta_interval=1, weight_decay=0.1)
  ((w1, s1),) = _run(tx, u, [g], jit)
  assert isinstance(s1, PMFState)
  np.testing.assert_allclose(np.asarray(s1.latent), [0.49, -1.01, 0.01], atol=1e-6)
  assert float(s1.beta) == 2.0
  assert int(s1.count) == 1
  np.testing.assert_allclose(
      np.asarray(w1), [0.7530659, -0.96541369, 0.01999733], atol=2e-6
  )


def test_pmf_init_and_helpers():
  params = {"k": jnp.array([0.5, -2.0, 0.0, -0.0], jnp.float32)}
  tx = pmf(1e-3, rho=1.2)
  state = tx.init(params)
  np.testing.assert_array_equal(np.asarray(state.latent["k"]), np.asarray(params["k"]))
  assert float(state.beta) == 1.0 and int(state.count) == 0
  np.testing.assert_allclose(
      np.asarray(pmf_weights(state)["k"]), np.tanh([0.5, -2.0, 0.0, 0.0]), rtol=1e-6
  )
  np.testing.assert_array_equal(np.asarray(pmf_mode(state)["k"]), [1, -1, 1, 1])
  # Nested states (chain, inject_hyperparams) are found too.
  chained = optax.chain(optax.identity(), pmf(1e-3, rho=1.2)).init(params)
  np.testing.assert_array_equal(
      np.asarray(pmf_mode(chained)["k"]), np.asarray(pmf_mode(state)["k"])
  )
  with pytest.raises(ValueError, match="PMFState"):
    pmf_weights(optax.adam(1e-3).init(params))


def test_pmf_update_replaces_params_by_tanh_beta_u():
  # Whatever params the network used, params + updates = tanh(beta' u').
  tx = pmf(0.1, rho=3.0, beta_interval=1)
  u = jnp.array([0.3, -0.7], jnp.float32)
  state = tx.init(u)
  odd_params = jnp.array([5.0, -5.0], jnp.float32)
  updates, state = tx.update(jnp.array([1.0, 1.0]), state, odd_params)
  new = optax.apply_updates(odd_params, updates)
  np.testing.assert_allclose(
      np.asarray(new), np.tanh(3.0 * np.asarray(state.latent)), atol=1e-6
  )
  np.testing.assert_allclose(
      np.asarray(new), np.asarray(pmf_weights(state)), atol=1e-6
  )


def _numpy_pmf(u0, grads_seq, lr_fn, rho, beta_interval, beta_max, wd,
               b1=0.9, b2=0.999, eps=1e-8):
  """Independent float64 transcription of PMF with Adam on u."""
  u = {k: np.asarray(v, np.float64) for k, v in u0.items()}
  m = {k: np.zeros_like(v) for k, v in u.items()}
  v = {k: np.zeros_like(x) for k, x in u.items()}
  beta = 1.0
  history = []
  for t, grads in enumerate(grads_seq, start=1):
    lr = lr_fn(t - 1)
    for k in u:
      w = np.tanh(beta * u[k])
      d = np.asarray(grads[k], np.float64) * beta * (1 - w**2) + wd * u[k]
      m[k] = b1 * m[k] + (1 - b1) * d
      v[k] = b2 * v[k] + (1 - b2) * d * d
      u[k] = u[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    if t % beta_interval == 0:
      beta = min(beta * rho, beta_max)
    history.append(({k: x.copy() for k, x in u.items()}, beta,
                    {k: np.tanh(beta * x) for k, x in u.items()}))
  return history


@pytest.mark.parametrize("jit", [False, True])
def test_pmf_matches_numpy(jit):
  rng = np.random.default_rng(0)
  params = {
      "a": rng.normal(size=(3, 4)).astype(np.float32),
      "b": rng.normal(size=(5,)).astype(np.float32) * 0.1,
  }
  grads_seq = [
      {k: rng.normal(size=p.shape).astype(np.float32) for k, p in params.items()}
      for _ in range(10)
  ]
  # lr 0.05 for counts 0-3, 0.01 for 4-7, 0.002 for 8-9; beta grows after
  # steps 3, 6, 9: 1 -> 1.5 -> min(2.25, 2) = 2 -> min(3, 2) = 2.
  tx = pmf(
      pmf_lr_schedule(0.05, decay=0.2, every=4),
      rho=1.5,
      beta_interval=3,
      beta_max=2.0,
      weight_decay=0.05,
  )
  expected = _numpy_pmf(
      params, grads_seq, lambda c: 0.05 * 0.2 ** (c // 4), 1.5, 3, 2.0, 0.05
  )
  assert [b for _, b, _ in expected] == [1, 1, 1.5, 1.5, 1.5, 2, 2, 2, 2, 2]
  got = _run(tx, jax.tree.map(jnp.asarray, params), grads_seq, jit)
  for (g_params, g_state), (e_u, e_beta, e_w) in zip(got, expected):
    assert float(g_state.beta) == e_beta
    for k in params:
      np.testing.assert_allclose(np.asarray(g_state.latent[k]), e_u[k], rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(np.asarray(g_params[k]), e_w[k], rtol=1e-4, atol=1e-5)
  assert int(got[-1][1].count) == 10


def test_pmf_default_beta_interval_and_cap():
  tx = pmf(1e-3, rho=10.0, beta_max=150.0)  # beta_interval = 100

  @jax.jit
  def run(u):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jnp.ones_like(params), state, params)
      return (optax.apply_updates(params, updates), state), state.beta

    state = tx.init(u)
    return jax.lax.scan(step, (pmf_weights(state), state), None, length=300)[1]

  betas = np.asarray(run(jnp.zeros(2)))
  # beta after step t (1-based) is betas[t - 1].
  assert np.all(betas[:99] == 1.0)
  assert np.all(betas[99:199] == 10.0)
  assert np.all(betas[199:299] == 100.0)
  assert betas[299] == 150.0  # min(1000, 150)


def test_pmf_lr_schedule():
  schedule = pmf_lr_schedule(1e-3)
  values = [float(schedule(c)) for c in (0, 6999, 7000, 13999, 14000)]
  np.testing.assert_allclose(values, [1e-3, 1e-3, 2e-4, 2e-4, 4e-5], rtol=1e-6)


def test_pmf_requires_params():
  tx = pmf(1e-3, rho=1.2)
  u = jnp.zeros(3)
  with pytest.raises(ValueError, match="params"):
    tx.update(u, tx.init(u))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(rho=0.9), "rho"),
        (dict(beta_interval=0), "beta_interval"),
        (dict(beta_interval=2.5), "beta_interval"),
        (dict(beta_max=0.5), "beta_max"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(b1=1.0), "b1"),
        (dict(b2=-0.5), "b2"),
        (dict(eps=-1.0), "eps"),
    ],
)
def test_pmf_rejects_bad_hyperparameters(kwargs, name):
  args = dict(learning_rate=1e-3, rho=1.2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    pmf(**args)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(init=0.0), "init"),
        (dict(init=1e-3, decay=0.0), "decay"),
        (dict(init=1e-3, decay=1.5), "decay"),
        (dict(init=1e-3, every=0), "every"),
    ],
)
def test_pmf_lr_schedule_rejects_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    pmf_lr_schedule(**kwargs)


def test_pmf_multi_transform():
  rng = np.random.default_rng(1)
  params = {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)},
      "bn": {"scale": jnp.asarray(rng.normal(size=3), jnp.float32)},
  }
  labels = {"dense": {"kernel": "binary"}, "bn": {"scale": "real"}}
  tx = optax.multi_transform(
      {"binary": pmf(0.05, rho=1.5, beta_interval=2), "real": optax.adam(0.1)}, labels
  )
  state = tx.init(params)
  with pytest.raises(ValueError, match="params"):
    pmf_weights(state)
  start = pmf_weights(state, params=params)
  np.testing.assert_allclose(
      np.asarray(start["dense"]["kernel"]), np.tanh(np.asarray(params["dense"]["kernel"])),
      rtol=1e-6,
  )
  np.testing.assert_array_equal(
      np.asarray(start["bn"]["scale"]), np.asarray(params["bn"]["scale"])
  )

  grads_seq = [
      jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
      for _ in range(5)
  ]
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  current = start
  for grads in grads_seq:
    updates, state = step(current, state, grads)
    current = optax.apply_updates(current, updates)

  kernel_hist = _run(
      pmf(0.05, rho=1.5, beta_interval=2),
      params["dense"]["kernel"],
      [g["dense"]["kernel"] for g in grads_seq],
      jit=False,
  )
  scale = params["bn"]["scale"]
  adam = optax.adam(0.1)
  adam_state = adam.init(scale)
  for g in grads_seq:
    updates, adam_state = adam.update(g["bn"]["scale"], adam_state, scale)
    scale = optax.apply_updates(scale, updates)

  np.testing.assert_allclose(
      np.asarray(current["dense"]["kernel"]), np.asarray(kernel_hist[-1][0]), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(np.asarray(current["bn"]["scale"]), np.asarray(scale), rtol=1e-5)
  mode = pmf_mode(state, params=current)
  np.testing.assert_array_equal(
      np.asarray(mode["dense"]["kernel"]),
      np.where(np.asarray(kernel_hist[-1][1].latent) >= 0, 1.0, -1.0),
  )
  np.testing.assert_array_equal(np.asarray(mode["bn"]["scale"]), np.asarray(current["bn"]["scale"]))
  assert float(optax.tree.get(state, "beta")) == 1.5 ** 2


def test_pmf_inject_hyperparams():
  rng = np.random.default_rng(2)
  u = jnp.asarray(rng.normal(size=6), jnp.float32)
  grads_seq = [jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(4)]
  tx = optax.inject_hyperparams(pmf, static_args=("beta_interval",))(
      learning_rate=0.05, rho=1.5, beta_interval=2, weight_decay=0.01
  )
  got = _run(tx, u, grads_seq, jit=True)
  want = _run(pmf(0.05, rho=1.5, beta_interval=2, weight_decay=0.01), u, grads_seq, jit=False)
  # Injected b1, b2 become float32 arrays: float32-level agreement.
  np.testing.assert_allclose(np.asarray(got[-1][0]), np.asarray(want[-1][0]), rtol=1e-4, atol=1e-5)
  assert float(optax.tree.get(got[-1][1], "beta")) == 1.5 ** 2


@pytest.mark.slow
def test_pmf_trains_two_moons():
  model, latent = two_moons_mlp(quantizer="none")
  tx = pmf(pmf_lr_schedule(1e-2, decay=0.2, every=200), rho=1.2, beta_interval=20)
  opt_state = tx.init(latent)
  _, opt_state, _ = train_two_moons(model, tx, pmf_weights(opt_state), opt_state)
  assert float(opt_state.beta) == pytest.approx(1.2**15, rel=1e-5)
  # Evaluate the binary network sign(u).
  binary = pmf_mode(opt_state)
  accuracy = two_moons_accuracy(model, binary)
  assert accuracy >= 0.9
