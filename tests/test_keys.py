"""One key per purpose and seed: no two purposes and no two seeds share a key."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bayesbinn_jax.train.keys import PURPOSES, purpose_key


def test_no_two_purposes_or_seeds_share_a_key():
  seeds = range(256)
  words = {tuple(np.asarray(jax.random.key_data(purpose_key(seed, purpose))).tolist())
           for seed in seeds for purpose in PURPOSES}
  assert len(words) == len(seeds) * len(PURPOSES)
  # Nor does any purpose key equal a seed's root key (the old PRNGKey(seed + 1) aliasing).
  roots = {tuple(np.asarray(jax.random.key_data(jax.random.key(seed))).tolist()) for seed in range(300)}
  assert not words & roots


def test_a_purpose_key_is_the_seed_key_folded_with_the_purpose_index():
  expected = jax.random.fold_in(jax.random.key(7), PURPOSES.index("dropout"))
  np.testing.assert_array_equal(jax.random.key_data(purpose_key(7, "dropout")),
                                jax.random.key_data(expected))


def test_the_same_seed_and_purpose_give_the_same_key_under_jit():
  eager = jax.random.key_data(purpose_key(3, "evaluation"))
  jitted = jax.jit(lambda s: jax.random.key_data(purpose_key(s, "evaluation")))(3)
  np.testing.assert_array_equal(eager, jitted)


def test_an_unknown_purpose_is_named():
  with pytest.raises(ValueError, match="purpose must be one of .*got 'init'"):
    purpose_key(0, "init")
