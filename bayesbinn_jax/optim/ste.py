"""Straight-through estimator baseline: BinaryConnect latent weights with Adam.

The network is built with ``quantizer="ste"``: its forward pass uses
``sign(w_r)`` (0 -> +1) and its backward pass hands the gradient straight
through to the latent real weights ``w_r``, zeroed where ``|w_r| > 1``. The
optimizer sees ordinary gradients with respect to ``w_r`` and does::

  w_r <- clip(w_r - lr * adam(g), -1, 1)

Latent weights start from the layers' default init (uniform in
``+-sqrt(1.5 / (fan_in + fan_out))``) and need no transform before the first
step; the network evaluated with ``quantizer="ste"`` is the binary network
``sign(w_r)``.

Full precision (the paper's upper baseline) needs nothing from this module:
it is plain ``optax.adam`` on the same network built with ``quantizer="none"``.

Example::

  model = ToyMLP(quantizer="ste")
  params = model.init(key, x, train=False)["params"]
  tx = ste_adam(optax.cosine_decay_schedule(1e-2, num_epochs))
  opt_state = tx.init(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)   # every leaf in [-1, 1]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bayesbinn_jax._checks import check_positive, check_range
from bayesbinn_jax.optim import _trees


def clip_weights(bound: float = 1.0) -> optax.GradientTransformationExtraArgs:
  """Turns updates ``u`` into ``clip(w + u, -bound, bound) - w``.

  After ``optax.apply_updates`` the parameters are exactly ``w + u`` where
  that lies in ``[-bound, bound]``, and the bound (or at most one ulp inside
  it) elsewhere. They never leave ``[-bound, bound]``, not even by one ulp: a
  latent weight at ``1 + ulp`` would have its straight-through gradient masked
  to zero for good. The transform is stateless and needs ``params``.

  Args:
    bound: half-width of the interval, > 0.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``optax.EmptyState``;
    the updates come out in the params' dtype.

  Raises:
    ValueError: for a bound <= 0; from ``init`` and ``update`` for a params
      leaf that is not floating point, naming it, or updates not shaped like
      params.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {"w": jnp.array([0.5, 0.9, -0.9])}
    >>> tx = clip_weights(1.0)
    >>> updates, _ = tx.update({"w": jnp.array([0.25, 0.5, -0.5])}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["w"]
    Array([ 0.75,  1.  , -1.  ], dtype=float32)
  """
  check_positive("bound", bound)

  def init_fn(params: optax.Params) -> optax.EmptyState:
    _trees.check_floating("clip_weights", "params", params)
    return optax.EmptyState()

  def clip_leaf(update: jax.Array, param: jax.Array) -> jax.Array:
    param = jnp.asarray(param)
    dtype = param.dtype
    update = jnp.asarray(update).astype(dtype)
    high = jnp.asarray(bound, dtype)
    moved = param + update
    target = jnp.clip(moved, -high, high)
    # Inside the interval, keep ``update`` itself: ``param + update`` is then
    # exactly what ``optax.apply_updates`` computes.
    delta = jnp.where(moved == target, update, target - param)
    # ``param + (target - param)`` can round one ulp past ``target``; adding
    # is monotone in ``delta``, and one ulp of ``delta`` is at least the
    # rounding error made computing it, so one step back fixes it.
    new = param + delta
    delta = jnp.where(new > high, jnp.nextafter(delta, jnp.asarray(-jnp.inf, dtype)), delta)
    delta = jnp.where(new < -high, jnp.nextafter(delta, jnp.asarray(jnp.inf, dtype)), delta)
    return delta

  def update_fn(
      updates: optax.Updates,
      state: optax.EmptyState,
      params: optax.Params | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, optax.EmptyState]:
    del extra_args
    if params is None:
      raise ValueError(
          "clip_weights needs the current parameters: call "
          "tx.update(grads, opt_state, params), not tx.update(grads, opt_state)."
      )
    _trees.check_tree_like("updates", updates, params, "params")
    _trees.check_floating("clip_weights", "params", params)
    return jax.tree.map(clip_leaf, updates, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _scale_by_adam_in(
    b1: float, b2: float, eps: float, state_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
  """``optax.scale_by_adam`` with both moments kept in ``state_dtype``.

  optax keeps the second moment in the params' dtype (``mu_dtype`` only
  sets the first): in bfloat16 an EMA with b2 = 0.999 cannot move. Here both
  moments, and the Adam direction, are computed and kept in ``state_dtype``
  (None: ``promote_types(leaf dtype, float32)``); the direction is handed on
  in that dtype and cast to the params' dtype by the transform that ends the
  chain.
  """
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

  def widen(tree: optax.Params) -> optax.Params:
    return jax.tree.map(lambda x: jnp.asarray(x).astype(_trees.state_dtype(state_dtype, jnp.result_type(x))), tree)

  def init_fn(params: optax.Params) -> optax.OptState:
    _trees.check_floating("ste_adam", "params", params)
    return adam.init(widen(params))

  def update_fn(
      updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None, **extra_args: Any
  ) -> tuple[optax.Updates, optax.OptState]:
    del extra_args
    _trees.check_floating("ste_adam", "grads", updates)
    return adam.update(widen(updates), state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ste_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Adam on the latent weights of an STE network, then clipping to [-1, 1].

  With ``t`` the step number from 1 and ``lr_t`` the learning rate (a
  schedule is called with the step count from 0)::

    m = b1 m + (1 - b1) g
    v = b2 v + (1 - b2) g^2
    w_r <- clip(w_r - lr_t * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), -1, 1)

  i.e. ``optax.chain(optax.scale_by_adam(b1, b2, eps),
  optax.scale_by_learning_rate(learning_rate), clip_weights(1.0))`` with the
  moments m and v, and the step, computed and kept in float32 or wider (the
  updates come out in the params' dtype).

  Args:
    learning_rate: a float > 0 or an optax schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to the root of the second moment, >= 0.
    state_dtype: dtype of the moments; None (the default) keeps each leaf's
      in ``promote_types(params dtype, float32)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Raises:
    ValueError: for a hyperparameter out of range; from ``init`` and
      ``update`` for a params or grads leaf that is not floating point, naming
      the leaf.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {"w": jnp.array([0.0, 0.999])}   # latent weights; Adam steps by lr * sign(g)
    >>> tx = ste_adam(0.01)
    >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
    >>> [round(w, 4) for w in optax.apply_updates(params, updates)["w"].tolist()]
    [-0.01, 1.0]
  """
  check_positive("learning_rate", learning_rate)
  check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
  check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
  check_range("eps", eps, low=0.0)
  _trees.check_dtype("state_dtype", state_dtype, allow_none=True)
  return optax.chain(
      _scale_by_adam_in(b1, b2, eps, state_dtype),
      optax.scale_by_learning_rate(learning_rate),
      clip_weights(1.0),
  )
