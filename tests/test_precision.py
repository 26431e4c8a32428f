"""Every transform trains bfloat16 and float16 params: state in float32, updates in the params' dtype.

The first tests are the failures of issue 13, reproduced exactly: with lambda
stored in the params' dtype, a bfloat16 lambda never decays, tanh(lambda)
rounds to 1 in bfloat16 from |lambda| ~ 3.3 (the guarded scale s then jumps
by 1e10) and in float16 the 1e-10 guard rounds to 0 (s = 0 / 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.bayesbinn import bayesbinn, natural_gradient_scale
from bayesbinn_jax.optim.bop import bop
from bayesbinn_jax.optim.pmf import pmf, pmf_weights
from bayesbinn_jax.optim.posterior import sample_relaxed
from bayesbinn_jax.optim.ste import ste_adam

LOW = [jnp.bfloat16, jnp.float16]


def scan_steps(tx, params, grads_fn, steps, state=None):
  """``steps`` jitted updates in one ``lax.scan``; ``grads_fn(i, params)`` gives the grads."""
  state = tx.init(params) if state is None else state

  def step(carry, i):
    p, s = carry
    updates, s = tx.update(grads_fn(i, p), s, p)
    return (optax.apply_updates(p, updates), s), None

  (params, state), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))((params, state))
  return params, state


@pytest.mark.parametrize("dtype", [jnp.float32, *LOW])
def test_kl_decay_of_lambda_in_every_params_dtype(dtype):
  # Zero gradients: lambda <- (1 - lr) lambda, so |lambda| = 15 * 0.999^1000 = 5.5154 after
  # 1000 steps. With lambda in bfloat16 each step was below half an ulp: it stayed at 15.
  tx = bayesbinn(1e-3, 200, lambda_init=15.0)
  params = {"w": jnp.zeros((1000,), dtype)}
  _, state = scan_steps(tx, params, lambda i, p: jax.tree.map(jnp.zeros_like, p), 1000)
  assert state.lam["w"].dtype == jnp.float32
  np.testing.assert_allclose(np.abs(state.lam["w"]), 15 * 0.999**1000, rtol=1e-4)


@pytest.mark.parametrize("dtype", LOW)
def test_saturated_mean_in_low_precision_params_does_not_run_away(dtype):
  # lambda = 4: tanh(4) = 0.99933 rounds to 1 in bfloat16 (and to 0.99951 in float16).
  # w = 0.5, g = 1, N = 10, lr = 1e-3, tau = 1, by hand in float32:
  #   s = (1 - 0.25) / (1 - tanh(4)^2) = 0.75 / 1.3412e-3 = 559.2
  #   lambda' = 4 - 1e-3 * (10 * 559.2 + 4) = -1.596
  # With mu in bfloat16, s = 0.75 / 1e-10 and lambda' = -7.5e7.
  # count = 1: a later update, whose scale comes from the params the model holds.
  tx = bayesbinn(1e-3, 10, lambda_init=4.0)
  state = tx.init({"w": jnp.zeros((4,), dtype)})._replace(count=jnp.array(1))
  signs = np.sign(np.asarray(state.lam["w"]))
  params = {"w": jnp.asarray(0.5 * signs, dtype)}
  for update in (tx.update, jax.jit(tx.update)):
    updates, new_state = update({"w": jnp.asarray(signs, dtype)}, state, params)
    expected = 4 - 1e-3 * (10 * 0.75 / (1 - np.tanh(np.float32(4.0)).astype(np.float64) ** 2) + 4)
    # rtol: 1 - tanh(4) is 6.7e-4, so a few ulps of XLA's float32 tanh are 1e-4 of s.
    np.testing.assert_allclose(new_state.lam["w"] * signs, expected, rtol=2e-3)
    assert updates["w"].dtype == dtype


def test_bfloat16_lambda_follows_float32_under_random_gradients():
  # lambda_init = 3, N(0, 1) gradients at the samples the model holds, N = 10, lr = 1e-3,
  # 100 steps: the bfloat16 lambda ran away to 7e7 (float32: at most 90). The runs see
  # differently rounded samples, so they agree in bulk, not per weight at saturation.
  tx = bayesbinn(1e-3, 10, lambda_init=3.0)
  keys = jax.random.split(jax.random.PRNGKey(2), 100)
  finals = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    state = tx.init({"w": jnp.zeros((1000,), dtype)})
    params = jax.tree.map(lambda l: l.astype(dtype), sample_relaxed(state.lam, jax.random.PRNGKey(1)))
    grads = lambda i, p: {"w": jax.random.normal(keys[i], (1000,)).astype(p["w"].dtype)}  # noqa: E731
    _, state = scan_steps(tx, params, grads, 100, state)
    finals[dtype] = np.asarray(state.lam["w"])
  assert np.all(np.isfinite(finals[jnp.bfloat16]))
  assert np.max(np.abs(finals[jnp.bfloat16])) < 10 * np.max(np.abs(finals[jnp.float32]))
  assert np.median(np.abs(finals[jnp.bfloat16] - finals[jnp.float32])) < 0.05


def test_float16_first_step_is_finite_and_equals_float32():
  # bayesbinn(1e-3, 100, lambda_init=10) on float16 params holding a sample (+-1 in float16),
  # grads 0.1: the 1e-10 guard was 0 in float16, so s = (0 + 0) / (0 + 0) = NaN, and lambda,
  # the updates and every later step were NaN (then skipped). Now the step equals the float32
  # step on the unrounded sample, which the update draws again from state.sample_key.
  tx = bayesbinn(1e-3, 100, lambda_init=10.0)
  state = tx.init({"w": jnp.zeros((8,), jnp.float16)})
  sample = sample_relaxed(state.lam, state.sample_key)
  assert set(np.abs(np.asarray(sample["w"].astype(jnp.float16), np.float32))) == {1.0}
  grads = {"w": jnp.full((8,), 0.125, jnp.float32)}  # exact in float16
  results = {}
  for dtype in (jnp.float16, jnp.float32):
    cast = lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree)  # noqa: E731,B023
    updates, new_state = jax.jit(tx.update)(cast(grads), state, cast(sample))
    assert updates["w"].dtype == dtype and int(new_state.notfinite_count) == 0
    new_params = optax.apply_updates(cast(sample), updates)
    results[dtype] = (np.asarray(new_params["w"], np.float32), np.asarray(new_state.lam["w"]))
    assert np.all(np.isfinite(results[dtype][0])) and np.all(np.isfinite(results[dtype][1]))
  np.testing.assert_array_equal(results[jnp.float16][1], results[jnp.float32][1])
  np.testing.assert_array_equal(results[jnp.float16][0],
                                np.asarray(jnp.asarray(results[jnp.float32][0]).astype(jnp.float16), np.float32))


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_steps_use_the_float32_sample_the_params_were_rounded_from(dtype):
  # lambda = +-4, tau = 1: w = tanh(4 + delta) rounds to +-1 in bfloat16 for most weights,
  # where 1 - w^2 of the rounded w is 0 and s would be ~0. The update draws the sample again
  # in float32 (state.sample_key), so each step equals the float32 step on the exact sample.
  tx = bayesbinn(1e-2, 50, lambda_init=4.0, momentum=0.9, num_samples=2)
  state = tx.init({"w": jnp.zeros((256,), jnp.float32)})
  grads = {"w": 0.25 * jnp.sign(jnp.sin(jnp.arange(2 * 256.0))).reshape(2, 256)}  # exact in dtype
  params = jax.tree.map(lambda w: w.astype(dtype), sample_relaxed(state.lam, state.sample_key, 1.0, 2))
  assert np.mean(np.abs(np.asarray(params["w"], np.float32)) == 1.0) > 0.2  # bfloat16 ~0.5, float16 ~0.2
  update = jax.jit(tx.update)
  for step in range(2):
    exact = sample_relaxed(state.lam, state.sample_key, 1.0, 2)  # what the last update drew
    _, expected = update(grads, state, exact)
    updates, state = update(jax.tree.map(lambda g: g.astype(dtype), grads), state, params)
    params = optax.apply_updates(params, updates)
    same = np.asarray(state.lam["w"]) == np.asarray(expected.lam["w"])
    # Step 2 starts from params + updates, which equals the rounded sample but where a
    # weight changed sign (the subtraction rounds there; those use the params' value).
    assert np.mean(same) >= (1.0 if step == 0 else 0.95), np.mean(same)


@pytest.mark.parametrize("dtype", LOW)
def test_scale_is_computed_in_float32_for_low_precision_samples(dtype):
  # Saturated weights at tau = 1e-10: s = (1e-10 / 1e-10) / 1e-10 = 1e10, whatever w's dtype.
  w = jnp.asarray([1.0, -1.0], dtype)
  lam = jnp.asarray([10.0, -10.0], jnp.float32)
  for scale in (natural_gradient_scale, jax.jit(natural_gradient_scale)):
    s = scale(w, lam, 1e-10)
    assert s.dtype == jnp.float32
    np.testing.assert_allclose(s, 1e10, rtol=1e-6)


def baselines():
  return {
      "ste_adam": (lambda **kw: ste_adam(1e-3, **kw), ("0", "mu"), ("0", "nu")),
      "bop": (lambda **kw: bop(1e-8, 1e-5, **kw), ("momentum",)),
      "pmf": (lambda **kw: pmf(1e-3, 1.2, **kw), ("latent",), ("adam_state", "mu"), ("adam_state", "nu")),
  }


def _field(state, path):
  for name in path:
    state = state[int(name)] if name.isdigit() else getattr(state, name)
  return state


@pytest.mark.parametrize("name", ["ste_adam", "bop", "pmf"])
@pytest.mark.parametrize("dtype", LOW)
def test_baselines_keep_their_state_in_float32_by_default_and_on_request(name, dtype):
  factory, *fields = baselines()[name]
  params = {"w": jnp.asarray([0.5, -0.25, 1.0], dtype)}
  grads = {"w": jnp.asarray([1e-3, -2e-3, 5e-4], dtype)}
  for kwargs, state_dtype in (({}, jnp.float32), ({"state_dtype": dtype}, dtype)):
    tx = factory(**kwargs)
    state = tx.init(params)
    for path in fields:
      assert _field(state, path)["w"].dtype == state_dtype, (path, kwargs)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert updates["w"].dtype == dtype
    for path in fields:
      assert _field(state, path)["w"].dtype == state_dtype


def test_bop_momentum_moves_in_float32_where_bfloat16_cannot():
  # gamma = 1e-5: m = 1e-5 * g after one step; 100 steps of g = 1 give m = 1 - (1 - 1e-5)^100
  # = 9.995e-4. In bfloat16, (1 - 1e-5) rounds to 1 and m's increments to 0 once m ~ 4e-3.
  params = {"w": jnp.ones((3,), jnp.bfloat16)}
  _, state = scan_steps(bop(1.0, 1e-5), params, lambda i, p: {"w": jnp.ones((3,), jnp.bfloat16)}, 100)
  np.testing.assert_allclose(state.momentum["w"], 1 - (1 - 1e-5) ** 100, rtol=1e-4)


def test_pmf_weights_take_the_params_dtype():
  params = {"w": jnp.asarray([0.5, -0.25], jnp.bfloat16)}
  state = pmf(1e-3, 1.2).init(params)
  assert state.latent["w"].dtype == jnp.float32
  assert pmf_weights(state, params)["w"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(pmf_weights(state, params)["w"], np.float32),
                             np.tanh([0.5, -0.25]), rtol=1e-2)
