"""The BayesBiNN posterior: sampling, point estimates and predictive probabilities.

The posterior over each binary weight w in {-1, +1} is a Bernoulli with natural
parameter lambda:

    P(w = +1) = sigmoid(2 lambda),      E[w] = mu = tanh(lambda).

Every function here takes the tree of lambdas (``state.lam`` of
:func:`bayesbinn_jax.bayesbinn`) and, where it draws, an explicit key.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from bayesbinn_jax.optim.noise import logistic

PyTree = Any


def _noise_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """Draws noise in at least float32, so that low-precision weights keep the exact law."""
  return jnp.promote_types(dtype, jnp.float32)


def _logistic_noise(lam: PyTree, key: jax.Array, num_samples: int | None, rng: str) -> PyTree:
  """delta = 0.5 * log(u / (1 - u)), u ~ U(0, 1), one per weight (and per sample)."""
  leaves, treedef = jax.tree.flatten(lam)
  keys = jax.random.split(key, max(len(leaves), 1))
  noise = []
  for leaf, leaf_key in zip(leaves, keys):
    shape = leaf.shape if num_samples is None else (num_samples, *leaf.shape)
    noise.append(0.5 * logistic(leaf_key, shape, _noise_dtype(leaf.dtype), rng))
  return jax.tree.unflatten(treedef, noise)


def sample_relaxed(
    lam: PyTree,
    key: jax.Array,
    temperature: float | jax.Array = 1.0,
    num_samples: int | None = None,
    *,
    rng: str = "counter",
) -> PyTree:
  """Relaxed (Gumbel-softmax) binary sample, the weights BayesBiNN trains at.

      w = tanh((lambda + delta) / tau),   delta = 0.5 log(u / (1 - u)),  u ~ U(0, 1)

  As tau -> 0, w -> sign(lambda + delta), which is +1 with probability
  sigmoid(2 lambda). With ``num_samples=K`` every leaf gets a leading axis of
  size K (one network per Monte Carlo sample, the layout ``bayesbinn`` expects
  with ``num_samples=K``). Use it for the first params to train from.
  ``rng`` picks the generator of u (:mod:`bayesbinn_jax.optim.noise`).
  """
  noise = _logistic_noise(lam, key, num_samples, rng)

  def sample(leaf: jax.Array, delta: jax.Array) -> jax.Array:
    tau = jnp.asarray(temperature, delta.dtype)
    return jnp.tanh((leaf.astype(delta.dtype) + delta) / tau).astype(leaf.dtype)

  return jax.tree.map(sample, lam, noise)


def sample_binary(
    lam: PyTree, key: jax.Array, num_samples: int | None = None, *, rng: str = "counter"
) -> PyTree:
  """Exact binary sample w in {-1, +1} with P(w = +1) = sigmoid(2 lambda).

  Drawn as sign(lambda + delta) with the noise of :func:`sample_relaxed`, so it is
  the tau -> 0 limit of the relaxed sample for the same key and ``rng``.
  """
  noise = _logistic_noise(lam, key, num_samples, rng)

  def sample(leaf: jax.Array, delta: jax.Array) -> jax.Array:
    one = jnp.ones((), leaf.dtype)
    return jnp.where(leaf.astype(delta.dtype) + delta > 0, one, -one)

  return jax.tree.map(sample, lam, noise)


def posterior_mode(lam: PyTree) -> PyTree:
  """The most probable network: w = sign(lambda), with lambda <= 0 giving -1."""
  return jax.tree.map(lambda l: jnp.where(l > 0, 1, -1).astype(l.dtype), lam)


def posterior_mean(lam: PyTree) -> PyTree:
  """The posterior mean of every weight: mu = tanh(lambda)."""
  return jax.tree.map(jnp.tanh, lam)


def posterior_as_prior(lam: PyTree) -> PyTree:
  """The posterior to pass as ``prior_lambda`` when training on the next task.

  In continual learning the prior of task k is the posterior of task k - 1, and
  both are Bernoulli in the same natural parameterisation, so the prior is a
  copy of lambda: ``bayesbinn(..., prior_lambda=posterior_as_prior(state.lam))``
  or ``state._replace(prior_lam=posterior_as_prior(state.lam))``.
  """
  return jax.tree.map(jnp.array, lam)


def mc_outputs(
    fn: Callable[[PyTree], jax.Array],
    lam: PyTree,
    key: jax.Array,
    num_samples: int,
    *,
    batch_size: int | None = None,
) -> jax.Array:
  """``fn(w_c)`` for C networks w_c ~ Bernoulli(sigmoid(2 lambda)), stacked on axis 0.

  ``fn(params)`` evaluates one network (close over the inputs and any batch
  statistics). The C networks are evaluated with ``jax.lax.map``,
  ``batch_size`` of them vectorised at a time (all of them when None), which
  bounds memory for large networks.
  """
  if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
    raise ValueError(f"num_samples must be an integer >= 1; got {num_samples!r}.")
  keys = jax.random.split(key, num_samples)
  return jax.lax.map(lambda k: fn(sample_binary(lam, k)), keys, batch_size=batch_size or num_samples)


def predictive_probs(
    logits_fn: Callable[[PyTree], jax.Array],
    lam: PyTree,
    key: jax.Array,
    num_samples: int,
    *,
    batch_size: int | None = None,
) -> jax.Array:
  """Monte Carlo predictive: the mean over C networks of their class probabilities.

      p(y | x) = 1/C sum_c softmax(f(x; w_c)),   w_c ~ Bernoulli(sigmoid(2 lambda))

  Probabilities are averaged, not logits. ``logits_fn(params)`` returns the
  logits of one network; see :func:`mc_outputs` for ``batch_size``.
  """

  def probs(params: PyTree) -> jax.Array:
    logits = logits_fn(params)
    return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)

  return jnp.mean(mc_outputs(probs, lam, key, num_samples, batch_size=batch_size), axis=0)
