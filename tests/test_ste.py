"""Tests of bayesbinn_jax.optim.ste: clip_weights and ste_adam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesbinn_jax.optim.ste import clip_weights, ste_adam

from optim_helpers import apply_sequence, train_two_moons, two_moons_accuracy, two_moons_mlp


# ----------------------------------------------------------------- clip_weights


@pytest.mark.parametrize("jit", [False, True])
def test_clip_weights_hand_computed(jit):
  params = jnp.array([0.5, -0.9, 0.95, 2.0, -3.0], jnp.float32)
  updates = jnp.array([0.2, -0.3, 0.1, -0.5, 0.5], jnp.float32)
  # w + u = [0.7, -1.2, 1.05, 1.5, -2.5] -> clip to [-1, 1]:
  #         [0.7, -1.0, 1.0,  1.0, -1.0]; updates = that - w.
  tx = clip_weights(1.0)
  update = jax.jit(tx.update) if jit else tx.update
  new_updates, state = update(updates, tx.init(params), params)
  assert state == optax.EmptyState()
  new = np.asarray(optax.apply_updates(params, new_updates))
  np.testing.assert_array_equal(new[1:], [-1.0, 1.0, 1.0, -1.0])
  # Inside the interval the update is passed through unchanged.
  assert new[0] == np.float32(0.5) + np.float32(0.2)
  np.testing.assert_allclose(
      np.asarray(new_updates), [0.2, -0.1, 0.05, -1.0, 2.0], rtol=1e-6
  )


@pytest.mark.parametrize("bound", [1.0, 0.5, 3.0])
def test_clip_weights_never_leaves_bound(bound):
  rng = np.random.default_rng(0)
  n = 200_000
  params = rng.uniform(-bound, bound, n).astype(np.float32)
  scale = rng.choice([1e-6, 1e-3, 1.0, 10.0], n)
  updates = (rng.normal(size=n) * scale).astype(np.float32)
  tx = clip_weights(bound)
  new_updates, _ = jax.jit(tx.update)(updates, tx.init(params), params)
  new = np.asarray(optax.apply_updates(jnp.asarray(params), new_updates))
  assert np.all(np.abs(new) <= np.float32(bound))
  moved = params + updates
  inside = np.abs(moved) <= np.float32(bound)
  np.testing.assert_array_equal(new[inside], moved[inside])
  # Clipped entries land on the bound, at most one ulp inside it.
  target = np.clip(moved, -bound, bound).astype(np.float32)
  ulp = np.spacing(np.float32(bound))
  assert np.all(np.abs(new - target) <= ulp)
  assert np.mean(new[~inside] == target[~inside]) > 0.9


@settings(max_examples=100, deadline=None)
@given(
    param=st.floats(-1.0, 1.0, width=32),
    update=st.floats(-4.0, 4.0, width=32),
)
def test_clip_weights_property(param, update):
  tx = clip_weights(1.0)
  p = jnp.array([param], jnp.float32)
  u = jnp.array([update], jnp.float32)
  new_updates, _ = tx.update(u, tx.init(p), p)
  new = float(optax.apply_updates(p, new_updates)[0])
  assert -1.0 <= new <= 1.0
  assert abs(new - float(np.clip(np.float32(param) + np.float32(update), -1, 1))) <= 1.2e-7


def test_clip_weights_trees_and_dtypes():
  params = {"a": jnp.array([0.9], jnp.bfloat16), "b": {"c": jnp.zeros((2, 2))}}
  updates = {"a": jnp.array([0.5], jnp.float32), "b": {"c": jnp.full((2, 2), -5.0)}}
  tx = clip_weights()
  new_updates, _ = tx.update(updates, tx.init(params), params)
  assert new_updates["a"].dtype == jnp.bfloat16
  new = optax.apply_updates(params, new_updates)
  np.testing.assert_array_equal(np.asarray(new["a"], np.float32), [1.0])
  np.testing.assert_array_equal(np.asarray(new["b"]["c"]), -np.ones((2, 2)))


def test_clip_weights_requires_params():
  tx = clip_weights()
  params = jnp.zeros(3)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan")])
def test_clip_weights_rejects_bad_bound(bound):
  with pytest.raises(ValueError, match="bound"):
    clip_weights(bound)


# --------------------------------------------------------------------- ste_adam


@pytest.mark.parametrize("jit", [False, True])
def test_ste_adam_one_step_hand_computed(jit):
  params = jnp.array([0.5, -0.95, 0.0, 0.3], jnp.float32)
  grads = jnp.array([2.0, 0.5, -1e-3, 0.0], jnp.float32)
  # First Adam step: m = 0.1 g, v = 0.001 g^2, bias-corrected m_hat = g,
  # v_hat = g^2, so the step is g / (|g| + eps):
  #   [1, 0.99999998, -0.99999, 0]  (the third: 1e-3 / (1e-3 + 1e-8)).
  # (float32 Adam is good to ~1e-5 relative: 1 - b2 alone is 1.3e-5 off.)
  # w - 0.1 * step = [0.4, -1.04999998, 0.099999, 0.3]
  # clipped to [-1, 1]: [0.4, -1.0, 0.099999, 0.3]
  ((new, _),) = apply_sequence(ste_adam(0.1), params, [grads], jit=jit)
  np.testing.assert_allclose(
      np.asarray(new), [0.4, -1.0, 0.099999, 0.3], rtol=0, atol=2e-6
  )
  assert float(new[1]) == -1.0


def _numpy_ste_adam(params, grads_seq, lr_fn, b1=0.9, b2=0.999, eps=1e-8):
  """Independent float64 transcription: Adam on w_r, then clip to [-1, 1]."""
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  history, clipped = [], 0
  for t, grads in enumerate(grads_seq, start=1):
    lr = lr_fn(t - 1)
    new = {}
    for k in w:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat = m[k] / (1 - b1**t)
      v_hat = v[k] / (1 - b2**t)
      raw = w[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
      clipped += int(np.sum(np.abs(raw) > 1))
      new[k] = np.clip(raw, -1.0, 1.0)
    w = new
    history.append(w)
  return history, clipped


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("schedule", [False, True])
def test_ste_adam_matches_numpy(jit, schedule):
  rng = np.random.default_rng(1)
  params = {
      "a": rng.uniform(-1, 1, (3, 4)).astype(np.float32),
      "b": np.array([0.99, -0.99, 0.0, 0.5, -0.2], np.float32),
  }
  grads_seq = [
      {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
      for _ in range(8)
  ]
  if schedule:
    lr = optax.exponential_decay(0.3, transition_steps=2, decay_rate=0.5)
    lr_fn = lambda count: 0.3 * 0.5 ** (count / 2)
  else:
    lr = 0.2
    lr_fn = lambda count: 0.2
  expected, clipped = _numpy_ste_adam(params, grads_seq, lr_fn)
  assert clipped > 0  # the clipping is exercised
  got = apply_sequence(ste_adam(lr), jax.tree.map(jnp.asarray, params), grads_seq, jit=jit)
  for (g, _), e in zip(got, expected):
    for k in params:
      np.testing.assert_allclose(np.asarray(g[k]), e[k], rtol=1e-4, atol=1e-5)
      assert np.all(np.abs(np.asarray(g[k])) <= 1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=0.1, b1=1.0), "b1"),
        (dict(learning_rate=0.1, b1=-0.1), "b1"),
        (dict(learning_rate=0.1, b2=1.5), "b2"),
        (dict(learning_rate=0.1, eps=-1e-8), "eps"),
    ],
)
def test_ste_adam_rejects_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    ste_adam(**kwargs)


def test_ste_adam_accepts_schedule_unchecked():
  # Schedules are checked where they are called, not at construction.
  ste_adam(optax.cosine_decay_schedule(1e-2, 100))


def test_ste_adam_requires_params():
  tx = ste_adam(0.1)
  params = jnp.zeros(3)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_ste_adam_inject_hyperparams():
  rng = np.random.default_rng(2)
  params = jnp.asarray(rng.uniform(-1, 1, 6).astype(np.float32))
  grads_seq = [jnp.asarray(rng.normal(size=6).astype(np.float32)) for _ in range(3)]
  tx = optax.inject_hyperparams(ste_adam)(learning_rate=0.4)
  got = [p for p, _ in apply_sequence(tx, params, grads_seq, jit=True)]
  want = [p for p, _ in apply_sequence(ste_adam(0.4), params, grads_seq, jit=False)]
  # Injected b1, b2 become float32 arrays (bias corrections in float32), hence
  # the float32-level tolerance.
  np.testing.assert_allclose(np.asarray(got[-1]), np.asarray(want[-1]), rtol=1e-4, atol=2e-5)

  # Setting the injected learning rate to 0 leaves the params where they are.
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  updates, _ = jax.jit(tx.update)(grads_seq[0], state, params)
  np.testing.assert_array_equal(np.asarray(updates), np.zeros(6))


def test_ste_adam_in_multi_transform():
  rng = np.random.default_rng(3)
  params = {
      "kernel": jnp.asarray(rng.uniform(-1, 1, (4, 3)).astype(np.float32)),
      "scale": jnp.asarray(rng.normal(size=3).astype(np.float32) * 3),
  }
  grads_seq = [
      jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
      for _ in range(4)
  ]
  labels = {"kernel": "binary", "scale": "real"}
  tx = optax.multi_transform({"binary": ste_adam(0.5), "real": optax.adam(0.5)}, labels)
  got, _ = apply_sequence(tx, params, grads_seq, jit=True)[-1]
  kernel = [p for p, _ in apply_sequence(
      ste_adam(0.5), params["kernel"], [g["kernel"] for g in grads_seq], jit=False)]
  scale = [p for p, _ in apply_sequence(
      optax.adam(0.5), params["scale"], [g["scale"] for g in grads_seq], jit=False)]
  np.testing.assert_allclose(np.asarray(got["kernel"]), np.asarray(kernel[-1]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["scale"]), np.asarray(scale[-1]), rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(np.asarray(got["kernel"])) <= 1.0)
  assert np.any(np.abs(np.asarray(got["scale"])) > 1.0)  # real params not clipped


# ---------------------------------------------------------------------- training


@pytest.mark.slow
def test_ste_adam_trains_two_moons():
  model, params = two_moons_mlp(quantizer="ste")
  params, _, _ = train_two_moons(model, ste_adam(optax.cosine_decay_schedule(1e-2, 300)), params)
  assert all(np.all(np.abs(np.asarray(p)) <= 1.0) for p in jax.tree.leaves(params))
  # The STE network evaluates the binary network sign(w_r).
  accuracy = two_moons_accuracy(model, params)
  assert accuracy >= 0.9
