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
    sample_key: the key the last update drew the params the model holds
      with. With params narrower than float32 (bfloat16, float16) the update
      draws that sample again in float32, since 1 - w^2 of the rounded sample
      is 0 wherever w rounds to +-1; a weight whose float32 draw does not
      round to the params' value (the first step, from a sample drawn
      elsewhere) uses the params' value.
    notfinite_count: consecutive steps skipped for NaN or Inf gradients (int32
      scalar; a finite step resets it to 0), the contract of
      ``optax.apply_if_finite``'s ``ApplyIfFiniteState.notfinite_count``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from bayesbinn_jax import bayesbinn
    >>> state = bayesbinn(1e-3, train_set_size=100).init({"w": jnp.zeros(3)})
    >>> state.lam["w"].shape, state.lam["w"].dtype, int(state.count)   # lam_dtype=None: float32
    ((3,), dtype('float32'), 0)
    >>> state.momentum is None, state.prior_lam is None                 # momentum=0, no prior
    (True, True)
  """

  count: chex.Array
  lam: PyTree
  momentum: PyTree | None
  prior_lam: PyTree | None
  key: chex.PRNGKey
  sample_key: chex.PRNGKey
  notfinite_count: chex.Array
