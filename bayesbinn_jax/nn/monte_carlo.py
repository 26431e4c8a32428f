"""Run a Flax ``apply`` once per Monte Carlo sample of the weights, in one XLA program.

With ``bayesbinn(..., num_samples=K)`` the params carry a leading axis of size
K, one network per sample. :func:`mc_apply` runs ``apply`` once per sample, with
``jax.vmap`` (``loop="vmap"``: the K forward and backward passes become batched
matrix products), or traces the K passes one after the other
(``loop="unroll"``), both inside the jitted step. On XLA's CPU backend a
vmapped convolution (a grouped convolution) is very slow: the CIFAR VGG's
gradients for K = 5 take 10.2 s vmapped, 1.4 s unrolled, 0.29 s for K = 1; the
MNIST MLP's 246 ms vmapped, 296 ms unrolled (``benchmarks/step_time.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from bayesbinn_jax import _checks

PyTree = Any
LOOPS = ("vmap", "unroll")


def mc_apply(apply_fn: Callable[..., Any], *, params_collection: str = "params",
            loop: str = "vmap") -> Callable[..., Any]:
  """Maps ``apply_fn`` over the leading sample axis of ``variables[params_collection]``.

  The returned function has the signature of ``apply_fn``:
  ``apply(variables, *args, rngs=None, **kwargs)``. Only the params collection
  is mapped; the other collections (``batch_stats``) and the inputs are shared
  by the K networks, and every key in ``rngs`` is split into K so that each
  sample draws its own dropout mask. Every output, including mutated
  collections, gets a leading axis of size K: sum the K losses before taking
  the gradient (each sample's gradient then lands in its own slice) and
  average mutated batch statistics with ``jax.tree.map(lambda s: s.mean(0), ...)``.
  ``loop`` is "vmap" (``jax.vmap``) or "unroll" (K traced passes, stacked);
  both compute the same outputs.

  Example::

    apply = mc_apply(model.apply)
    def loss_fn(params):                      # params: (K, ...) per leaf
      logits = apply({"params": params}, x)   # (K, batch, classes)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y[None]).mean(axis=1).sum()

  Examples:
    >>> import jax.numpy as jnp
    >>> from bayesbinn_jax.nn import BinaryDense
    >>> model = BinaryDense(features=2)
    >>> kernels = jnp.stack([jnp.ones((3, 2)), -jnp.ones((3, 2))])    # K = 2 networks
    >>> x = jnp.ones((5, 3))                                          # shared by both
    >>> y = mc_apply(model.apply)({"params": {"kernel": kernels}}, x)
    >>> y.shape, y[:, 0].tolist()
    ((2, 5, 2), [[3.0, 3.0], [-3.0, -3.0]])
  """

  if loop not in LOOPS:
    raise ValueError(f"mc_apply: loop must be one of {LOOPS}; got {loop!r}.")

  def apply(
      variables: Mapping[str, PyTree],
      *args: Any,
      rngs: Mapping[str, jax.Array] | jax.Array | None = None,
      **kwargs: Any,
  ) -> Any:
    if params_collection not in variables:
      raise ValueError(
          f"mc_apply: variables has no {params_collection!r} collection; it has "
          f"{sorted(variables)}. Pass params_collection= the collection holding the weights."
      )
    params = variables[params_collection]
    shared = {name: value for name, value in variables.items() if name != params_collection}
    num_samples = _checks.leading_axis_size(f"mc_apply: {params_collection}", params)
    sample_rngs: Any
    if rngs is None:
      sample_rngs = None
    elif isinstance(rngs, Mapping):
      sample_rngs = {name: jax.random.split(key, num_samples) for name, key in rngs.items()}
    else:
      sample_rngs = jax.random.split(rngs, num_samples)

    def one(sample_params: PyTree, one_rngs: Any) -> Any:
      return apply_fn({params_collection: sample_params, **shared}, *args, rngs=one_rngs, **kwargs)

    if loop == "unroll":
      outs = [one(jax.tree.map(lambda leaf: leaf[i], params),
                  jax.tree.map(lambda key: key[i], sample_rngs)) for i in range(num_samples)]
      return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)
    return jax.vmap(one)(params, sample_rngs)

  return apply
