"""The BayesBiNN posterior: sampling, point estimates and predictive probabilities.

The posterior over each binary weight w in {-1, +1} is a Bernoulli with natural
parameter lambda:

    P(w = +1) = sigmoid(2 lambda),      E[w] = mu = tanh(lambda).

Two layers of functions. The lambda-tree functions (:func:`sample_relaxed`,
:func:`sample_binary`, :func:`posterior_mode`, :func:`posterior_mean`,
:func:`posterior_as_prior`) take the tree of lambdas (``state.lam`` of
:func:`bayesbinn_jax.bayesbinn`) and return trees in lambda's dtype. The
samplers and the point estimates are jitted (``num_samples`` and ``generator``
static): called eagerly, each is one compiled program per tree structure and
shapes (op by op, the counter generator's hash alone compiled some twenty
programs per leaf shape, seconds for a small MLP) and gives the bits it gives
inside a jitted step; under an enclosing ``jax.jit`` it is inlined.

The state helpers (:func:`mode_params`, :func:`mean_params`,
:func:`sample_params`) take the optimizer state, bare or composed
(``optax.chain``, ``multi_transform``, ``inject_hyperparams``, ``MultiSteps``,
``apply_if_finite``), and the current params, as optax's
``schedule_free_eval_params(state, params)`` does, and return a tree shaped
like one network's params: the leaves BayesBiNN trains come from lambda, in
the params' dtype; every other leaf (``optax.MaskedNode`` in BayesBiNN's state
under ``multi_transform``: BatchNorm scales trained by Adam, say) comes from
``params``. The predictives (:func:`mc_outputs`, :func:`predictive_probs`)
take either. Every draw takes an explicit key.

Example (``labels`` gives "binary" to kernels, "real" to the rest)::

  tx = optax.multi_transform({"binary": bayesbinn(1e-3, n), "real": optax.adam(1e-3)}, labels)
  opt_state = tx.init(params)
  params = sample_params(opt_state, params, key, temperature=1.0)   # train from here
  ...
  mode = mode_params(opt_state, params)     # +-1 kernels, trained BatchNorm scales
  probs = predictive_probs(lambda w: model.apply({"params": w}, x), opt_state, key, 32,
                           params=params)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax.optim.nested import find_states
from bayesbinn_jax.optim.sampling import sample_binary, sample_relaxed
from bayesbinn_jax.optim.state import BayesBiNNState
from bayesbinn_jax.optim.unbox import unbox

PyTree = Any


@jax.jit
def posterior_mode(lam: PyTree) -> PyTree:
  """The most probable network: w = sign(lambda), with lambda <= 0 giving -1.

  Examples:
    >>> import jax.numpy as jnp
    >>> posterior_mode({"w": jnp.array([2.0, 0.0, -0.5])})["w"]
    Array([ 1., -1., -1.], dtype=float32)
  """
  return jax.tree.map(lambda l: jnp.where(l > 0, 1, -1).astype(l.dtype), lam)


@jax.jit
def posterior_mean(lam: PyTree) -> PyTree:
  """The posterior mean of every weight: mu = tanh(lambda).

  Examples:
    >>> import jax.numpy as jnp
    >>> [round(mu, 3) for mu in posterior_mean({"w": jnp.array([0.0, 0.5, -20.0])})["w"].tolist()]
    [0.0, 0.462, -1.0]
  """
  return jax.tree.map(jnp.tanh, lam)


def posterior_as_prior(lam: PyTree) -> PyTree:
  """The posterior to pass as ``prior_lambda`` when training on the next task.

  In continual learning the prior of task k is the posterior of task k - 1, and
  both are Bernoulli in the same natural parameterisation, so the prior is a
  copy of lambda: ``bayesbinn(..., prior_lambda=posterior_as_prior(state.lam))``
  or ``state._replace(prior_lam=posterior_as_prior(state.lam))``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from bayesbinn_jax import bayesbinn
    >>> params = {"w": jnp.zeros(3)}
    >>> state = bayesbinn(1e-3, 100).init(params)          # ... trained on task 1
    >>> task2 = bayesbinn(1e-3, 100, prior_lambda=posterior_as_prior(state.lam))
    >>> bool(jnp.all(task2.init(params).prior_lam["w"] == state.lam["w"]))
    True
  """
  return jax.tree.map(jnp.array, lam)


def _masked(node: Any) -> bool:
  return isinstance(node, optax.MaskedNode)


def posterior_lambda(opt_state: Any) -> PyTree:
  """The tree of lambdas of every BayesBiNN state in ``opt_state``, merged.

  One :class:`BayesBiNNState` gives its ``lam``; several (one per
  ``multi_transform`` group, say) give one tree holding, at each leaf, the
  lambda of the state that trains it. Leaves no BayesBiNN state trains are
  ``optax.MaskedNode``.

  Raises:
    ValueError: when ``opt_state`` holds no BayesBiNN state, when their lambda
      trees differ in structure, or when two train the same leaf.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from bayesbinn_jax import bayesbinn
    >>> params = {"kernel": jnp.zeros((2, 3)), "scale": jnp.ones(3)}
    >>> tx = optax.multi_transform({"binary": bayesbinn(1e-3, 100), "real": optax.adam(1e-3)},
    ...                            {"kernel": "binary", "scale": "real"})
    >>> lam = posterior_lambda(tx.init(params))
    >>> lam["kernel"].shape, lam["scale"]                  # Adam's leaf is masked
    ((2, 3), MaskedNode())
  """
  lams = [state.lam for state in find_states(opt_state, BayesBiNNState)]  # NNX containers unboxed
  if not lams:
    raise ValueError(
        "the optimizer state holds no BayesBiNNState: pass the state of a transform "
        "built with bayesbinn (bare or inside chain, multi_transform, MultiSteps...)."
    )
  if len(lams) == 1:
    return lams[0]

  def merge(*leaves: Any) -> Any:
    owned = [leaf for leaf in leaves if not _masked(leaf)]
    if len(owned) > 1:
      raise ValueError("two BayesBiNN states in the optimizer state train the same leaf.")
    return owned[0] if owned else optax.MaskedNode()

  try:
    return jax.tree.map(merge, *lams, is_leaf=_masked)
  except (TypeError, ValueError) as error:
    if "train the same leaf" in str(error):
      raise
    raise ValueError(
        "the BayesBiNN states in the optimizer state have lambda trees of different "
        f"structures ({error}); use one transform per params tree."
    ) from error


def _stacked_size(lam: PyTree, params: PyTree) -> int | None:  # params unboxed by _fill
  """K when ``params`` hold K networks stacked on a leading axis, None for one network.

  Read from the leaves BayesBiNN trains, whose one-network shape lambda fixes:
  each is lambda's shape or (K, *lambda's shape), the same K for all.
  """
  sizes = set()

  def leaf(where: jax.tree_util.KeyPath, lam_leaf: Any, param: Any) -> None:
    if _masked(lam_leaf):
      return
    shape, ref = jnp.shape(param), jnp.shape(lam_leaf)
    if shape != ref and shape[1:] != ref:
      raise ValueError(
          f"params at {jax.tree_util.keystr(where)} has shape {shape}, but the BayesBiNN state "
          f"holds lambda of shape {ref} there: pass the params the optimizer updates (one "
          "network, or K stacked).")
    sizes.add(None if shape == ref else shape[0])

  try:
    jax.tree_util.tree_map_with_path(leaf, lam, params, is_leaf=_masked)
  except (TypeError, ValueError) as error:
    if "params at" in str(error):
      raise
    raise ValueError("params must have the tree structure of the params the optimizer was "
                     f"initialised on ({error}).") from error
  if len(sizes) > 1:
    raise ValueError(f"params mix one network and stacked networks (leading sizes {sorted(sizes, key=str)}).")
  return sizes.pop() if sizes else None


def _fill(draw: PyTree, lam: PyTree, params: PyTree, num_samples: int | None) -> PyTree:
  """``draw`` (a tree like ``lam``) at BayesBiNN's leaves, ``params`` elsewhere.

  BayesBiNN's leaves take the dtype of ``params`` there. The other leaves are
  one network's: from K stacked params (K read from BayesBiNN's leaves) the
  first network's; with ``num_samples`` they are then broadcast to a leading
  axis of that size, like the draw.
  """
  params = unbox(params)  # nnx.state(model, nnx.Param) is taken as it is
  stacked = _stacked_size(lam, params)

  def leaf(where: jax.tree_util.KeyPath, drawn: Any, lam_leaf: Any, param: Any) -> Any:
    param = jnp.asarray(param)
    if not _masked(lam_leaf):
      return drawn.astype(param.dtype)
    if stacked is not None:
      if param.ndim == 0 or param.shape[0] != stacked:
        raise ValueError(
            f"params at {jax.tree_util.keystr(where)} has shape {param.shape}, but BayesBiNN's "
            f"params are {stacked} networks stacked on a leading axis: every leaf needs it.")
      param = param[0]
    return param if num_samples is None else jnp.broadcast_to(param, (num_samples, *param.shape))

  return jax.tree_util.tree_map_with_path(leaf, draw, lam, params, is_leaf=_masked)


def mode_params(opt_state: Any, params: PyTree) -> PyTree:
  """The most probable network: sign(lambda) (lambda <= 0 gives -1) at BayesBiNN's
  leaves, in the params' dtype, and ``params`` elsewhere.

  Args:
    opt_state: an optimizer state holding one or more :class:`BayesBiNNState`.
    params: the current params (one network, or the K stacked samples).

  Returns:
    A tree shaped like one network's params, every leaf: the leaves BayesBiNN
    does not train are the first network's when ``params`` are K stacked.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax import bayesbinn
    >>> params = {"w": jnp.zeros((3, 2))}                     # K = 3 stacked samples
    >>> state = bayesbinn(1e-3, 10, num_samples=3).init(params)
    >>> mode_params(state, params)["w"].shape
    (2,)

  Raises:
    ValueError: naming the problem when ``opt_state`` holds no BayesBiNN state
      or ``params`` does not fit it.
  """
  lam = posterior_lambda(opt_state)
  return _fill(posterior_mode(lam), lam, params, None)


def mean_params(opt_state: Any, params: PyTree) -> PyTree:
  """The posterior mean tanh(lambda) at BayesBiNN's leaves, ``params`` elsewhere.

  Arguments, result and errors as in :func:`mode_params`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from bayesbinn_jax import bayesbinn
    >>> params = {"w": jnp.zeros(3)}
    >>> state = bayesbinn(1e-3, 100, lambda_init=0.5).init(params)   # lambda = +-0.5
    >>> [round(abs(mu), 3) for mu in mean_params(state, params)["w"].tolist()]   # |tanh(0.5)|
    [0.462, 0.462, 0.462]
  """
  lam = posterior_lambda(opt_state)
  return _fill(posterior_mean(lam), lam, params, None)


def sample_params(
    opt_state: Any,
    params: PyTree,
    key: jax.Array,
    num_samples: int | None = None,
    *,
    temperature: float | jax.Array | None = None,
    generator: str = "counter",
) -> PyTree:
  """A network drawn from the posterior: BayesBiNN's leaves sampled, ``params`` elsewhere.

  ``temperature=None`` draws the exact binary sample w in {-1, +1}, P(w = +1)
  = sigmoid(2 lambda) (:func:`sample_binary`: evaluation); a temperature tau
  draws the relaxed sample tanh((lambda + delta) / tau)
  (:func:`sample_relaxed`: the params to train from). For the same ``key``
  the binary sample is the tau -> 0 limit of the relaxed one, and the draws
  equal those of the lambda-tree functions on :func:`posterior_lambda`.

  Args:
    opt_state: an optimizer state holding one or more :class:`BayesBiNNState`.
    params: the current params (one network, or the K stacked samples).
    key: the PRNG key of the draw.
    num_samples: None for one network; K for K networks stacked on a new
      leading axis, the layout of ``bayesbinn(..., num_samples=K)`` and
      ``mc_apply``. The leaves BayesBiNN does not train are one network's
      (the first of K stacked params), broadcast to the K networks.
    temperature: None, or tau > 0 of the relaxed sample.
    generator: "counter" or "threefry" (:mod:`bayesbinn_jax.optim.noise`).

  Returns:
    A params tree in the params' dtypes.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayesbinn_jax import bayesbinn
    >>> params = {"w": jnp.zeros((4, 2))}
    >>> state = bayesbinn(1e-3, 10).init(params)
    >>> first = sample_params(state, params, jax.random.key(0), temperature=1.0)   # train from here
    >>> sample_params(state, params, jax.random.key(1), num_samples=5)["w"].shape
    (5, 4, 2)
  """
  lam = posterior_lambda(opt_state)
  if temperature is None:
    draw = sample_binary(lam, key, num_samples, generator=generator)
  else:
    draw = sample_relaxed(lam, key, temperature, num_samples, generator=generator)
  return _fill(draw, lam, params, num_samples)


def _network_sampler(posterior: Any, params: PyTree | None) -> Callable[[jax.Array], PyTree]:
  """key -> one exact binary network, from a lambda tree or an optimizer state."""
  posterior, params = unbox(posterior), unbox(params)
  holds_state = bool(find_states(posterior, BayesBiNNState))
  lam = posterior_lambda(posterior) if holds_state else posterior
  if params is not None:
    return lambda key: _fill(sample_binary(lam, key), lam, params, None)
  if any(_masked(leaf) for leaf in jax.tree.leaves(lam, is_leaf=_masked)):
    raise ValueError(
        "BayesBiNN trains only part of the params (optax.multi_transform): pass params= "
        "to fill in the others."
    )
  return lambda key: sample_binary(lam, key)


def mc_outputs(
    fn: Callable[[PyTree], jax.Array],
    posterior: Any,
    key: jax.Array,
    num_samples: int,
    *,
    params: PyTree | None = None,
    batch_size: int | None = None,
) -> jax.Array:
  """``fn(w_c)`` for C networks w_c ~ Bernoulli(sigmoid(2 lambda)), stacked on axis 0.

  Args:
    fn: ``fn(params)`` evaluates one network (close over the inputs and any
      batch statistics).
    posterior: the tree of lambdas, or an optimizer state holding BayesBiNN
      state(s) (bare or composed, see :func:`posterior_lambda`).
    key: the PRNG key of the C draws.
    num_samples: C >= 1.
    params: the current params; their leaves not trained by BayesBiNN are
      handed to ``fn`` as they are (required when there are such leaves), and
      the sampled leaves take their dtype.
    batch_size: the C networks run through ``jax.lax.map``, this many
      vectorised at a time (all of them when None), which bounds memory.

  Returns:
    The C outputs of ``fn`` stacked on a new leading axis.

  Raises:
    ValueError: for ``num_samples`` < 1 or not an integer, or a partial
      posterior without ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> lam = {"w": jnp.array([20.0, -20.0, 0.0])}          # w = +1, -1, and a coin
    >>> out = mc_outputs(lambda p: jnp.sum(p["w"]), lam, jax.random.key(0), num_samples=8)
    >>> out.shape, bool(jnp.all(jnp.abs(out) == 1))           # 1 - 1 +- 1
    ((8,), True)
  """
  if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
    raise ValueError(f"num_samples must be an integer >= 1; got {num_samples!r}.")
  network = _network_sampler(posterior, params)
  keys = jax.random.split(key, num_samples)
  return jax.lax.map(lambda k: fn(network(k)), keys, batch_size=batch_size or num_samples)


def predictive_probs(
    logits_fn: Callable[[PyTree], jax.Array],
    posterior: Any,
    key: jax.Array,
    num_samples: int,
    *,
    params: PyTree | None = None,
    batch_size: int | None = None,
) -> jax.Array:
  """Monte Carlo predictive: the mean over C networks of their class probabilities.

      p(y | x) = 1/C sum_c softmax(f(x; w_c)),   w_c ~ Bernoulli(sigmoid(2 lambda))

  Probabilities are averaged, not logits, in at least float32.
  ``logits_fn(params)`` returns the logits of one network; the other
  arguments as in :func:`mc_outputs`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> lam = {"w": jnp.array([[20.0, -20.0]])}            # 1 input -> 2 logits, w = [[1, -1]]
    >>> x = jnp.ones((5, 1))
    >>> probs = predictive_probs(lambda p: x @ p["w"], lam, jax.random.key(0), num_samples=4)
    >>> probs.shape, [round(p, 3) for p in probs[0].tolist()]   # softmax([1, -1])
    ((5, 2), [0.881, 0.119])
  """

  def probs(network: PyTree) -> jax.Array:
    logits = logits_fn(network)
    return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)

  return jnp.mean(mc_outputs(probs, posterior, key, num_samples, params=params, batch_size=batch_size), axis=0)
