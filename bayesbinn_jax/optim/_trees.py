"""Checks and dtype rules the optim transforms apply to their input trees.

Every transform checks what it needs from ``params`` and ``grads`` when it is
called and names the leaf that fails (its path, as ``jax.tree_util.keystr``
writes it) and the fix, instead of failing later deep inside ``update``.
Unowned leaves of ``optax.multi_transform`` (``optax.MaskedNode``) are empty
subtrees and never reach these checks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def leaves_with_paths(tree: PyTree) -> list[tuple[str, Any]]:
  """``(path, leaf)`` for every leaf of ``tree``, the path as ``"['a']['b']"``."""
  return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_floating(transform: str, name: str, tree: PyTree) -> None:
  """Raises ValueError naming the first leaf of ``tree`` that is not floating point.

  Args:
    transform: the transform's name, for the message ("bayesbinn").
    name: what ``tree`` is ("params", "grads").
    tree: arrays or ``jax.ShapeDtypeStruct``s.
  """
  for where, leaf in leaves_with_paths(tree):
    dtype = jnp.result_type(leaf) if not hasattr(leaf, "dtype") else leaf.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
          f"{transform}: {name} at {where} has dtype {dtype}, but {transform} trains "
          "floating-point arrays only. Give that leaf to another transform with "
          "optax.multi_transform (e.g. optax.set_to_zero()), or store it as a float."
      )


def check_tree_like(name: str, tree: PyTree, reference: PyTree, reference_name: str) -> None:
  """Raises ValueError unless ``tree`` has the structure and shapes of ``reference``."""
  tree_def, ref_def = jax.tree.structure(tree), jax.tree.structure(reference)
  if tree_def != ref_def:  # type: ignore[operator]
    raise ValueError(
        f"{name} must have the tree structure of {reference_name}; got {tree_def}, "
        f"expected {ref_def}."
    )
  for (where, leaf), ref in zip(leaves_with_paths(tree), jax.tree.leaves(reference), strict=True):
    if jnp.shape(leaf) != jnp.shape(ref):
      raise ValueError(
          f"{name} at {where} has shape {jnp.shape(leaf)}, "
          f"but {reference_name} has {jnp.shape(ref)} there."
      )


def state_dtype(dtype: Any, leaf_dtype: Any) -> jnp.dtype:
  """The dtype a baseline keeps its state in for a leaf of ``leaf_dtype``.

  ``dtype`` None: float32 or wider, ``promote_types(leaf_dtype, float32)``
  (the state of a bfloat16 or float16 network in float32, of a float64 one in
  float64). Otherwise ``dtype`` itself, the caller's override.
  """
  return jnp.promote_types(leaf_dtype, jnp.float32) if dtype is None else jnp.dtype(dtype)


def check_dtype(name: str, dtype: Any, *, allow_none: bool) -> None:
  """Raises ValueError unless ``dtype`` is a floating dtype (or None when allowed)."""
  if dtype is None and allow_none:
    return
  try:
    floating = (dtype is not None and not hasattr(dtype, "shape")
                and jnp.issubdtype(jnp.dtype(dtype), jnp.floating))
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(
        f"{name} must be a floating dtype such as jnp.float32"
        f"{' (or None)' if allow_none else ''}; got {dtype!r}. Under "
        f"optax.inject_hyperparams, pass static_args=('{name}',): a dtype is not a "
        "hyperparameter to inject."
    )
