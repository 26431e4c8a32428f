"""find_state and nonfinite_count on bare and composed optimizer states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.optim.bayesbinn import BayesBiNNState, bayesbinn
from bayesbinn_jax.optim.bop import bop
from bayesbinn_jax.optim.nested import find_state, nonfinite_count

PARAMS = {"kernel": jnp.asarray([[1.0, -1.0], [-1.0, 1.0]]), "scale": jnp.asarray([0.5, 2.0])}
LABELS = {"kernel": "binary", "scale": "real"}


def _transforms():
  bb = bayesbinn(1e-3, 10, lambda_init=1.0)
  return {
      "bayesbinn": bb,
      "chain": optax.chain(optax.clip(10.0), bb),
      "inject": optax.inject_hyperparams(bayesbinn)(learning_rate=1e-3, train_set_size=10, lambda_init=1.0),
      "multi_transform": optax.multi_transform(
          {"binary": bb, "real": optax.apply_if_finite(optax.adam(1e-3), 2**31 - 1)}, LABELS),
      "apply_if_finite(bop)": optax.apply_if_finite(bop(1e-3, 0.1), 2**31 - 1),
      "apply_if_finite(bayesbinn)": optax.apply_if_finite(bb, 2**31 - 1),
  }


@pytest.mark.parametrize("name", list(_transforms()))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nonfinite_count_counts_consecutive_skipped_steps_in_every_composition(name, jit):
  tx = _transforms()[name]
  state = tx.init(PARAMS)
  update = jax.jit(tx.update) if jit else tx.update
  count = jax.jit(nonfinite_count) if jit else nonfinite_count
  assert int(count(state)) == 0
  good = {"kernel": jnp.full((2, 2), 0.1), "scale": jnp.full((2,), 0.1)}
  bad = {"kernel": good["kernel"].at[0, 0].set(jnp.nan), "scale": good["scale"]}
  for streak in (1, 2):
    _, state = update(bad, state, PARAMS)
    assert int(count(state)) == streak
  _, state = update(good, state, PARAMS)
  assert int(count(state)) == 0


def test_a_state_that_cannot_skip_has_skipped_no_step():
  tx = optax.adam(1e-3)
  _, state = tx.update({"kernel": jnp.full((2, 2), jnp.nan), "scale": jnp.zeros(2)}, tx.init(PARAMS))
  count = nonfinite_count(state)
  assert count.dtype == jnp.int32 and int(count) == 0


def test_find_state_in_a_chain_and_errors():
  state = optax.chain(optax.clip(1.0), bayesbinn(1e-3, 10)).init(PARAMS)
  assert isinstance(find_state(state, BayesBiNNState), BayesBiNNState)
  with pytest.raises(ValueError, match="found 0"):
    find_state(optax.adam(1e-3).init(PARAMS), BayesBiNNState)
  two = optax.chain(bayesbinn(1e-3, 10), bayesbinn(1e-3, 10)).init(PARAMS)
  with pytest.raises(ValueError, match="found 2"):
    find_state(two, BayesBiNNState)
  np.testing.assert_array_equal(nonfinite_count(two), 0)
