"""Proximal mean-field (PMF) baseline of Ajanthan et al. (2019).

Each binary weight has a latent real parameter ``u``; the network, built with
``quantizer="none"``, uses the relaxed weight ``w = tanh(beta * u)`` (the
two-state softmax projection), and ``beta`` grows during training so that
``w`` tends to ``sign(u)``. This transform carries ``u`` and ``beta`` in its
state and hands the network ``w`` through the ordinary optax loop::

  tx = pmf(pmf_lr_schedule(1e-3), rho=1.2)
  opt_state = tx.init(params)                # u = params, beta = 1
  params = pmf_weights(opt_state)            # w = tanh(u): train from here
  for batch in batches:
    grads = jax.grad(loss)(params, batch)    # gradient w.r.t. w
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # = tanh(beta * u)
  binary_params = pmf_mode(opt_state)        # evaluate sign(u)

Networks that also hold real-valued parameters put ``pmf`` on the binary
kernels and Adam on the rest with ``optax.multi_transform``; the helpers then
take ``params=`` to fill in the leaves that ``pmf`` does not own.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax._checks import check_integer, check_positive, check_range
from bayesbinn_jax.optim import _trees
from bayesbinn_jax.optim.nested import find_state


class PMFState(NamedTuple):
  """State of :func:`pmf`.

  Attributes:
    count: number of updates done so far (int32); the learning-rate schedule
      is called with it.
    latent: the latent real weights ``u``, shaped like params, in float32 or
      wider (``state_dtype``).
    beta: the current projection sharpness (float32 scalar), 1 at init.
    adam_state: the ``optax.ScaleByAdamState`` of the Adam step on ``u``
      (moments in the latent's dtype).

  Examples:
    >>> import jax.numpy as jnp
    >>> state = pmf(1e-3, rho=1.2).init({"w": jnp.zeros(2, jnp.bfloat16)})
    >>> state.latent["w"].dtype, float(state.beta), int(state.count)
    (dtype('float32'), 1.0, 0)
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count
  latent: optax.Params
  beta: jax.Array
  adam_state: optax.OptState


def pmf_lr_schedule(
    init: float,
    decay: float = 0.2,
    every: int = 7000,
) -> optax.Schedule:
  """Step decay ``init * decay ** floor(count / every)`` (x0.2 every 7k on MNIST).

  Examples:
    >>> schedule = pmf_lr_schedule(1e-3, decay=0.5, every=10)
    >>> [round(float(schedule(t)), 6) for t in (0, 9, 10, 25)]
    [0.001, 0.001, 0.0005, 0.00025]
  """
  check_positive("init", init)
  check_range("decay", decay, low=0.0, low_inclusive=False, high=1.0)
  check_integer("every", every, low=1)
  return optax.exponential_decay(
      init_value=init,
      transition_steps=int(every),
      decay_rate=decay,
      staircase=True,
  )


def pmf(
    learning_rate: optax.ScalarOrSchedule,
    rho: float,
    *,
    beta_interval: int = 100,
    beta_max: float = 1e4,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Proximal mean-field: Adam on latent weights, network weights tanh(beta u).

  With ``t`` the update count from 0, ``g`` the gradient with respect to the
  network's weights ``w = tanh(beta_t u_t)`` and ``lr_t`` the learning rate (a
  schedule is called with ``t``)::

    d = g * beta_t * (1 - tanh(beta_t u_t)^2) + weight_decay * u_t
    u_{t+1} = u_t - lr_t * adam(d)                (bias-corrected, as optax.adam)
    beta_{t+1} = min(rho * beta_t, beta_max)  if (t + 1) % beta_interval == 0
               = beta_t                        otherwise
    updates = tanh(beta_{t+1} u_{t+1}) - w

  so that ``optax.apply_updates`` gives the network ``tanh(beta_{t+1}
  u_{t+1})``. The chain rule term is computed from ``u`` in the state, not
  from ``params``. Weight decay is coupled L2 on ``u`` (PyTorch Adam's
  ``weight_decay``).

  Args:
    learning_rate: a float > 0 or an optax schedule (see
      :func:`pmf_lr_schedule`).
    rho: growth factor of ``beta``, >= 1.
    beta_interval: ``beta`` grows every this many updates, an integer >= 1.
    beta_max: cap on ``beta``, >= 1.
    weight_decay: L2 coefficient on ``u``, >= 0.
    b1: Adam first-moment decay, in [0, 1).
    b2: Adam second-moment decay, in [0, 1).
    eps: Adam epsilon, >= 0.
    state_dtype: dtype of ``u`` and of Adam's moments; None (the default)
      keeps each leaf's in ``promote_types(params dtype, float32)``. The
      update is computed in that dtype and cast to the params' dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`PMFState`; ``update`` needs ``params`` (the weights the network
    used).

  Raises:
    ValueError: for a hyperparameter out of range; from ``init`` and
      ``update`` for a params or grads leaf that is not floating point, naming
      the leaf, or grads not shaped like params.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = pmf(1e-2, rho=1.5, beta_interval=1)      # beta grows x1.5 every update
    >>> state = tx.init({"w": jnp.array([0.5, -0.2])})  # u = params, beta = 1
    >>> params = pmf_weights(state)                    # w = tanh(u): train from here
    >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> [round(u, 4) for u in state.latent["w"].tolist()], float(state.beta)  # u - lr * sign(d)
    ([0.49, -0.19], 1.5)
    >>> bool(jnp.allclose(params["w"], jnp.tanh(1.5 * state.latent["w"])))
    True
  """
  check_positive("learning_rate", learning_rate)
  check_range("rho", rho, low=1.0)
  check_integer("beta_interval", beta_interval, low=1)
  check_range("beta_max", beta_max, low=1.0)
  check_range("weight_decay", weight_decay, low=0.0)
  check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
  check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
  check_range("eps", eps, low=0.0)
  _trees.check_dtype("state_dtype", state_dtype, allow_none=True)
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

  def init_fn(params: optax.Params) -> PMFState:
    _trees.check_floating("pmf", "params", params)
    latent = jax.tree.map(
        lambda p: jnp.array(p, _trees.state_dtype(state_dtype, jnp.result_type(p)), copy=True), params)
    return PMFState(
        count=jnp.zeros([], jnp.int32),
        latent=latent,
        beta=jnp.ones([], jnp.float32),
        adam_state=adam.init(latent),
    )

  def update_fn(
      updates: optax.Updates,
      state: PMFState,
      params: optax.Params | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, PMFState]:
    del extra_args
    if params is None:
      raise ValueError(
          "pmf needs the current network weights: call "
          "tx.update(grads, opt_state, params), not tx.update(grads, opt_state)."
      )
    _trees.check_tree_like("grads", updates, params, "params")
    _trees.check_floating("pmf", "params", params)
    _trees.check_floating("pmf", "grads", updates)
    beta = state.beta

    def latent_grad(g: jax.Array, u: jax.Array) -> jax.Array:
      w = jnp.tanh(beta * u)
      d = g.astype(u.dtype) * beta * (1 - w * w) + weight_decay * u
      return d.astype(u.dtype)

    grads_u = jax.tree.map(latent_grad, updates, state.latent)
    steps, adam_state = adam.update(grads_u, state.adam_state, state.latent)
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    latent = jax.tree.map(
        lambda u, s: (u - lr * s).astype(u.dtype), state.latent, steps
    )

    count = optax.safe_increment(state.count)
    grow = count % beta_interval == 0
    new_beta = jnp.where(
        grow, jnp.minimum(beta * rho, beta_max), beta
    ).astype(jnp.float32)
    new_updates = jax.tree.map(
        lambda u, w: jnp.tanh(new_beta * u).astype(jnp.asarray(w).dtype) - w,
        latent,
        params,
    )
    return new_updates, PMFState(
        count=count, latent=latent, beta=new_beta, adam_state=adam_state
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _map_latent(
    fn: Callable[[jax.Array], jax.Array], state: Any, params: optax.Params | None
) -> optax.Params:
  """Maps ``fn`` over the latent weights, filling unowned leaves from params."""
  latent = find_state(state, PMFState).latent
  masked = lambda x: isinstance(x, optax.MaskedNode)
  if params is None:
    if any(masked(x) for x in jax.tree.leaves(latent, is_leaf=masked)):
      raise ValueError(
          "pmf only owns part of the parameters (optax.multi_transform): pass "
          "params= to fill in the others."
      )
    return jax.tree.map(fn, latent)
  return jax.tree.map(
      lambda u, p: p if masked(u) else fn(u).astype(jnp.asarray(p).dtype), latent, params, is_leaf=masked
  )


def pmf_weights(state: Any, params: optax.Params | None = None) -> optax.Params:
  """The network weights ``tanh(beta * u)`` held by a PMF optimizer state.

  Right after ``tx.init`` this is ``tanh(u)``, the weights to train from.
  ``state`` is a :class:`PMFState` or any optimizer state holding exactly one
  (e.g. inside ``optax.chain`` or ``optax.multi_transform``). Leaves that pmf
  does not own (``optax.MaskedNode`` under ``multi_transform``) are taken
  from ``params``, which is then required. With ``params`` the result takes
  their dtype; without, the latent's (float32 or wider by default).

  Examples:
    >>> import jax.numpy as jnp
    >>> state = pmf(1e-3, rho=1.2).init({"w": jnp.array([2.0, 0.0, -0.5])})
    >>> [round(w, 3) for w in pmf_weights(state)["w"].tolist()]   # tanh(1 * u)
    [0.964, 0.0, -0.462]
  """
  beta = find_state(state, PMFState).beta
  return _map_latent(lambda u: jnp.tanh(beta * u).astype(u.dtype), state, params)


def pmf_mode(state: Any, params: optax.Params | None = None) -> optax.Params:
  """The binary weights ``sign(u)`` (0 -> +1) used to evaluate a PMF network.

  ``state`` and ``params`` as in :func:`pmf_weights`.

  Examples:
    >>> import jax.numpy as jnp
    >>> state = pmf(1e-3, rho=1.2).init({"w": jnp.array([2.0, 0.0, -0.5])})
    >>> pmf_mode(state)["w"]
    Array([ 1.,  1., -1.], dtype=float32)
  """
  return _map_latent(
      lambda u: jnp.where(u >= 0, 1, -1).astype(u.dtype), state, params
  )
