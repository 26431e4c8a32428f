"""One PRNG key per purpose of a run, all derived from its seed with ``fold_in``.

    key(seed, purpose) = fold_in(key(seed), PURPOSES.index(purpose))

``jax.random.fold_in`` hashes the purpose's index into the seed's key, so no
two purposes share a key, and no purpose of one seed equals a purpose of
another seed (``PRNGKey(seed + 1)`` for evaluation, as before, was seed + 1's
root key). A purpose's key is further folded with the epoch or batch where
it is used. ``tests/test_keys.py`` checks that the keys of seeds 0-255 and
every purpose are distinct.
"""

from __future__ import annotations

import jax

PURPOSES = (
    "model_init",     # the network's initial params (and the initial dropout draw of init)
    "optimizer",      # the optimizer's own key: BayesBiNN's initial lambda and every sample
    "first_sample",   # the params the model starts from (a posterior sample for BayesBiNN)
    "dropout",        # folded with the step
    "data_order",     # batch order and augmentation, with the epoch as context
    "permutations",   # the pixel permutations of continual-learning tasks
    "evaluation",     # Monte Carlo predictions at evaluation, folded with the epoch
    "calibration",    # Monte Carlo predictions that fit and test the temperature (and OOD)
    "figures",        # Monte Carlo predictions drawn for the figures
)
"""Every purpose a run draws random numbers for; the index is folded into the seed's key."""


def purpose_key(seed: int, purpose: str) -> jax.Array:
  """The typed PRNG key of ``purpose`` in the run seeded with ``seed``.

  Args:
    seed: the run's seed, an integer in [0, 2**32).
    purpose: one of :data:`PURPOSES`.

  Returns:
    A typed key (``jax.random.key``), shape ().

  Raises:
    ValueError: for an unknown purpose, listing the known ones.
  """
  if purpose not in PURPOSES:
    raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}.")
  return jax.random.fold_in(jax.random.key(seed), PURPOSES.index(purpose))
