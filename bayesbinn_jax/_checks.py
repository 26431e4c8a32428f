"""Argument checks shared by every package of bayesbinn_jax (optim, nn, data, train).

Checks run only on concrete Python or NumPy numbers. Traced values (a
hyperparameter injected by :func:`optax.inject_hyperparams` and read inside
``jax.jit``) and schedules pass through unchecked: they cannot be compared
with Python control flow, and a schedule is checked where it is called.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np


def concrete(value: Any) -> float | None:
  """Returns ``value`` as a float when it is a concrete real scalar, else None."""
  if isinstance(value, bool) or callable(value) or isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
    try:
      return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
      return None
  return None


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ValueError naming ``name`` when a concrete ``value`` is out of range.

  The accepted range is ``low <= value <= high`` (strict where ``*_inclusive``
  is False); a bound of None is open. NaN is always rejected.
  """
  number = concrete(value)
  if number is None:
    return
  below = low is not None and (number < low if low_inclusive else number <= low)
  above = high is not None and (number > high if high_inclusive else number >= high)
  if below or above or np.isnan(number):
    left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
    raise ValueError(
        f"{name} must be in {left}, {right}; got {value!r}. Pass a value in that range."
    )


def check_positive(name: str, value: Any) -> None:
  """Raises ValueError unless a concrete ``value`` is > 0."""
  check_range(name, value, low=0.0, low_inclusive=False)


def check_integer(name: str, value: Any, *, low: int) -> None:
  """Raises ValueError unless a concrete ``value`` is an integer >= ``low``."""
  number = concrete(value)
  if number is None:
    return
  if not float(number).is_integer() or number < low:
    raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")


def check_choice(name: str, value: Any, choices: tuple[str, ...], hint: str) -> str:
  """Returns ``value`` when it is one of ``choices``; else a ValueError naming ``name``, the
  accepted values and ``hint`` (what each one means)."""
  if not isinstance(value, str) or value not in choices:
    accepted = ", ".join(repr(choice) for choice in choices)
    raise ValueError(f"{name} must be one of {accepted}; got {value!r}. {hint}")
  return value


def check_count(name: str, value: Any) -> None:
  """Raises ValueError unless ``value`` is a positive integer (a count such as a data set's size).

  Python and NumPy integers >= 1 pass, and so do integer-valued concrete
  arrays (``optax.inject_hyperparams`` hands numbers back as float arrays) and
  traced values. None, bools, strings, fractions and numbers < 1 do not.

  >>> check_count("train_set_size", 60000)
  >>> check_count("train_set_size", True)
  Traceback (most recent call last):
  ...
  ValueError: train_set_size must be a positive integer (the number of training examples); got True.
  """
  if isinstance(value, jax.core.Tracer):
    return
  is_number = (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
      isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0
      and np.issubdtype(np.asarray(value).dtype, np.number))
  number = concrete(value) if is_number else None
  if number is None or not number.is_integer() or number < 1:
    raise ValueError(
        f"{name} must be a positive integer (the number of training examples); got {value!r}.")


def leading_axis_size(name: str, tree: Any) -> int:
  """The size of the leading axis every leaf of ``tree`` shares (K stacked networks).

  Raises ValueError naming ``name`` when a leaf is a scalar, when leaves
  disagree, or when ``tree`` has no leaf.

  >>> leading_axis_size("params", {"a": np.zeros((3, 2)), "b": np.zeros(3)})
  3
  """
  sizes: dict[Any, str] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shape = np.shape(leaf)
    sizes.setdefault(shape[0] if shape else None, jax.tree_util.keystr(path))
  if len(sizes) != 1 or None in sizes:
    seen = ", ".join(f"{size} at {where or 'the root'}" for size, where in sizes.items()) or "no leaf"
    raise ValueError(
        f"{name}: every leaf needs the same leading Monte Carlo axis; got leading sizes {seen}.")
  return next(iter(sizes))
