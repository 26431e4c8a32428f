"""Flax NNX containers in, plain arrays out: what the optax transform itself sees.

``nnx.Optimizer(model, tx, wrt=nnx.Param)`` keeps ``tx``'s state with every
array wrapped in an ``nnx`` Variable (``OptArray``, ``OptVariable``), and
``nnx.state(model, nnx.Param)`` wraps each weight in an ``nnx.Param``. The
optimizer hands ``tx.update`` the same trees with the Variables replaced by
their values (``nnx.as_pure``): a BayesBiNN state whose ``lam`` is an
``nnx.State`` of arrays. :func:`unbox` gives that tree, so that every helper
reads NNX objects with no unwrapping by the user, and whatever it returns
(an ``nnx.State`` of arrays) is accepted by ``nnx.update(model, ...)`` and
``nnx.merge``. :func:`rebox` puts arrays back into the Variables of a model's
state when a caller wants Variables (with their metadata) again.

Flax is never imported here: a tree can hold NNX Variables only once
``flax.nnx`` has been imported, so while it is not, :func:`unbox` returns its
argument as is; for a plain pytree it returns the very same object.
"""

from __future__ import annotations

import sys
from typing import Any

PyTree = Any


def _nnx() -> Any:
  """The ``flax.nnx`` module when it has been imported, else None."""
  return sys.modules.get("flax.nnx")


def unbox(tree: PyTree) -> PyTree:
  """``tree`` with every NNX Variable replaced by its value; the tree itself when it has none.

  Accepts an ``nnx.Optimizer`` too (its ``opt_state``, unboxed). The result has
  the tree structure of the plain pytree the optax transform sees inside
  ``nnx.Optimizer.update`` (``nnx.State`` containers of arrays; optax's
  NamedTuples, ``MaskedNode`` and None kept).
  """
  nnx = _nnx()
  if nnx is None:
    return tree
  if isinstance(tree, nnx.Optimizer):
    tree = tree.opt_state
  import jax  # pylint: disable=import-outside-toplevel

  is_variable = lambda node: isinstance(node, nnx.Variable)  # noqa: E731
  if not any(is_variable(leaf) for leaf in jax.tree.leaves(tree, is_leaf=is_variable)):
    return tree
  return nnx.as_pure(tree)


def rebox(like: PyTree, tree: PyTree) -> PyTree:
  """The Variables of ``like`` holding the arrays of ``tree`` (``tree`` shaped like
  ``unbox(like)``), e.g. ``rebox(nnx.state(model, nnx.Param), mode_params(...))``:
  an ``nnx.State`` of ``nnx.Param`` again, metadata kept. Leaves of ``like`` that
  are not Variables take ``tree``'s value; ``like`` without Variables gives ``tree``.

  Raises:
    ValueError: when ``tree`` does not have the structure of ``unbox(like)``.
  """
  nnx = _nnx()
  if nnx is None:
    return tree
  import jax  # pylint: disable=import-outside-toplevel

  is_variable = lambda node: isinstance(node, nnx.Variable)  # noqa: E731
  like_leaves, like_def = jax.tree.flatten(like, is_leaf=is_variable)
  if not any(is_variable(leaf) for leaf in like_leaves):
    return tree
  try:
    leaves = like_def.flatten_up_to(tree)  # type: ignore[attr-defined]
  except (TypeError, ValueError) as error:
    raise ValueError(
        f"rebox: the tree does not have the structure of the unboxed state ({error}).") from error
  boxed = [old.replace(new) if is_variable(old) else new for old, new in zip(like_leaves, leaves)]
  return jax.tree.unflatten(like_def, boxed)
