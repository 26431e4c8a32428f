"""Run a Flax ``apply`` once per Monte Carlo sample of the weights, vectorised.

With ``bayesbinn(..., num_samples=K)`` the params carry a leading axis of size
K, one network per sample. :func:`mc_vmap` maps ``apply`` over that axis with
``jax.vmap``, so the K forward and backward passes are one batched XLA
computation inside the jitted step, not a Python loop.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

PyTree = Any


def mc_vmap(apply_fn: Callable[..., Any], *, params_collection: str = "params") -> Callable[..., Any]:
  """Vectorises ``apply_fn`` over the leading sample axis of ``variables[params_collection]``.

  The returned function has the signature of ``apply_fn``:
  ``apply(variables, *args, rngs=None, **kwargs)``. Only the params collection
  is mapped; the other collections (``batch_stats``) and the inputs are shared
  by the K networks, and every key in ``rngs`` is split into K so that each
  sample draws its own dropout mask. Every output, including mutated
  collections, gets a leading axis of size K: sum the K losses before taking
  the gradient (each sample's gradient then lands in its own slice) and
  average mutated batch statistics with ``jax.tree.map(lambda s: s.mean(0), ...)``.

  Example::

    apply = mc_vmap(model.apply)
    def loss_fn(params):                      # params: (K, ...) per leaf
      logits = apply({"params": params}, x)   # (K, batch, classes)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y[None]).mean(axis=1).sum()
  """

  def apply(
      variables: Mapping[str, PyTree],
      *args: Any,
      rngs: Mapping[str, jax.Array] | jax.Array | None = None,
      **kwargs: Any,
  ) -> Any:
    if params_collection not in variables:
      raise ValueError(
          f"mc_vmap: variables has no {params_collection!r} collection; it has "
          f"{sorted(variables)}. Pass params_collection= the collection holding the weights."
      )
    params = variables[params_collection]
    shared = {name: value for name, value in variables.items() if name != params_collection}
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(params)}
    if len(sizes) != 1 or None in sizes:
      raise ValueError(
          "mc_vmap: every params leaf needs the same leading Monte Carlo axis; got "
          f"leading sizes {sorted(sizes, key=str)}."
      )
    num_samples = sizes.pop()
    if rngs is None:
      sample_rngs = None
    elif isinstance(rngs, Mapping):
      sample_rngs = {name: jax.random.split(key, num_samples) for name, key in rngs.items()}
    else:
      sample_rngs = jax.random.split(rngs, num_samples)

    def one(sample_params: PyTree, one_rngs: Any) -> Any:
      return apply_fn({params_collection: sample_params, **shared}, *args, rngs=one_rngs, **kwargs)

    return jax.vmap(one)(params, sample_rngs)

  return apply
