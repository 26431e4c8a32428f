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

The pieces live in their own modules, each tested alone: the relaxed sample in
:mod:`~bayesbinn_jax.optim.sampling`, s and g_hat in
:mod:`~bayesbinn_jax.optim.natural_gradient`, the prior term, momentum and the
step on lambda in :mod:`~bayesbinn_jax.optim.lambda_step`. This module checks
the arguments, draws the initial lambda and composes the pieces into one
elementwise chain per leaf, which XLA fuses into one pass over memory.

``update`` then draws the next relaxed sample from the new lambda and returns
``updates = next_sample - params``, so ``optax.apply_updates`` (or a Flax
``TrainState.apply_gradients``) leaves the model holding the next sample and a
training loop written for Adam works unchanged.

Which sample the gradient was taken at. The state knows the sample it handed
out (``state.lam`` and ``state.sample_key``). On the first update the params
may be no sample at all (``TrainState.create`` on the network's own init), so
s is taken from the state's own sample there; afterwards from the params,
except where narrow params (bfloat16, float16) are a rounding of the state's
float32 sample (1 - w^2 of a rounded w is 0 wherever w rounds to +-1). At a
saturated temperature (:data:`~bayesbinn_jax.optim.sampling.SATURATED_TEMPERATURE`,
the paper's 1e-10) every sample is +-1, s depends on lambda alone
(:func:`~bayesbinn_jax.optim.natural_gradient.saturated_scale`) and the update
reads no sample: the step is then faster than at moderate temperatures, where
it draws the held sample again.

Cost. Per weight the step reads g and lambda (and m when beta > 0, and the
params for the returned updates) and writes lambda (m) and the next sample:
with beta = 0 no momentum buffer is kept, so the state holds one float per
weight, half of Adam's. A step with a NaN or Inf gradient is skipped by a
select inside the update (``skip_nonfinite``), fused into the loops that write
lambda and the sample; ``state.notfinite_count`` counts the consecutive skipped
steps, as ``optax.apply_if_finite`` does.

Precision. lambda and m are stored in ``lam_dtype`` (float32 by default,
whatever the params' dtype), and s and the whole update are computed in
``promote_types(lam_dtype, float32)``; only the sample handed to the model
takes the params' dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax import _checks
from bayesbinn_jax.optim import _trees
from bayesbinn_jax.optim.lambda_step import descend, kl_direction, momentum_average, step_size
from bayesbinn_jax.optim.natural_gradient import (  # noqa: F401 - compute_dtype, saturate, ... re-exported
    GUARD,
    compute_dtype,
    mean_over_samples,
    natural_gradient,
    natural_gradient_scale,
    one_minus_square,
    saturate,
    saturated_scale,
)
from bayesbinn_jax.optim.noise import canonical_key, check_generator
from bayesbinn_jax.optim.sampling import is_saturated, sample_relaxed
from bayesbinn_jax.optim.state import BayesBiNNState

PyTree = Any

__all__ = ("GUARD", "BayesBiNNState", "bayesbinn", "natural_gradient_scale", "one_network")


def _is_placeholder(params: PyTree) -> bool:
  """True for the stand-in params ``optax.tree_map_params`` hands to ``init``."""
  return type(params).__name__ == "_ParamsPlaceholder" and not jax.tree.leaves(params)


def one_network(params: PyTree, num_samples: Any) -> PyTree:
  """The shapes and dtypes (``jax.ShapeDtypeStruct``s) of one network of the params ``init`` got.

  ``init`` takes one network's params or, with ``num_samples=K > 1``, the K
  networks stacked on a leading axis (what ``optax.MultiSteps`` hands it: its
  gradient accumulator is shaped like the params it was initialised on). The
  params are read as stacked when every leaf has a leading axis of size K.
  This is the one place the transform reads the layout from shapes; from then
  on lambda fixes it, and ``update`` and every helper check the params against
  it exactly. A one-network tree whose every leaf starts with K is read as
  stacked; ``update`` then names the leaf that does not fit.

  >>> import numpy as np
  >>> one_network({"w": np.zeros((3, 2))}, 3)["w"].shape, one_network({"w": np.zeros((3, 2))}, 1)["w"].shape
  ((2,), (3, 2))
  """
  leaves = jax.tree.leaves(params)
  k = _checks.concrete(num_samples)
  stacked = (k is not None and k > 1 and bool(leaves)
             and all(jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == k for leaf in leaves))
  return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf)[1:] if stacked else jnp.shape(leaf),
                                        jnp.result_type(leaf)),
      params)


def _check_hyperparameters(learning_rate: Any, train_set_size: Any, temperature: Any, num_samples: Any,
                           momentum: Any, lambda_init: Any, lambda_init_std: Any, kl_weight: Any,
                           generator: str, lam_dtype: Any) -> None:
  """One ValueError naming the first hyperparameter out of range (concrete values only)."""
  _checks.check_positive("learning_rate", learning_rate)
  _checks.check_count("train_set_size", train_set_size)
  _checks.check_positive("temperature", temperature)
  _checks.check_integer("num_samples", num_samples, low=1)
  _checks.check_range("momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
  _checks.check_range("lambda_init", lambda_init, low=0.0)
  _checks.check_range("lambda_init_std", lambda_init_std, low=0.0)
  _checks.check_range("kl_weight", kl_weight, low=0.0)
  check_generator(generator)
  _trees.check_dtype("lam_dtype", lam_dtype, allow_none=True)


def init_lambda(network: PyTree, key: jax.Array, lambda_init: Any, lambda_init_std: Any,
                lam_dtype: Any) -> PyTree:
  """lambda = +-lambda_init with random signs, plus N(0, lambda_init_std^2) noise, per leaf.

  No normal draw at a Python ``lambda_init_std == 0`` (the paper's setting):
  the same lambda bit for bit, and one random program less to compile per leaf.

  >>> import jax, jax.numpy as jnp
  >>> lam = init_lambda({"w": jax.ShapeDtypeStruct((4,), jnp.float32)}, jax.random.key(0), 10.0, 0.0,
  ...                   jnp.float32)
  >>> sorted(set(abs(lam["w"]).tolist()))
  [10.0]
  """
  draws_no_noise = isinstance(lambda_init_std, (int, float)) and lambda_init_std == 0
  leaves, treedef = jax.tree.flatten(network)
  lam_leaves = []
  for leaf, leaf_key in zip(leaves, jax.random.split(key, max(len(leaves), 1))):
    sign_key, noise_key = jax.random.split(leaf_key)
    sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, leaf.shape), 1.0, -1.0)
    if draws_no_noise:
      lam_leaves.append((sign * lambda_init).astype(lam_dtype))
    else:
      noise = jax.random.normal(noise_key, leaf.shape)
      lam_leaves.append((sign * lambda_init + lambda_init_std * noise).astype(lam_dtype))
  return jax.tree.unflatten(treedef, lam_leaves)


def _samples_in(params: PyTree, lam: PyTree, num_samples: Any) -> int | None:
  """K when the params carry K stacked networks, None for one network; checked against lambda.

  A concrete ``num_samples`` fixes the layout (K > 1: every leaf ``(K, *lambda.shape)``;
  1: lambda's shapes); a traced one (injected without ``static_args``) reads it
  from the leaves' extra leading axis, which must agree.
  """
  if jax.tree.structure(params) != jax.tree.structure(lam):  # type: ignore[operator]
    raise ValueError(
        f"params must have the tree structure of the params init got; got {jax.tree.structure(params)}, "
        f"lambda has {jax.tree.structure(lam)}.")
  expected = _checks.concrete(num_samples)
  sizes = set()
  for (where, leaf), ref in zip(_trees.leaves_with_paths(params), jax.tree.leaves(lam), strict=True):
    shape, ref_shape = jnp.shape(leaf), jnp.shape(ref)
    size = shape[0] if len(shape) == len(ref_shape) + 1 and shape[1:] == ref_shape else None
    want = None if expected is None or expected == 1 else int(expected)
    if (expected is not None and size != want) or (size is None and shape != ref_shape):
      needed = ref_shape if want is None else (want, *ref_shape)
      raise ValueError(
          f"params at {where} has shape {shape}, but lambda there is {ref_shape} and "
          f"num_samples={int(expected) if expected else 'K'} needs params of shape {needed} "
          "(K > 1: K networks stacked on a leading axis, as sample_relaxed(..., num_samples=K) "
          "draws them).")
    sizes.add(size)
  if len(sizes) > 1:
    raise ValueError(f"params mix stacked and unstacked leaves (leading sizes {sorted(sizes, key=str)}).")
  return sizes.pop() if sizes else None


def _check_not_one_network_grads(grads: PyTree, params: PyTree) -> None:
  """Raises the ValueError of ``optax.MultiSteps`` initialised on one network with K > 1.

  MultiSteps shapes its gradient accumulator like the params given to its
  ``init``; initialised on one network, it hands one network's grads (or a
  broadcast of them) with the K stacked params.
  """
  grad_leaves, param_leaves = jax.tree.leaves(grads), jax.tree.leaves(params)
  if (jax.tree.structure(grads) == jax.tree.structure(params) and grad_leaves  # type: ignore[operator]
      and all(jnp.ndim(p) == jnp.ndim(g) + 1 and jnp.shape(p)[1:] == jnp.shape(g)
              for g, p in zip(grad_leaves, param_leaves))):
    raise ValueError(
        f"bayesbinn got grads shaped like one network but params stacked on a leading axis of "
        f"size {jnp.shape(param_leaves[0])[0]}. Under optax.MultiSteps with num_samples=K > 1, "
        "call init on the K stacked params (MultiSteps(tx, k).init(stacked_params)), so that "
        "its gradient accumulator has their shape; otherwise pass the K stacked grads."
    )


def _held_sample(state: BayesBiNNState, params: PyTree, size: int | None, temperature: Any,
                 generator: str) -> PyTree:
  """The sample the gradients were taken at, in float32 or wider (see the module docstring).

  The state's own draw (``state.lam``, ``state.sample_key``) on the first update;
  later the params, except where params narrower than lambda's compute dtype
  are the rounding of that draw, which then stands for them.
  """
  drawn = sample_relaxed(state.lam, state.sample_key, temperature, size, generator=generator)
  first = state.count == 0

  def pick(w: jax.Array, d: jax.Array, l: jax.Array) -> jax.Array:
    narrow = jnp.promote_types(w.dtype, compute_dtype(l.dtype)) != w.dtype
    use_draw = (first | (d.astype(w.dtype) == w)) if narrow else first
    return jnp.where(use_draw, d, w.astype(d.dtype))

  return jax.tree.map(pick, params, drawn, state.lam)


def _check_update_inputs(grads: PyTree, params: PyTree | None) -> None:
  if params is None:
    raise ValueError("bayesbinn needs params: call update(grads, state, params) with the relaxed "
                     "sample the model holds (the weights the grads were taken at).")
  _check_not_one_network_grads(grads, params)
  _trees.check_tree_like("grads", grads, params, "params")
  _trees.check_floating("bayesbinn", "params", params)
  _trees.check_floating("bayesbinn", "grads", grads)


def _scales(state: BayesBiNNState, params: PyTree, size: int | None, temperature: Any, generator: str,
            saturated: bool) -> PyTree:
  """s per leaf: from lambda alone at a saturated temperature, else at the held sample."""
  if saturated:
    return jax.tree.map(lambda l: saturated_scale(l, temperature), state.lam)
  held = _held_sample(state, params, size, temperature, generator)
  return jax.tree.map(lambda w, l: natural_gradient_scale(w, l, temperature), held, state.lam)


def _kl_directions(g_hat: PyTree, state: BayesBiNNState, kl_weight: Any) -> PyTree:
  """d = g_hat + kl_weight (lambda - lambda_0) per leaf (lambda_0 = 0 without a prior)."""
  if state.prior_lam is None:
    return jax.tree.map(lambda g, l: kl_direction(g, l, None, kl_weight), g_hat, state.lam)
  return jax.tree.map(lambda g, l, p: kl_direction(g, l, p, kl_weight), g_hat, state.lam, state.prior_lam)


def _skipper(finite: jax.Array | None) -> Any:
  """new -> new, or old on a step skipped for non-finite gradients (a select XLA fuses)."""
  return lambda new, old: new if finite is None else jnp.where(finite, new, old)


def _init_state(params: PyTree, initial_key: jax.Array, num_samples: Any, prior_lambda: PyTree | None,
                lambda_init: Any, lambda_init_std: Any, lam_dtype: Any, keeps_momentum: bool) -> BayesBiNNState:
  zero = jnp.zeros([], jnp.int32)
  if _is_placeholder(params):  # optax.tree_map_params: every params-shaped field is the placeholder
    return BayesBiNNState(zero, params, params if keeps_momentum else None,
                          None if prior_lambda is None else params, initial_key, initial_key, zero)
  _trees.check_floating("bayesbinn", "params", params)
  network = one_network(params, num_samples)
  if prior_lambda is not None:
    _trees.check_tree_like("prior_lambda", prior_lambda, network, "params")
  state_key, init_key = jax.random.split(initial_key)
  lam = init_lambda(network, init_key, lambda_init, lambda_init_std, lam_dtype)
  return BayesBiNNState(
      count=zero, lam=lam, momentum=jax.tree.map(jnp.zeros_like, lam) if keeps_momentum else None,
      prior_lam=None if prior_lambda is None else jax.tree.map(lambda p: jnp.asarray(p, lam_dtype), prior_lambda),
      key=state_key, sample_key=jax.random.fold_in(init_key, 1), notfinite_count=zero)


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

  .. math::

    \\lambda \\leftarrow \\lambda - \\frac{\\alpha_t}{1 - \\beta^t} m, \\quad
    m \\leftarrow \\beta m + (1 - \\beta)\\Big(\\frac{N}{K} \\sum_k s_k \\odot g_k
    + \\kappa (\\lambda - \\lambda_0)\\Big)

  ``update(grads, state, params, **extra_args)`` needs ``params``: the relaxed
  sample the model holds, at which ``grads`` were taken. It returns
  ``next_sample - params`` in the params' dtype; extra keyword arguments are
  ignored (``optax.GradientTransformationExtraArgs``). The params may start
  anywhere: the network's own init (``TrainState.create``), or a sample
  (:func:`~bayesbinn_jax.optim.posterior.sample_params`); the first update
  takes its scale from the state's own sample.

  Args:
    learning_rate: step size alpha, a float or an optax schedule called with
      the step count (from 0).
    train_set_size: N, a positive integer: the number of training examples
      (times 10 with the paper's CIFAR augmentation).
    temperature: tau of the relaxed sample (1e-10 on MNIST and CIFAR-10).
    num_samples: K Monte Carlo samples per step. With K > 1, the params and
      grads given to ``update`` carry a leading axis of size K and the updates
      have it too. ``init`` takes one network's params or the K stacked ones
      (:func:`one_network`); under ``optax.MultiSteps`` the stacked ones.
    momentum: beta in [0, 1), with Adam-style bias correction 1 - beta^t.
      A Python 0 keeps no momentum buffer (``state.momentum`` is None); an
      array (e.g. injected by ``optax.inject_hyperparams``) always keeps one.
    lambda_init: lambda starts at +-lambda_init with random signs.
    lambda_init_std: standard deviation of Gaussian noise added to it.
    prior_lambda: the prior's natural parameters lambda_0 (a tree shaped like
      one network's params), e.g. the previous task's posterior; None for 0.
    kl_weight: kappa, the weight of the KL term lambda - lambda_0.
    key: the PRNG key of the initial lambda and of every sample: an int seed,
      a typed key (``jax.random.key``) or a raw ``jax.random.PRNGKey``.
    generator: the uniform noise's generator, "counter" (default) or
      "threefry" (:mod:`bayesbinn_jax.optim.noise`).
    lam_dtype: dtype of lambda, the momentum and the prior; None is float32
      whatever the params' dtype. Under ``optax.inject_hyperparams`` pass it
      in ``static_args``.
    skip_nonfinite: skip a step whose gradients hold a NaN or Inf (count,
      lambda, momentum and keys stay, the updates are zero,
      ``notfinite_count`` grows by one), ``optax.apply_if_finite``'s contract
      without its ``lax.cond``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is
    :class:`BayesBiNNState`.

  Raises:
    ValueError: for a hyperparameter, key, generator or dtype out of range,
      naming it; from ``init`` for a params leaf that is not floating point
      or a prior that does not fit one network; from ``update`` when params
      are missing or do not fit lambda, naming the leaf.

  References:
    Meng, Bachmann and Khan, "Training Binary Neural Networks using the
    Bayesian Learning Rule", ICML 2020, eq. (8)-(11), Algorithm 1.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import bayesbinn_jax as bb
    >>> params = {"w": jnp.zeros(3)}           # anywhere: the network's init will do
    >>> tx = bb.bayesbinn(1e-3, train_set_size=100, temperature=1.0, key=0)
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([0.1, -0.2, 0.0])}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)   # the next relaxed sample
    >>> bool(jnp.all(jnp.abs(params["w"]) <= 1)), int(state.count)
    (True, 1)
  """
  _check_hyperparameters(learning_rate, train_set_size, temperature, num_samples, momentum,
                         lambda_init, lambda_init_std, kl_weight, generator, lam_dtype)
  lam_dtype = jnp.dtype(jnp.float32 if lam_dtype is None else lam_dtype)
  initial_key = canonical_key(key)
  beta = None if isinstance(momentum, (int, float)) and momentum == 0 else momentum
  saturated = is_saturated(temperature)

  def init_fn(params: optax.Params) -> BayesBiNNState:
    return _init_state(params, initial_key, num_samples, prior_lambda, lambda_init, lambda_init_std,
                       lam_dtype, beta is not None)

  def update_fn(grads: optax.Updates, state: BayesBiNNState, params: optax.Params | None = None,
                **extra_args: Any) -> tuple[optax.Updates, BayesBiNNState]:
    del extra_args
    _check_update_inputs(grads, params)
    size = _samples_in(params, state.lam, num_samples)
    finite = all_finite(grads) if skip_nonfinite else None
    unless_skipped = _skipper(finite)
    scales = _scales(state, params, size, temperature, generator, saturated)
    g_hat = jax.tree.map(lambda g, s: natural_gradient(g, s, train_set_size, size is not None), grads, scales)
    direction = _kl_directions(g_hat, state, kl_weight)
    if beta is None:
      new_momentum, moving = None, direction
    else:
      new_momentum = jax.tree.map(lambda m, d: unless_skipped(momentum_average(m, d, beta), m),
                                  state.momentum, direction)
      moving = new_momentum
    size_t = step_size(learning_rate, state.count, beta)
    new_lam = jax.tree.map(lambda l, d: unless_skipped(descend(l, d, size_t), l), state.lam, moving)
    next_key, sample_key = jax.random.split(state.key)
    next_sample = sample_relaxed(new_lam, sample_key, temperature, size, generator=generator)
    updates = jax.tree.map(
        lambda new, old: unless_skipped(new.astype(old.dtype) - old, jnp.zeros_like(old)), next_sample, params)
    notfinite_count = state.notfinite_count if finite is None else jnp.where(
        finite, jnp.zeros_like(state.notfinite_count), optax.safe_increment(state.notfinite_count))
    return updates, BayesBiNNState(
        count=unless_skipped(optax.safe_increment(state.count), state.count), lam=new_lam,
        momentum=new_momentum, prior_lam=state.prior_lam, key=unless_skipped(next_key, state.key),
        sample_key=unless_skipped(sample_key, state.sample_key), notfinite_count=notfinite_count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def all_finite(tree: PyTree) -> jax.Array:
  """True when every element of every leaf of ``tree`` is finite (a bool scalar).

  Computed as max |x| < Inf (the max propagates NaN): one reduction per leaf,
  which XLA's CPU backend runs twice as fast as ``all(isfinite(x))``.

  >>> bool(all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
  False
  """
  checks = [jnp.max(jnp.abs(leaf)) < jnp.inf for leaf in jax.tree.leaves(tree) if jnp.size(leaf)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)
