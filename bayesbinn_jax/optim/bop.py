"""Bop, the binary optimizer of Helwegen et al. (NeurIPS 2019).

Bop keeps the weights binary, ``w in {-1, +1}``, and flips a weight when an
exponential moving average of its gradient has agreed with it strongly enough
for long enough::

  m <- (1 - gamma) m + gamma g          (no bias correction)
  w <- -w   where w * m > threshold     (m has the sign of w and |m| > threshold)

The network is built with ``quantizer="none"``: it uses the +-1 parameters as
they are, and ``g`` is the gradient of the loss with respect to them. Real
initial parameters are turned into +-1 with :func:`binarize_params` before the
first step. The updates are ``-2 w`` where a weight flips and ``0`` elsewhere,
so ``optax.apply_updates`` keeps every parameter exactly +-1.

Networks that also hold real-valued parameters (BatchNorm with learned scale,
biases) train those with Adam beside Bop, through ``optax.multi_transform``::

  labels = jax.tree.map_with_path(
      lambda path, _: "binary" if path[-1].key == "kernel" else "real", params)
  tx = optax.multi_transform(
      {"binary": bop(threshold=1e-8, gamma=1e-5), "real": optax.adam(1e-3)},
      labels)
  params = jax.tree.map(       # binarize the binary kernels only
      lambda label, p: binarize_params(p) if label == "binary" else p,
      labels, params)
  opt_state = tx.init(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)

The fraction of binary weights flipped by the last step is
``optax.tree_utils.tree_get(opt_state, "flip_fraction")``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesbinn_jax._checks import check_range
from bayesbinn_jax.optim import _trees


class BopState(NamedTuple):
  """State of :func:`bop`.

  Attributes:
    count: number of updates done so far (int32); schedules are called with it.
    momentum: the moving average ``m`` of the gradients, shaped like params,
      in float32 or wider (``state_dtype``).
    flip_fraction: fraction of all weights flipped by the last update (float32
      scalar; 0 before the first update).

  Examples:
    >>> import jax.numpy as jnp
    >>> state = bop(threshold=1e-8, gamma=1e-5).init({"w": jnp.ones(3, jnp.bfloat16)})
    >>> state.momentum["w"].dtype, float(state.flip_fraction)   # a bfloat16 m could not move
    (dtype('float32'), 0.0)
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count
  momentum: optax.Updates
  flip_fraction: jax.Array


def binarize_params(params: optax.Params) -> optax.Params:
  """Returns ``sign(params)`` with 0 mapped to +1, in each leaf's dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> binarize_params({"w": jnp.array([0.3, 0.0, -2.0])})["w"]   # Bop's first params
    Array([ 1.,  1., -1.], dtype=float32)
  """
  return jax.tree.map(
      lambda p: jnp.where(jnp.asarray(p) >= 0, 1, -1).astype(jnp.asarray(p).dtype),
      params,
  )


class NotBinaryParamsWarning(UserWarning):
  """Bop was handed params that are not +-1; its update binarizes them (sign, 0 -> +1)."""


def _warn_unless_binary(params: optax.Params) -> None:
  """Warns, naming the first leaf, when concrete params hold a value other than +-1."""
  for where, leaf in _trees.leaves_with_paths(params):
    if isinstance(leaf, jax.core.Tracer) or not hasattr(leaf, "shape"):
      return
    if not np.all(np.abs(np.asarray(leaf, np.float32)) == 1):  # NumPy: no op staged under a trace
      warnings.warn(
          f"bop: params at {where} are not +-1 (Bop flips binary weights); this update "
          "binarizes them with sign (0 -> +1). Start from binarize_params(params).",
          NotBinaryParamsWarning, stacklevel=3)
      return


def bop(
    threshold: optax.ScalarOrSchedule,
    gamma: optax.ScalarOrSchedule,
    *,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """The Bop optimizer for binary weights.

  With ``t`` the update count from 0 (schedules are called with it)::

    m_t = (1 - gamma(t)) m_{t-1} + gamma(t) g_t,      m_{-1} = 0
    flip = w * m_t > threshold(t)
    updates = -2 w  where flip, else 0

  Args:
    threshold: flipping threshold ``tau``, a float >= 0 or an optax schedule.
    gamma: adaptivity rate of the moving average, a float in (0, 1] or an
      optax schedule.
    state_dtype: dtype of the momentum; None (the default) keeps each leaf's
      in ``promote_types(params dtype, float32)``: with gamma = 1e-5 a
      bfloat16 average could never move.

  Bop's precondition is params of +-1. Params that are not (the network's
  float init, a sample never binarised) are binarised by the update itself:
  it returns ``target - params`` with ``target = -sign(w)`` where a weight flips
  and ``sign(w)`` elsewhere (0 -> +1), which for +-1 params is the ``-2 w`` / 0
  above bit for bit. ``optax.apply_updates`` then leaves each weight within one
  ulp of +-1 (w + (target - w) rounds), and exactly +-1 after the next update;
  called eagerly on such params the update also warns
  (:class:`NotBinaryParamsWarning`, naming the leaf).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`BopState`; ``update`` needs ``params`` (the current +-1 weights)
    and returns updates in the params' dtype.

  Raises:
    ValueError: for a hyperparameter out of range; from ``init`` and
      ``update`` for a params or grads leaf that is not floating point, naming
      the leaf, or grads not shaped like params.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = binarize_params({"w": jnp.array([0.5, -0.5, 0.5])})   # [1, -1, 1]
    >>> tx = bop(threshold=0.5, gamma=1.0)          # gamma = 1: m is the last gradient
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0, 1.0, 0.2])}, state, params)
    >>> optax.apply_updates(params, updates)["w"]   # only w * m = 1 > 0.5 flips
    Array([-1., -1.,  1.], dtype=float32)
    >>> round(float(state.flip_fraction), 3)
    0.333
  """
  check_range("threshold", threshold, low=0.0)
  check_range("gamma", gamma, low=0.0, low_inclusive=False, high=1.0)
  _trees.check_dtype("state_dtype", state_dtype, allow_none=True)

  def init_fn(params: optax.Params) -> BopState:
    _trees.check_floating("bop", "params", params)
    return BopState(
        count=jnp.zeros([], jnp.int32),
        momentum=jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), _trees.state_dtype(state_dtype, jnp.result_type(p))), params),
        flip_fraction=jnp.zeros([], jnp.float32),
    )

  def update_fn(
      updates: optax.Updates,
      state: BopState,
      params: optax.Params | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, BopState]:
    del extra_args
    if params is None:
      raise ValueError(
          "bop needs the current binary weights: call "
          "tx.update(grads, opt_state, params), not tx.update(grads, opt_state)."
      )
    _trees.check_tree_like("grads", updates, params, "params")
    _trees.check_floating("bop", "params", params)
    _trees.check_floating("bop", "grads", updates)
    tau = threshold(state.count) if callable(threshold) else threshold
    rate = gamma(state.count) if callable(gamma) else gamma

    momentum = jax.tree.map(
        lambda m, g: ((1 - rate) * m + rate * g.astype(m.dtype)).astype(m.dtype),
        state.momentum,
        updates,
    )
    _warn_unless_binary(params)
    signs = binarize_params(params)
    flips = jax.tree.map(lambda b, m: b.astype(m.dtype) * m > tau, signs, momentum)
    new_updates = jax.tree.map(lambda w, b, flip: jnp.where(flip, -b, b) - w, params, signs, flips)

    flip_leaves = jax.tree.leaves(flips)
    total = sum(leaf.size for leaf in flip_leaves)
    if total:
      flipped = sum(jnp.sum(leaf, dtype=jnp.int32) for leaf in flip_leaves)
      flip_fraction = (flipped / total).astype(jnp.float32)
    else:
      flip_fraction = jnp.zeros([], jnp.float32)

    new_state = BopState(
        count=optax.safe_increment(state.count),
        momentum=momentum,
        flip_fraction=flip_fraction,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
