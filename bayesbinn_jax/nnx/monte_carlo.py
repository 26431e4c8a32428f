"""K Monte Carlo samples of an NNX model in one program, and a params -> output function.

With ``bayesbinn(..., num_samples=K)`` the optimizer hands the model K stacked
networks: every ``nnx.Param`` leaf gets a leading axis of size K (initialise the
model's params with ``sample_params(..., num_samples=K, temperature=tau)`` and
``nnx.update``). :func:`mc_apply` calls the model once per sample, NNX's
counterpart of :func:`bayesbinn_jax.nn.mc_apply`: the model is split
(``nnx.split``) into its params, its random-stream keys and the rest, and
``jax.vmap`` (``loop="vmap"``) or K traced calls (``loop="unroll"``) run the
merged model on each sample's params, inside whatever ``nnx.jit`` /
``nnx.value_and_grad`` step calls it.

Shared by the K networks: the inputs and every non-param state (BatchNorm
statistics). Per sample: the params and the random streams (each stream's key is
split in K, so every sample draws its own dropout mask). After the call the
model's state is updated as one step of the K networks: BatchNorm statistics
updated in train mode are averaged over the K samples (linen's
``jax.tree.map(lambda s: s.mean(0), ...)``), stream counters advanced once.

:func:`apply_params` turns a model into ``params -> model(*args)``, the function
``predictive_probs`` and ``mc_outputs`` evaluate once per posterior sample.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bayesbinn_jax.nn.monte_carlo import LOOPS

PyTree = Any


def _num_samples(params: PyTree) -> int:
  sizes: set[Any] = {leaf.shape[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(params)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        "mc_apply: every nnx.Param leaf needs the same leading Monte Carlo axis; got leading "
        f"sizes {sorted(sizes, key=str)}.")
  return sizes.pop()


def _average(stacked: jax.Array) -> jax.Array:
  """The K samples' state made one: the mean of floating leaves, sample 0's otherwise."""
  if jnp.issubdtype(stacked.dtype, jnp.inexact):
    return jnp.mean(stacked, axis=0).astype(stacked.dtype)
  return stacked[0]


def mc_apply(model: nnx.Module, *args: Any, loop: str = "vmap", **kwargs: Any) -> Any:
  """``model(*args, **kwargs)`` once per Monte Carlo sample of its params, stacked on axis 0.

  Every ``nnx.Param`` leaf of ``model`` must carry the leading sample axis of
  size K. Returns the K outputs stacked (K, ...): sum the K losses before the
  gradient (each sample's gradient lands in its own slice, the layout
  ``bayesbinn(..., num_samples=K)`` expects). Mutated state (BatchNorm
  statistics in train mode) is averaged over the samples and written back into
  ``model``. ``loop`` is "vmap" or "unroll" (K traced calls; faster for
  convolutions on XLA's CPU backend); both compute the same outputs.

  Example (inside ``nnx.value_and_grad`` of a jitted step)::

    def loss_fn(model):
      logits = mc_apply(model, x)                        # (K, batch, classes)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y[None]).mean(axis=1).sum()

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import BinaryLinear
    >>> model = BinaryLinear(3, 2, rngs=nnx.Rngs(0))
    >>> model.kernel.set_value(jnp.stack([jnp.ones((3, 2)), -jnp.ones((3, 2))]))   # K = 2
    >>> y = mc_apply(model, jnp.ones((5, 3)))
    >>> y.shape, y[:, 0].tolist()
    ((2, 5, 2), [[3.0, 3.0], [-3.0, -3.0]])
  """
  if loop not in LOOPS:
    raise ValueError(f"mc_apply: loop must be one of {LOOPS}; got {loop!r}.")
  graphdef, params, keys, rest = nnx.split(model, nnx.Param, nnx.RngKey, ...)  # type: ignore[misc]
  num_samples = _num_samples(params)
  sample_keys = jax.tree.map(lambda key: jax.random.split(key, num_samples), keys)

  def one(sample_params: PyTree, one_keys: PyTree, shared: PyTree) -> tuple[Any, PyTree]:
    network = nnx.merge(graphdef, sample_params, one_keys, shared, copy=True)
    out = network(*args, **kwargs)
    return out, nnx.state(network, nnx.Not(nnx.Any(nnx.Param, nnx.RngKey)))

  if loop == "unroll":
    pieces = [one(jax.tree.map(lambda leaf: leaf[i], params),
                  jax.tree.map(lambda key: key[i], sample_keys), rest) for i in range(num_samples)]
    outs, new_rest = jax.tree.map(lambda *leaves: jnp.stack(leaves), *pieces)
  else:
    outs, new_rest = jax.vmap(one, in_axes=(0, 0, None))(params, sample_keys, rest)
  nnx.update(model, jax.tree.map(_average, new_rest))
  return outs


def apply_params(model: nnx.Module, *args: Any, **kwargs: Any) -> Callable[[PyTree], Any]:
  """``params -> model(*args, **kwargs)`` with ``model``'s params replaced by ``params``.

  ``params`` is a tree like ``nnx.state(model, nnx.Param)``, boxed or not (what
  ``mode_params``, ``sample_params`` and the samplers of ``predictive_probs`` /
  ``mc_outputs`` produce); the model's other state (BatchNorm statistics, mode)
  is used as it is and ``model`` is left untouched. Put the model in eval mode
  first for a deterministic predictive::

    model.eval()
    probs = predictive_probs(apply_params(model, x), optimizer.opt_state, key, 32,
                             params=nnx.state(model, nnx.Param))

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bayesbinn_jax.nnx import BinaryLinear
    >>> model = BinaryLinear(3, 2, rngs=nnx.Rngs(0))
    >>> fn = apply_params(model, jnp.ones((1, 3)))
    >>> fn({"kernel": -jnp.ones((3, 2))})            # model's own kernel untouched
    Array([[-3., -3.]], dtype=float32)
  """
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

  def fn(params: PyTree) -> Any:
    return nnx.merge(graphdef, params, rest, copy=True)(*args, **kwargs)

  return fn
