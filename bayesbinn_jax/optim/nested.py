"""Finding one transform's state inside a composed optimizer state."""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax.optim.state import BayesBiNNState
from bayesbinn_jax.optim.unbox import unbox

State = TypeVar("State")


def find_states(opt_state: Any, state_type: type | tuple[type, ...]) -> list[Any]:
  """Every outermost ``state_type`` node inside ``opt_state``, in tree order.

  ``opt_state`` may be the state itself or nest it in ``optax.chain``,
  ``multi_transform``, ``apply_if_finite``, ``inject_hyperparams`` or
  ``MultiSteps`` (any pytree of NamedTuples, tuples and dicts). A node of
  ``state_type`` nested inside another is not listed.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from bayesbinn_jax import BayesBiNNState, bayesbinn
    >>> tx = optax.multi_transform({"a": bayesbinn(1e-3, 100), "b": bayesbinn(1e-2, 100)},
    ...                            {"u": "a", "v": "b"})          # two groups, two states
    >>> states = find_states(tx.init({"u": jnp.zeros(2), "v": jnp.zeros(3)}), BayesBiNNState)
    >>> len(states), [int(s.count) for s in states]
    (2, [0, 0])
  """
  is_state = lambda node: isinstance(node, state_type)  # noqa: E731
  return [node for node in jax.tree.leaves(unbox(opt_state), is_leaf=is_state) if is_state(node)]


def find_state(opt_state: Any, state_type: type[State]) -> State:
  """The single ``state_type`` inside ``opt_state`` (see :func:`find_states`).

  Raises:
    ValueError: when ``opt_state`` holds none, or more than one.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from bayesbinn_jax import BayesBiNNState, bayesbinn
    >>> tx = optax.chain(optax.clip_by_global_norm(1.0), bayesbinn(1e-3, train_set_size=100))
    >>> state = find_state(tx.init({"w": jnp.zeros(3)}), BayesBiNNState)
    >>> state.lam["w"].shape
    (3,)
  """
  found = find_states(opt_state, state_type)
  if len(found) != 1:
    raise ValueError(
        f"expected exactly one {state_type.__name__} in the optimizer state; found {len(found)}."
    )
  return found[0]


def nonfinite_count(opt_state: Any) -> jax.Array:
  """Consecutive steps skipped for NaN or Inf gradients, read from any optimizer state.

  The ``notfinite_count`` (int32 scalar) of the :class:`BayesBiNNState` or
  ``optax.ApplyIfFiniteState`` inside ``opt_state`` (bare, or nested in
  chain, multi_transform, inject_hyperparams, MultiSteps); with several
  (e.g. BayesBiNN and an ``apply_if_finite`` Adam under multi_transform), the
  largest, so that the step just taken was skipped by one of them exactly
  when the count is > 0. An ``apply_if_finite`` around a BayesBiNN
  transform answers for both (its inner state never sees a non-finite step).
  Under ``MultiSteps`` the count changes only on the steps that update.
  A state holding neither (plain ``optax.adam``) gives 0: a transform that
  cannot skip a step has skipped none (it applies non-finite updates; wrap it
  in ``optax.apply_if_finite`` to skip them).

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=3)
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> _, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
    >>> int(nonfinite_count(state)), int(nonfinite_count(optax.sgd(0.1).init(params)))
    (1, 0)
  """
  counts = [node.notfinite_count for node in find_states(opt_state, (BayesBiNNState, optax.ApplyIfFiniteState))]
  if not counts:
    return jnp.zeros([], jnp.int32)
  return counts[0] if len(counts) == 1 else jnp.max(jnp.stack(counts))
