"""Finding one transform's state inside a composed optimizer state."""

from __future__ import annotations

from typing import Any, TypeVar

import jax

State = TypeVar("State")


def find_state(opt_state: Any, state_type: type[State]) -> State:
  """The single ``state_type`` inside ``opt_state``: itself, or nested in
  ``optax.chain``, ``multi_transform``, ``apply_if_finite``, ``inject_hyperparams``.

  Raises:
    ValueError: when ``opt_state`` holds none, or more than one.
  """
  is_state = lambda node: isinstance(node, state_type)  # noqa: E731
  found = [node for node in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(node)]
  if len(found) != 1:
    raise ValueError(
        f"expected exactly one {state_type.__name__} in the optimizer state; found {len(found)}."
    )
  return found[0]
