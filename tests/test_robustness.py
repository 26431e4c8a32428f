"""Property tests: no NaN or Inf ever enters the BayesBiNN state, whatever the input scale."""

from __future__ import annotations

import functools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings

from bayesbinn_jax import bayesbinn

SHAPE = (8,)


@functools.lru_cache(maxsize=None)
def _jitted_run(dtype_name: str, num_samples: int):
  """Three jitted updates of inject_hyperparams(bayesbinn): one compile per dtype and K."""
  dtype = jnp.dtype(dtype_name)
  tx = optax.inject_hyperparams(bayesbinn, static_args=("num_samples", "key"))(
      learning_rate=1e-3, train_set_size=60000, temperature=1.0, momentum=0.0, kl_weight=1.0,
      num_samples=num_samples)

  @jax.jit
  def run(lam, grads, learning_rate, temperature, momentum):
    state = tx.init({"w": jnp.zeros(SHAPE, dtype)})
    state.hyperparams.update(learning_rate=learning_rate, temperature=temperature,
                             momentum=momentum)
    state = state._replace(inner_state=state.inner_state._replace(lam={"w": lam}))
    params = {"w": jnp.tanh(lam / temperature)}
    if num_samples > 1:
      params = {"w": jnp.stack([params["w"], -params["w"]])}
    outputs = []
    for step in range(3):
      g = {"w": grads * (1.0 - 2.0 * (step % 2)) if num_samples == 1
           else jnp.stack([grads, -grads])}
      updates, state = tx.update(jax.tree.map(lambda a: a.astype(dtype), g), state, params)
      params = optax.apply_updates(params, updates)
      outputs.append(updates)
    return state.inner_state, outputs

  return run


magnitudes = st.sampled_from([0.0, 1e-30, 1e-10, 1e-3, 1.0, 10.0, 1e4, 1e10, 1e20, 1e30])
signs = st.lists(st.sampled_from([-1.0, 1.0]), min_size=SHAPE[0], max_size=SHAPE[0])


@settings(max_examples=60, deadline=None)
@given(
    lam_scale=magnitudes, lam_signs=signs, grad_scale=magnitudes, grad_signs=signs,
    temperature=st.sampled_from([1e-12, 1e-10, 1e-8, 1e-2, 1.0, 10.0]),
    learning_rate=st.sampled_from([1e-6, 1e-3, 0.1, 1.0]),
    momentum=st.sampled_from([0.0, 0.9, 0.999]),
    dtype=st.sampled_from(["float32", "bfloat16"]),
    num_samples=st.sampled_from([1, 2]),
)
def test_state_and_updates_stay_finite(lam_scale, lam_signs, grad_scale, grad_signs, temperature,
                                       learning_rate, momentum, dtype, num_samples):
  lam = jnp.asarray(np.asarray(lam_signs) * lam_scale, dtype)
  grads = jnp.asarray(np.asarray(grad_signs) * grad_scale, dtype)
  state, outputs = _jitted_run(dtype, num_samples)(lam, grads, learning_rate, temperature, momentum)
  for name, tree in (("lam", state.lam), ("momentum", state.momentum), ("updates", outputs)):
    for leaf in jax.tree.leaves(tree):
      assert np.all(np.isfinite(np.asarray(leaf, np.float32))), name
