"""BayesBiNN: the Bayesian learning rule for binary weights, as an optax transform.

Meng, Bachmann and Khan, "Training Binary Neural Networks using the Bayesian
Learning Rule", ICML 2020. Each weight w in {-1, +1} has a mean-field Bernoulli
posterior with natural parameter lambda (P(w = +1) = sigmoid(2 lambda),
mu = tanh(lambda)). The optimizer state carries lambda; the model holds a
relaxed sample of the weights, at which the gradients are taken:

    w_k   = tanh((lambda + delta_k) / tau),        delta_k = 0.5 log(u_k / (1 - u_k))
    s_k   = (1 - w_k^2 + 1e-10) / tau / (1 - mu^2 + 1e-10)
    g_hat = N / K * sum_k s_k * g_k
    m     = beta m + (1 - beta) (g_hat + kl_weight (lambda - lambda_0))
    lambda <- lambda - lr * m / (1 - beta^t)

with N the training-set size, K the number of Monte Carlo samples, lambda_0 the
prior (zero for a single task) and t the step number from 1. With beta = 0 this
is the paper's lambda <- (1 - lr) lambda - lr (N s g - lambda_0).

``update`` then draws the next relaxed sample from the new lambda and returns
``updates = next_sample - params``, so ``optax.apply_updates`` (or a Flax
``TrainState.apply_gradients``) leaves the model holding the next sample and a
training loop written for Adam works unchanged.

Cost. Per weight the step reads g, w and lambda (and m when beta > 0) and
writes lambda (m) and the next sample: with beta = 0 (the paper's MNIST and
CIFAR-10 setting) no momentum buffer is kept, so the state holds one float per
weight, half of Adam's. A step with a NaN or Inf gradient is skipped by a
select inside the update (``skip_nonfinite``), which XLA fuses into the loops
that write lambda and the sample; ``optax.apply_if_finite`` does the same
through a ``lax.cond`` whose branches XLA cannot fuse with the rest of the
step (measured in ``benchmarks/step_time.py``).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax import _checks
from bayesbinn_jax.optim.noise import check_generator
from bayesbinn_jax.optim.posterior import sample_relaxed

PyTree = Any

GUARD = 1e-10
"""The guard of the released code in both the numerator and denominator of s."""


class BayesBiNNState(NamedTuple):
  """State of :func:`bayesbinn`.

  Attributes:
    count: number of updates applied so far (int32 scalar).
    lam: natural parameters lambda, a tree shaped like one network's params.
    momentum: the running average m of the natural gradient, shaped like lam;
      None when the transform was built with ``momentum=0`` (m is then the
      natural gradient itself and needs no buffer).
    prior_lam: the prior's natural parameters lambda_0, or None for the zero
      prior of a single task (the term is then skipped).
    key: the PRNG key of the next sample.
  """

  count: chex.Array
  lam: PyTree
  momentum: PyTree | None
  prior_lam: PyTree | None
  key: chex.PRNGKey


def _one_minus_square(x: jax.Array) -> jax.Array:
  """1 - x^2 written as (1 - x)(1 + x).

  The product is exact near |x| = 1 and, unlike ``1 - x * x``, cannot be
  re-associated with the ``+ 1e-10`` that follows: XLA rewrites
  ``(1 - x * x) + 1e-10`` to ``(1 + 1e-10) - x * x == 1 - x * x`` in float32,
  which turns the guarded scale into 0 / 0 for saturated weights under jit.
  """
  one = jnp.ones((), x.dtype)
  return (one - x) * (one + x)


def natural_gradient_scale(
    sample: jax.Array, lam: jax.Array, temperature: float | jax.Array
) -> jax.Array:
  """s = (1 - w^2 + 1e-10) / tau / (1 - tanh(lambda)^2 + 1e-10), in w's dtype.

  The derivative of the relaxed sample w.r.t. lambda over the derivative of
  the mean mu w.r.t. lambda, with the guards of the released code.
  """
  dtype = sample.dtype
  guard = jnp.asarray(GUARD, dtype)
  tau = jnp.asarray(temperature, dtype)
  mu = jnp.tanh(lam.astype(dtype))
  return (_one_minus_square(sample) + guard) / tau / (_one_minus_square(mu) + guard)


def saturate(x: jax.Array) -> jax.Array:
  """x clipped to the finite range of its dtype: an overflow becomes +-max, never Inf.

  With tau = 1e-12 the scale s reaches 1e22, and gradients of 1e30 would carry
  N s g past float32's 3.4e38; saturating every intermediate of the update
  keeps Inf (and the Inf - Inf = NaN that would follow) out of the state.
  """
  big = jnp.finfo(x.dtype).max
  return jnp.clip(x, -big, big)


def all_finite(tree: PyTree) -> jax.Array:
  """True when every element of every leaf of ``tree`` is finite (a bool scalar).

  Computed as max |x| < Inf (the max propagates NaN): one reduction per leaf,
  which XLA's CPU backend runs twice as fast as ``all(isfinite(x))``.
  """
  checks = [jnp.max(jnp.abs(leaf)) < jnp.inf for leaf in jax.tree.leaves(tree) if jnp.size(leaf)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def mean_over_samples(x: jax.Array) -> jax.Array:
  """The mean over the leading (Monte Carlo) axis, as a sum of its K slices.

  Equal to ``jnp.mean(x, axis=0)``; XLA's CPU backend runs a reduction over the
  major axis about 20x slower than the K - 1 elementwise additions, which it
  fuses with the computation of ``x``.
  """
  return functools.reduce(operator.add, [x[i] for i in range(x.shape[0])]) / x.shape[0]


def _check_tree_like(name: str, tree: PyTree, reference: PyTree, reference_name: str) -> None:
  """Raises ValueError unless ``tree`` has the structure and shapes of ``reference``."""
  tree_def, ref_def = jax.tree.structure(tree), jax.tree.structure(reference)
  if tree_def != ref_def:
    raise ValueError(
        f"{name} must have the tree structure of {reference_name}; got {tree_def}, "
        f"expected {ref_def}."
    )
  for path, leaf, ref in zip(
      jax.tree_util.tree_flatten_with_path(tree)[0],
      jax.tree.leaves(tree),
      jax.tree.leaves(reference),
      strict=True,
  ):
    if jnp.shape(leaf) != jnp.shape(ref):
      raise ValueError(
          f"{name} at {jax.tree_util.keystr(path[0])} has shape {jnp.shape(leaf)}, "
          f"but {reference_name} has {jnp.shape(ref)} there."
      )


def _sample_axis(params: PyTree, lam: PyTree, num_samples: Any) -> int | None:
  """K when params carry a leading Monte Carlo axis of size K, None otherwise."""
  sizes = set()
  for path, leaf, ref in zip(
      jax.tree_util.tree_flatten_with_path(params)[0],
      jax.tree.leaves(params),
      jax.tree.leaves(lam),
      strict=True,
  ):
    where = jax.tree_util.keystr(path[0])
    if leaf.shape == ref.shape:
      sizes.add(None)
    elif leaf.ndim == ref.ndim + 1 and leaf.shape[1:] == ref.shape:
      sizes.add(leaf.shape[0])
    else:
      raise ValueError(
          f"params at {where} has shape {leaf.shape}, but the optimizer state holds "
          f"{ref.shape}: pass one network's params, or K networks stacked on a "
          "leading axis when num_samples=K."
      )
  if len(sizes) > 1:
    raise ValueError(
        "params mix stacked and unstacked leaves; every leaf needs the same leading "
        f"Monte Carlo axis (sizes seen: {sorted(sizes, key=str)})."
    )
  size = sizes.pop() if sizes else None
  expected = _checks.concrete(num_samples)
  if expected is not None and size != int(expected) and not (expected == 1 and size is None):
    raise ValueError(
        f"num_samples={int(expected)} needs params and grads stacked on a leading axis "
        f"of size {int(expected)} (see sample_relaxed(..., num_samples=K) and "
        f"mc_apply); got {'unstacked params' if size is None else f'leading size {size}'}."
    )
  return size


def bayesbinn(
    learning_rate: optax.ScalarOrSchedule,
    train_set_size: int,
    *,
    temperature: float = 1.0,
    num_samples: int = 1,
    momentum: float = 0.0,
    lambda_init: float = 10.0,
    lambda_init_std: float = 0.0,
    prior_lambda: PyTree | None = None,
    kl_weight: float = 1.0,
    seed: int = 0,
    rng: str = "counter",
    skip_nonfinite: bool = True,
) -> optax.GradientTransformation:
  """BayesBiNN (Meng et al. 2020): natural-gradient descent on Bernoulli posteriors.

  Implements the update of the module docstring. ``update(grads, state, params)``
  needs ``params``: the relaxed sample at which ``grads`` were taken (the
  params the model holds). It returns ``next_sample - params``.

  Args:
    learning_rate: step size alpha, a float or an optax schedule called with
      the step count (from 0).
    train_set_size: N, the number of training examples (multiplied by 10 with
      CIFAR augmentation in the paper).
    temperature: tau of the relaxed sample (1e-10 on MNIST and CIFAR-10).
    num_samples: K Monte Carlo samples per step. With K > 1, the params and
      grads given to ``update`` carry a leading axis of size K and the updates
      have it too; ``init`` still takes one network's params.
    momentum: beta in [0, 1), with Adam-style bias correction 1 - beta^t.
      A Python 0 keeps no momentum buffer (``state.momentum`` is None); an
      array (e.g. injected by ``optax.inject_hyperparams``) always keeps one.
    lambda_init: lambda starts at +-lambda_init with random signs.
    lambda_init_std: standard deviation of Gaussian noise added to the
      initial lambda.
    prior_lambda: the prior's natural parameters lambda_0 (a tree shaped like
      params), e.g. the posterior of the previous task; None for zero.
    kl_weight: weight of the KL term lambda - lambda_0.
    seed: seed of the state's PRNG key (initial lambda and every sample).
    rng: generator of the samples' uniform noise: "counter" (a fast
      counter-based hash, the default) or "threefry" (``jax.random``); see
      :mod:`bayesbinn_jax.optim.noise`.
    skip_nonfinite: skip a step whose gradients hold a NaN or Inf: count,
      lambda, momentum and key stay as they were and the updates are zero
      (``optax.apply_if_finite``'s contract, without its ``lax.cond``).
      False lets a non-finite gradient reach lambda.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`BayesBiNNState`.

  Raises:
    ValueError: for a hyperparameter out of range, naming it; from ``init``
      for a prior whose structure or shapes differ from params; from
      ``update`` when params are missing or not shaped like the state.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_integer("train_set_size", train_set_size, low=1)
  _checks.check_positive("temperature", temperature)
  _checks.check_integer("num_samples", num_samples, low=1)
  _checks.check_range("momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
  _checks.check_range("lambda_init", lambda_init, low=0.0)
  _checks.check_range("lambda_init_std", lambda_init_std, low=0.0)
  _checks.check_range("kl_weight", kl_weight, low=0.0)
  check_generator(rng)
  keeps_no_momentum = isinstance(momentum, (int, float)) and momentum == 0

  def init_fn(params: optax.Params) -> BayesBiNNState:
    if prior_lambda is not None:
      _check_tree_like("prior_lambda", prior_lambda, params, "params")
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    leaves, treedef = jax.tree.flatten(params)
    lam_leaves = []
    for leaf, leaf_key in zip(leaves, jax.random.split(init_key, max(len(leaves), 1))):
      sign_key, noise_key = jax.random.split(leaf_key)
      dtype = jnp.asarray(leaf).dtype
      sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, jnp.shape(leaf)), 1.0, -1.0)
      noise = jax.random.normal(noise_key, jnp.shape(leaf))
      lam_leaves.append((sign * lambda_init + lambda_init_std * noise).astype(dtype))
    lam = jax.tree.unflatten(treedef, lam_leaves)
    prior = None
    if prior_lambda is not None:
      prior = jax.tree.map(lambda p, l: jnp.asarray(p, l.dtype), prior_lambda, lam)
    return BayesBiNNState(
        count=jnp.zeros([], jnp.int32),
        lam=lam,
        momentum=None if keeps_no_momentum else jax.tree.map(jnp.zeros_like, lam),
        prior_lam=prior,
        key=key,
    )

  def update_fn(
      grads: optax.Updates, state: BayesBiNNState, params: optax.Params | None = None
  ) -> tuple[optax.Updates, BayesBiNNState]:
    if params is None:
      raise ValueError(
          "bayesbinn needs params: call update(grads, state, params) with the "
          "relaxed sample the model holds (the weights the grads were taken at)."
      )
    _check_tree_like("grads", grads, params, "params")
    size = _sample_axis(params, state.lam, num_samples)

    def natural_gradient(g: jax.Array, w: jax.Array, lam: jax.Array) -> jax.Array:
      scaled = saturate(natural_gradient_scale(w, lam, temperature) * g.astype(w.dtype))
      if size is not None:
        scaled = mean_over_samples(scaled)
      return saturate((jnp.asarray(train_set_size, lam.dtype) * scaled).astype(lam.dtype))

    finite = all_finite(grads) if skip_nonfinite else None

    def keep(new: jax.Array, old: jax.Array) -> jax.Array:
      """``new``, or ``old`` on a skipped step."""
      return new if finite is None else jnp.where(finite, new, old)

    g_hat = jax.tree.map(natural_gradient, grads, params, state.lam)
    if state.prior_lam is None:
      direction = jax.tree.map(lambda g, l: saturate(g + kl_weight * l), g_hat, state.lam)
    else:
      direction = jax.tree.map(
          lambda g, l, p: saturate(g + kl_weight * (l - p)), g_hat, state.lam, state.prior_lam
      )
    beta = momentum
    if state.momentum is None:
      new_momentum, step_direction = None, direction
    else:
      new_momentum = jax.tree.map(
          lambda m, d: keep(saturate((beta * m + (1 - beta) * d).astype(m.dtype)), m),
          state.momentum, direction)
      step_direction = new_momentum
    t = optax.safe_increment(state.count)
    step_size = learning_rate(state.count) if callable(learning_rate) else learning_rate
    if state.momentum is not None:
      # Floored: a momentum that rounds to 1 (0.999 injected in bfloat16) must not divide by 0.
      step_size = step_size / jnp.maximum(
          1 - jnp.asarray(beta, jnp.float32) ** t.astype(jnp.float32), jnp.finfo(jnp.float32).tiny)
    new_lam = jax.tree.map(
        lambda l, d: keep(saturate((l - step_size * d).astype(l.dtype)), l),
        state.lam,
        step_direction,
    )
    next_key, sample_key = jax.random.split(state.key)
    next_sample = sample_relaxed(new_lam, sample_key, temperature, size, rng=rng)
    updates = jax.tree.map(lambda new, old: keep(new - old, jnp.zeros_like(old)), next_sample, params)
    return updates, BayesBiNNState(
        count=keep(t, state.count), lam=new_lam, momentum=new_momentum, prior_lam=state.prior_lam,
        key=keep(next_key, state.key)
    )

  return optax.GradientTransformation(init_fn, update_fn)
