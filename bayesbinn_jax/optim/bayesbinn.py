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
step (measured in ``benchmarks/step_time.py``). ``state.notfinite_count``
counts the consecutive skipped steps, as ``optax.apply_if_finite`` does.

Precision. lambda and m are stored in ``lam_dtype`` (float32 by default,
whatever the params' dtype), and s and the whole update are computed in
``promote_types(lam_dtype, float32)``; only the sample handed to the model
takes the params' dtype. In bfloat16 tanh(lambda) rounds to 1 from
|lambda| ~ 3 and a step below half an ulp of lambda vanishes; in float16 the
1e-10 guard rounds to 0 (s = 0 / 0). With params narrower than float32 the
update also draws the held sample again in float32 (``state.sample_key``):
1 - w^2 of the rounded sample is 0 wherever w rounds to +-1, which would
silence the gradient of every confident weight. That costs one more draw
per step, for narrow params only.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax import _checks
from bayesbinn_jax.optim import _trees
from bayesbinn_jax.optim.noise import canonical_key, check_generator
from bayesbinn_jax.optim.posterior import sample_relaxed
from bayesbinn_jax.optim.state import BayesBiNNState

PyTree = Any

GUARD = 1e-10
"""The guard of the released code in both the numerator and denominator of s."""


def _one_minus_square(x: jax.Array) -> jax.Array:
  """1 - x^2 written as (1 - x)(1 + x).

  The product is exact near |x| = 1 and, unlike ``1 - x * x``, cannot be
  re-associated with the ``+ 1e-10`` that follows: XLA rewrites
  ``(1 - x * x) + 1e-10`` to ``(1 + 1e-10) - x * x == 1 - x * x`` in float32,
  which turns the guarded scale into 0 / 0 for saturated weights under jit.
  """
  one = jnp.ones((), x.dtype)
  return (one - x) * (one + x)


def compute_dtype(lam_dtype: Any) -> jnp.dtype:
  """The dtype of s and of the update: ``promote_types(lam_dtype, float32)``."""
  return jnp.promote_types(lam_dtype, jnp.float32)


def natural_gradient_scale(
    sample: jax.Array, lam: jax.Array, temperature: float | jax.Array
) -> jax.Array:
  """s = (1 - w^2 + 1e-10) / tau / (1 - tanh(lambda)^2 + 1e-10), in float32 or wider.

  The derivative of the relaxed sample w.r.t. lambda over the derivative of
  the mean mu w.r.t. lambda, with the guards of the released code, computed
  in :func:`compute_dtype` of lambda's dtype whatever the sample's dtype (in
  float16 the guard 1e-10 would round to 0).
  """
  dtype = compute_dtype(lam.dtype)
  guard = jnp.asarray(GUARD, dtype)
  tau = jnp.asarray(temperature, dtype)
  mu = jnp.tanh(lam.astype(dtype))
  return (_one_minus_square(sample.astype(dtype)) + guard) / tau / (_one_minus_square(mu) + guard)


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


def _sample_axis(params: PyTree, lam: PyTree, num_samples: Any) -> int | None:
  """K when params carry a leading Monte Carlo axis of size K, None otherwise."""
  sizes = set()
  for (where, leaf), ref in zip(_trees.leaves_with_paths(params), jax.tree.leaves(lam), strict=True):
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




def _held_sample(state: BayesBiNNState, params: PyTree, size: int | None, temperature: Any,
                 generator: str) -> PyTree:
  """The sample the model holds, in float32 or wider where the params are narrower.

  Float32 (or wider) params are the sample itself. Narrower ones are its
  rounding, and 1 - w^2 of a rounded w is 0 wherever w rounds to +-1 (in
  bfloat16 from |w| > 1 - 2^-9): the update then draws the sample again from
  ``state.lam`` and ``state.sample_key``, as the last update did, and keeps
  the float32 value wherever it rounds to the params' value; elsewhere (the
  first step, from params drawn with another key) the params' value, widened.
  """
  def narrow(p: jax.Array, l: jax.Array) -> bool:
    return jnp.promote_types(p.dtype, compute_dtype(l.dtype)) != p.dtype

  if not any(narrow(p, l) for p, l in zip(jax.tree.leaves(params), jax.tree.leaves(state.lam))):
    return params
  drawn = sample_relaxed(state.lam, state.sample_key, temperature, size, generator=generator)
  return jax.tree.map(
      lambda w, d, l: jnp.where(d.astype(w.dtype) == w, d, w.astype(d.dtype)) if narrow(w, l) else w,
      params, drawn, state.lam)


def _check_not_one_network_grads(grads: PyTree, params: PyTree) -> None:
  """Raises the ValueError of ``optax.MultiSteps`` initialised on one network with K > 1.

  MultiSteps shapes its gradient accumulator like the params given to its
  ``init``; initialised on one network, it hands one network's grads (or a
  broadcast of them) with the K stacked params.
  """
  grad_leaves, param_leaves = jax.tree.leaves(grads), jax.tree.leaves(params)
  if (jax.tree.structure(grads) == jax.tree.structure(params) and grad_leaves
      and all(jnp.ndim(p) == jnp.ndim(g) + 1 and jnp.shape(p)[1:] == jnp.shape(g)
              for g, p in zip(grad_leaves, param_leaves))):
    raise ValueError(
        f"bayesbinn got grads shaped like one network but params stacked on a leading axis of "
        f"size {jnp.shape(param_leaves[0])[0]}. Under optax.MultiSteps with num_samples=K > 1, "
        "call init on the K stacked params (MultiSteps(tx, k).init(stacked_params)), so that "
        "its gradient accumulator has their shape; otherwise pass the K stacked grads."
    )


def one_network(params: PyTree, num_samples: Any) -> PyTree:
  """The shapes and dtypes (``jax.ShapeDtypeStruct``s) of one network of ``params``.

  With ``num_samples=K > 1`` (a concrete integer) and every leaf carrying a
  leading axis of size K, ``params`` are taken as K networks stacked on that
  axis (what ``optax.MultiSteps`` hands to ``init``: its gradient accumulator
  is shaped like the params it was initialised on) and the leading axis is
  dropped; otherwise ``params`` are one network. A one-network tree whose
  every leaf happens to start with K is therefore read as stacked; the first
  ``update`` or the model then reports the mismatch of shapes.
  """
  leaves = jax.tree.leaves(params)
  k = _checks.concrete(num_samples)
  stacked = (k is not None and k > 1 and bool(leaves)
             and all(jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == k for leaf in leaves))
  return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf)[1:] if stacked else jnp.shape(leaf),
                                        jnp.result_type(leaf)),
      params)


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
    key: int | jax.Array = 0,
    generator: str = "counter",
    lam_dtype: Any = None,
    skip_nonfinite: bool = True,
) -> optax.GradientTransformationExtraArgs:
  """BayesBiNN (Meng et al. 2020): natural-gradient descent on Bernoulli posteriors.

  Implements the update of the module docstring. ``update(grads, state,
  params, **extra_args)`` needs ``params``: the relaxed sample at which
  ``grads`` were taken (the params the model holds). It returns
  ``next_sample - params`` in the params' dtype; extra keyword arguments are
  ignored (``optax.GradientTransformationExtraArgs``).

  Example::

    tx = bayesbinn(1e-3, train_set_size=len(x), key=0)
    opt_state = tx.init(params)
    params = bayesbinn_jax.sample_params(opt_state, params, key, temperature=1.0)
    grads = jax.grad(loss)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)    # the next sample

  Args:
    learning_rate: step size alpha, a float or an optax schedule called with
      the step count (from 0).
    train_set_size: N, the number of training examples (multiplied by 10 with
      CIFAR augmentation in the paper).
    temperature: tau of the relaxed sample (1e-10 on MNIST and CIFAR-10).
    num_samples: K Monte Carlo samples per step. With K > 1, the params and
      grads given to ``update`` carry a leading axis of size K and the updates
      have it too. ``init`` takes one network's params, or the K stacked
      networks (see :func:`one_network`); under ``optax.MultiSteps`` it must
      be the stacked ones, the shape of the grads it accumulates.
    momentum: beta in [0, 1), with Adam-style bias correction 1 - beta^t.
      A Python 0 keeps no momentum buffer (``state.momentum`` is None); an
      array (e.g. injected by ``optax.inject_hyperparams``) always keeps one.
    lambda_init: lambda starts at +-lambda_init with random signs.
    lambda_init_std: standard deviation of Gaussian noise added to the
      initial lambda.
    prior_lambda: the prior's natural parameters lambda_0 (a tree shaped like
      one network's params), e.g. the posterior of the previous task; None
      for zero.
    kl_weight: weight of the KL term lambda - lambda_0.
    key: the PRNG key of the initial lambda and of every sample: an int seed,
      a typed key (``jax.random.key``) or a raw ``jax.random.PRNGKey``
      (optax's convention, as in ``optax.add_noise``). The state keeps the
      key's kind; an int s gives ``jax.random.PRNGKey(s)``.
    generator: generator of the samples' uniform noise: "counter" (a fast
      counter-based hash, the default) or "threefry" (``jax.random``); see
      :mod:`bayesbinn_jax.optim.noise`.
    lam_dtype: dtype of lambda, the momentum and the prior in the state;
      None (the default) is float32, whatever the params' dtype (optax's
      ``adam(mu_dtype=...)`` is the precedent). The update is computed in
      ``promote_types(lam_dtype, float32)``. Under
      ``optax.inject_hyperparams`` pass a dtype through ``static_args``.
    skip_nonfinite: skip a step whose gradients hold a NaN or Inf: count,
      lambda, momentum and key stay as they were, the updates are zero and
      ``notfinite_count`` grows by one (``optax.apply_if_finite``'s contract,
      without its ``lax.cond``). False lets a non-finite gradient reach
      lambda; ``notfinite_count`` then stays 0.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is
    :class:`BayesBiNNState`.

  Raises:
    ValueError: for a hyperparameter, key, generator or dtype out of range,
      naming it; from ``init`` for a params leaf that is not floating point
      (naming the leaf) or a prior whose structure or shapes differ from one
      network's params; from ``update`` when params are missing, not
      floating point or not shaped like the state, or when grads are not
      shaped like params.
  """
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_integer("train_set_size", train_set_size, low=1)
  _checks.check_positive("temperature", temperature)
  _checks.check_integer("num_samples", num_samples, low=1)
  _checks.check_range("momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
  _checks.check_range("lambda_init", lambda_init, low=0.0)
  _checks.check_range("lambda_init_std", lambda_init_std, low=0.0)
  _checks.check_range("kl_weight", kl_weight, low=0.0)
  check_generator(generator)
  _trees.check_dtype("lam_dtype", lam_dtype, allow_none=True)
  lam_dtype = jnp.dtype(jnp.float32 if lam_dtype is None else lam_dtype)
  initial_key = canonical_key(key)
  keeps_no_momentum = isinstance(momentum, (int, float)) and momentum == 0
  # No normal draw for lambda_init_std = 0 (the paper's setting): the same lambda, bit for
  # bit, and one random-number program less to compile per leaf.
  draws_no_noise = isinstance(lambda_init_std, (int, float)) and lambda_init_std == 0

  def init_fn(params: optax.Params) -> BayesBiNNState:
    _trees.check_floating("bayesbinn", "params", params)
    network = one_network(params, num_samples)
    if prior_lambda is not None:
      _trees.check_tree_like("prior_lambda", prior_lambda, network, "params")
    state_key, init_key = jax.random.split(initial_key)
    # Not the key of the first params (drawn by the caller): update falls back to their values.
    first_sample_key = jax.random.fold_in(init_key, 1)
    leaves, treedef = jax.tree.flatten(network)
    lam_leaves = []
    for leaf, leaf_key in zip(leaves, jax.random.split(init_key, max(len(leaves), 1))):
      sign_key, noise_key = jax.random.split(leaf_key)
      sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, leaf.shape), 1.0, -1.0)
      if draws_no_noise:
        lam_leaves.append((sign * lambda_init).astype(lam_dtype))
      else:
        noise = jax.random.normal(noise_key, leaf.shape)
        lam_leaves.append((sign * lambda_init + lambda_init_std * noise).astype(lam_dtype))
    lam = jax.tree.unflatten(treedef, lam_leaves)
    prior = None if prior_lambda is None else jax.tree.map(lambda p: jnp.asarray(p, lam_dtype), prior_lambda)
    return BayesBiNNState(
        count=jnp.zeros([], jnp.int32),
        lam=lam,
        momentum=None if keeps_no_momentum else jax.tree.map(jnp.zeros_like, lam),
        prior_lam=prior,
        key=state_key,
        sample_key=first_sample_key,
        notfinite_count=jnp.zeros([], jnp.int32),
    )

  def update_fn(
      grads: optax.Updates, state: BayesBiNNState, params: optax.Params | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, BayesBiNNState]:
    del extra_args
    if params is None:
      raise ValueError(
          "bayesbinn needs params: call update(grads, state, params) with the "
          "relaxed sample the model holds (the weights the grads were taken at)."
      )
    _check_not_one_network_grads(grads, params)
    _trees.check_tree_like("grads", grads, params, "params")
    _trees.check_floating("bayesbinn", "params", params)
    _trees.check_floating("bayesbinn", "grads", grads)
    size = _sample_axis(params, state.lam, num_samples)

    def natural_gradient(g: jax.Array, w: jax.Array, lam: jax.Array) -> jax.Array:
      dtype = compute_dtype(lam.dtype)
      scaled = saturate(natural_gradient_scale(w, lam, temperature) * g.astype(dtype))
      if size is not None:
        scaled = mean_over_samples(scaled)
      return saturate(jnp.asarray(train_set_size, dtype) * scaled)

    finite = all_finite(grads) if skip_nonfinite else None

    def unless_skipped(new: jax.Array, old: jax.Array) -> jax.Array:
      """``new``, or ``old`` on a step skipped for non-finite gradients."""
      return new if finite is None else jnp.where(finite, new, old)

    held = _held_sample(state, params, size, temperature, generator)
    g_hat = jax.tree.map(natural_gradient, grads, held, state.lam)
    if state.prior_lam is None:
      direction = jax.tree.map(lambda g, l: saturate(g + kl_weight * l.astype(g.dtype)), g_hat, state.lam)
    else:
      direction = jax.tree.map(
          lambda g, l, p: saturate(g + kl_weight * (l.astype(g.dtype) - p.astype(g.dtype))),
          g_hat, state.lam, state.prior_lam)
    beta = momentum
    if state.momentum is None:
      new_momentum, step_direction = None, direction
    else:
      new_momentum = jax.tree.map(
          lambda m, d: unless_skipped(saturate((beta * m.astype(d.dtype) + (1 - beta) * d).astype(m.dtype)), m),
          state.momentum, direction)
      step_direction = new_momentum
    t = optax.safe_increment(state.count)
    step_size = learning_rate(state.count) if callable(learning_rate) else learning_rate
    if state.momentum is not None:
      # Floored: a momentum that rounds to 1 (0.999 injected in bfloat16) must not divide by 0.
      step_size = step_size / jnp.maximum(
          1 - jnp.asarray(beta, jnp.float32) ** t.astype(jnp.float32), jnp.finfo(jnp.float32).tiny)

    def lambda_step(l: jax.Array, d: jax.Array) -> jax.Array:
      dtype = compute_dtype(l.dtype)
      new = saturate((l.astype(dtype) - step_size * d.astype(dtype)).astype(l.dtype))
      return unless_skipped(new, l)

    new_lam = jax.tree.map(lambda_step, state.lam, step_direction)
    next_key, sample_key = jax.random.split(state.key)
    next_sample = sample_relaxed(new_lam, sample_key, temperature, size, generator=generator)
    updates = jax.tree.map(
        lambda new, old: unless_skipped(new.astype(old.dtype) - old, jnp.zeros_like(old)), next_sample, params)
    if finite is None:
      notfinite_count = state.notfinite_count
    else:
      notfinite_count = jnp.where(finite, jnp.zeros_like(state.notfinite_count),
                                  optax.safe_increment(state.notfinite_count))
    return updates, BayesBiNNState(
        count=unless_skipped(t, state.count), lam=new_lam, momentum=new_momentum,
        prior_lam=state.prior_lam, key=unless_skipped(next_key, state.key),
        sample_key=unless_skipped(sample_key, state.sample_key),
        notfinite_count=notfinite_count,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
