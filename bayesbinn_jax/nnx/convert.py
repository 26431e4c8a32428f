"""Variables between the NNX networks and their linen twins.

An NNX network of :mod:`bayesbinn_jax.nnx.networks` keeps its layers in lists
(``dense``, ``conv``, ``bn``) in creation order, which is linen's naming order:
``dense[i]`` is ``BinaryDense_i``, ``conv[i]`` is ``BinaryConv_i``, ``bn[i]`` is
``BatchNorm_i``. Kernels, biases and learned gains are ``params`` in linen and
``nnx.Param`` in NNX; the BatchNorm statistics ``mean`` and ``var`` are
``batch_stats`` and ``nnx.BatchStat``.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as linen
import jax.numpy as jnp
from flax import nnx

LINEN_PREFIXES: dict[str, str] = {"dense": "BinaryDense", "conv": "BinaryConv", "bn": "BatchNorm"}
"""NNX layer list -> linen module name prefix."""

_COLLECTIONS: dict[str, type] = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def _shape(value: Any) -> tuple[int, ...]:
  """The shape of an array or of an abstract value (``jax.ShapeDtypeStruct``)."""
  return tuple(getattr(value, "shape", None) or jnp.shape(value))


def _linen_name(path: tuple[Any, ...]) -> tuple[str, str]:
  """(linen module name, leaf name) of the NNX state path ``(list, index, leaf)``."""
  if len(path) != 3 or path[0] not in LINEN_PREFIXES:
    raise ValueError(
        f"nnx state path {'/'.join(map(str, path))} is not a layer of a bayesbinn_jax.nnx "
        f"network (expected <{'|'.join(LINEN_PREFIXES)}>/<index>/<leaf>).")
  return f"{LINEN_PREFIXES[path[0]]}_{path[1]}", str(path[2])


def nnx_variables(model: nnx.Module) -> dict[str, dict[str, dict[str, Any]]]:
  """The linen variables (``{"params": ..., "batch_stats": ...}``) of an NNX network.

  Leaves are the NNX arrays themselves (a K-stacked params leaf stays stacked);
  ``batch_stats`` is present when the network has BatchNorm.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> model = ToyMLP(hidden=(8,), rngs=nnx.Rngs(0))   # dense[i] is BinaryDense_i
    >>> jax.tree.map(jnp.shape, nnx_variables(model)["params"]["BinaryDense_0"])
    {'bias': (8,), 'kernel': (2, 8)}
  """
  variables: dict[str, dict[str, dict[str, Any]]] = {}
  for collection, kind in _COLLECTIONS.items():
    for path, leaf in nnx.to_flat_state(nnx.state(model, kind)):
      module, name = _linen_name(tuple(path))
      value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
      variables.setdefault(collection, {}).setdefault(module, {})[name] = value
  return variables


def nnx_to_linen(model: nnx.Module) -> tuple[linen.Module, dict[str, Any]]:
  """The linen twin of an NNX network and its variables: ``(module, variables)``,
  so that ``module.apply(variables, x, train=False)`` equals ``model.eval(); model(x)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> model = ToyMLP(hidden=(8,), rngs=nnx.Rngs(0))
    >>> twin, variables = nnx_to_linen(model)
    >>> type(twin).__module__, type(twin).__name__
    ('bayesbinn_jax.nn.networks', 'ToyMLP')
    >>> x = jnp.ones((3, 2))
    >>> model.eval()
    >>> bool(jnp.allclose(twin.apply(variables, x, train=False), model(x)))
    True
  """
  return model.linen(), nnx_variables(model)  # type: ignore[attr-defined]


def linen_to_nnx(model: nnx.Module, variables: Mapping[str, Any]) -> nnx.Module:
  """Loads linen variables (``params`` and ``batch_stats`` of the linen twin) into
  ``model`` in place, and returns it.

  Raises:
    ValueError: when a leaf of ``variables`` has no place in ``model``, a leaf of
      ``model`` gets no value, or shapes differ.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> import bayesbinn_jax.nn as bnn
    >>> from bayesbinn_jax.nnx import ToyMLP
    >>> variables = bnn.ToyMLP(hidden=(8,)).init(jax.random.key(1), jnp.zeros((1, 2)), train=False)
    >>> model = linen_to_nnx(ToyMLP(hidden=(8,), rngs=nnx.Rngs(0)), variables)
    >>> bool(jnp.all(model.dense[1].kernel[...] == variables["params"]["BinaryDense_1"]["kernel"]))
    True
  """
  expected = nnx_variables(model)
  unknown = sorted(set(variables) - set(_COLLECTIONS))
  if unknown:
    raise ValueError(f"linen variables have collections {unknown} that an NNX network does not hold.")
  pure: dict[Any, Any] = {}
  for collection, kind in _COLLECTIONS.items():
    have = {(m, n): v for m, leaves in variables.get(collection, {}).items() for n, v in leaves.items()}
    want = {(m, n): v for m, leaves in expected.get(collection, {}).items() for n, v in leaves.items()}
    if set(have) != set(want):
      missing = sorted("/".join(k) for k in set(want) - set(have))
      extra = sorted("/".join(k) for k in set(have) - set(want))
      raise ValueError(
          f"linen {collection} do not fit the NNX {type(model).__name__}: missing {missing}, "
          f"unexpected {extra}.")
    for (module, name), value in have.items():
      if _shape(value) != _shape(want[(module, name)]):
        raise ValueError(
            f"linen {collection} {module}/{name} has shape {_shape(value)}; the NNX "
            f"network holds {_shape(want[(module, name)])} there.")
      prefix, index = module.rsplit("_", 1)
      attr = next(a for a, p in LINEN_PREFIXES.items() if p == prefix)
      pure.setdefault(attr, {}).setdefault(int(index), {})[name] = jnp.asarray(value)
  state = nnx.state(model, tuple(_COLLECTIONS.values()))
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model
