"""The state of the BayesBiNN transform, apart from the transform so that the
posterior helpers and the state finders can name it without importing the update."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex

PyTree = Any


class BayesBiNNState(NamedTuple):
  """State of :func:`bayesbinn_jax.optim.bayesbinn.bayesbinn`.

  Attributes:
    count: number of updates applied so far (int32 scalar).
    lam: natural parameters lambda, a tree shaped like one network's params,
      in ``lam_dtype``.
    momentum: the running average m of the natural gradient, shaped like lam
      and in its dtype; None when the transform was built with ``momentum=0``
      (m is then the natural gradient itself and needs no buffer).
    prior_lam: the prior's natural parameters lambda_0 in ``lam_dtype``, or
      None for the zero prior of a single task (the term is then skipped).
    key: the PRNG key of the next sample (typed or raw, as given).
    notfinite_count: consecutive steps skipped for NaN or Inf gradients (int32
      scalar; a finite step resets it to 0), the contract of
      ``optax.apply_if_finite``'s ``ApplyIfFiniteState.notfinite_count``.
  """

  count: chex.Array
  lam: PyTree
  momentum: PyTree | None
  prior_lam: PyTree | None
  key: chex.PRNGKey
  notfinite_count: chex.Array
