"""Sign functions with surrogate (straight-through) gradients, for binary weights and activations.

Every function here computes the same forward pass, the sign with the tie rule
``0 -> +1`` (BinaryNet, larq), and differs only in the gradient it hands back:

================  =================================  ========================================
name              forward ``q(x)``                   backward ``d q / d x``
================  =================================  ========================================
``ste_sign``      ``+1 if x >= 0 else -1``           ``1[|x| <= 1]`` (hard tanh's derivative)
``approx_sign``   ``+1 if x >= 0 else -1``           ``max(0, 2 - 2 |x|)`` (piecewise-quadratic
                                                     approximation of the sign)
================  =================================  ========================================

``ste_sign`` is BinaryConnect's and BinaryNet's straight-through estimator
(Courbariaux et al. 2016, arXiv 1602.02830; larq ``ste_sign``). ``approx_sign``
is Bi-Real Net's (Liu et al. 2018, arXiv 1808.00278; larq ``approx_sign``): the
derivative of ``2 x + x |x|`` (clipped to +-1), which is ``2 - 2|x|`` on
``[-1, 1]`` and 0 outside; it is 2 at 0 and falls linearly to 0 at ``|x| = 1``,
a closer match to the sign than the box of ``ste_sign``.

Both are ``jax.custom_jvp`` functions whose tangent is ``dx * q'(x)``; JAX
transposes that linear rule into the vector-Jacobian product, so ``jax.grad``,
``jax.jvp`` and ``jax.jacfwd`` all see the surrogate derivative. The output has
the dtype of ``x``, which must be floating point.

:data:`INPUT_QUANTIZERS` names the activation (input) quantizers a binary layer
accepts: ``"none"`` (inputs used as given), ``"ste_sign"``, ``"approx_sign"``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from bayesbinn_jax._checks import check_choice

BINARY_INPUT_QUANTIZERS: tuple[str, ...] = ("ste_sign", "approx_sign")
"""The quantizers that binarize activations (a network's ``activation_quantizer``)."""
INPUT_QUANTIZERS: tuple[str, ...] = ("none", *BINARY_INPUT_QUANTIZERS)
"""Accepted values of every ``input_quantizer`` argument."""


def _sign(x: jax.Array) -> jax.Array:
  """+1 where ``x >= 0`` (so 0 and -0.0 map to +1), -1 elsewhere; the dtype of ``x``."""
  return jnp.where(x >= 0, jnp.ones_like(x), -jnp.ones_like(x))


@jax.custom_jvp
def ste_sign(w: jax.Array) -> jax.Array:
  """Sign with 0 -> +1 forward and a clipped straight-through gradient.

  Forward::

    ste_sign(w) = +1 if w >= 0 else -1      (so 0 and -0.0 map to +1)

  Backward (BinaryConnect's straight-through estimator, the hard tanh's derivative)::

    d loss / d w = d loss / d ste_sign(w) * 1[|w| <= 1]

  It is written as a ``jax.custom_jvp`` with tangent ``dw * 1[|w| <= 1]``; JAX
  transposes that linear rule into the vector-Jacobian product above, so
  ``jax.grad`` gets the masked straight-through gradient and forward mode
  (``jax.jvp``, ``jax.jacfwd``) works too. The output has the dtype of ``w``,
  which must be floating point.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    >>> ste_sign(w)
    Array([-1., -1.,  1.,  1.,  1.], dtype=float32)
    >>> jax.grad(lambda w: ste_sign(w).sum())(w)        # 1 where |w| <= 1
    Array([0., 1., 1., 1., 0.], dtype=float32)
  """
  return _sign(w)


@ste_sign.defjvp
def _ste_sign_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
  (w,), (dw,) = primals, tangents
  mask = (jnp.abs(w) <= 1).astype(dw.dtype)
  return _sign(w), dw * mask


@jax.custom_jvp
def approx_sign(x: jax.Array) -> jax.Array:
  """Sign with 0 -> +1 forward and Bi-Real Net's piecewise-linear gradient.

  Forward::

    approx_sign(x) = +1 if x >= 0 else -1

  Backward (Liu et al. 2018, larq ``approx_sign``)::

    d loss / d x = d loss / d approx_sign(x) * max(0, 2 - 2 |x|)

  i.e. ``2 - 2|x|`` for ``|x| <= 1`` and 0 outside: the derivative of the
  piecewise polynomial ``2x + x|x|`` that approximates the sign on ``[-1, 1]``.
  A ``jax.custom_jvp`` as :func:`ste_sign`; the output has the dtype of ``x``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    >>> approx_sign(x)
    Array([-1., -1.,  1.,  1.,  1.], dtype=float32)
    >>> jax.grad(lambda x: approx_sign(x).sum())(x)     # max(0, 2 - 2|x|)
    Array([0., 1., 2., 1., 0.], dtype=float32)
  """
  return _sign(x)


@approx_sign.defjvp
def _approx_sign_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
  (x,), (dx,) = primals, tangents
  slope = jnp.maximum(2 - 2 * jnp.abs(x), 0).astype(dx.dtype)
  return _sign(x), dx * slope


_INPUT_QUANTIZER_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "ste_sign": ste_sign,
    "approx_sign": approx_sign,
}


def check_input_quantizer(input_quantizer: Any) -> str:
  """Returns ``input_quantizer`` if it is one of :data:`INPUT_QUANTIZERS`, else raises ValueError."""
  return check_choice("input_quantizer", input_quantizer, INPUT_QUANTIZERS,
                      'Pass "none" for real-valued inputs, "ste_sign" or "approx_sign" for binary (+-1) '
                      "activations.")


def quantize_input(x: jax.Array, input_quantizer: str) -> jax.Array:
  """Applies ``input_quantizer`` to a layer's input: identity for "none", else the named sign."""
  if check_input_quantizer(input_quantizer) == "none":
    return x
  return _INPUT_QUANTIZER_FNS[input_quantizer](x)
