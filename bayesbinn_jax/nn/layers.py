"""Binary layers for Flax linen: sign with a straight-through gradient, dense and
convolution layers without bias, and BatchNorm without learned gain or bias.

Every binary layer owns a single parameter, ``kernel``, and takes a ``quantizer``:

- ``"none"``: the kernel is used as given. The optimizer hands the values to use:
  BayesBiNN the relaxed sample ``tanh((lambda + delta) / tau)``, Bop exactly +-1,
  PMF ``tanh(beta * u)``, Adam (full precision) real weights.
- ``"ste"``: the forward pass uses :func:`ste_sign` of the kernel (BinaryConnect),
  so the kernel holds the latent real weights of the straight-through estimator.

The default kernel init is the paper's (and the released code's BinaryLinear)
``U(-b, b)`` with ``b = sqrt(1.5 / (fan_in + fan_out))``, which is
``variance_scaling(0.25, "fan_avg", "uniform")``: that initializer draws
``U(-1, 1) * sqrt(3 * 0.25 / ((fan_in + fan_out) / 2))``. For a convolution the
fans include the receptive field, ``fan_in = kh * kw * in`` and
``fan_out = kh * kw * out``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesbinn_jax._checks import check_positive, check_range

Initializer = Callable[..., jax.Array]

QUANTIZERS: tuple[str, ...] = ("none", "ste")
"""Accepted values of every ``quantizer`` argument."""

default_kernel_init: Initializer = nn.initializers.variance_scaling(
    0.25, "fan_avg", "uniform"
)
"""The paper's init: ``U(+-sqrt(1.5 / (fan_in + fan_out)))``."""


def check_quantizer(quantizer: Any) -> str:
  """Returns ``quantizer`` if it is one of :data:`QUANTIZERS`, else raises ValueError."""
  if not isinstance(quantizer, str) or quantizer not in QUANTIZERS:
    accepted = ", ".join(repr(q) for q in QUANTIZERS)
    raise ValueError(
        f"quantizer must be one of {accepted}; got {quantizer!r}. Pass \"none\" to use"
        " the kernel as given or \"ste\" to binarize it with a straight-through"
        " gradient."
    )
  return quantizer


@jax.custom_jvp
def ste_sign(w: jax.Array) -> jax.Array:
  """Sign with 0 -> +1 forward and a clipped straight-through gradient.

  Forward::

    ste_sign(w) = +1 if w >= 0 else -1      (so 0 and -0.0 map to +1)

  Backward (BinaryConnect's straight-through estimator)::

    d loss / d w = d loss / d ste_sign(w) * 1[|w| <= 1]

  It is written as a ``jax.custom_jvp`` with tangent ``dw * 1[|w| <= 1]``; JAX
  transposes that linear rule into the vector-Jacobian product above, so
  ``jax.grad`` gets the masked straight-through gradient and forward mode
  (``jax.jvp``, ``jax.jacfwd``) works too. The output has the dtype of ``w``,
  which must be floating point.
  """
  return jnp.where(w >= 0, jnp.ones_like(w), -jnp.ones_like(w))


@ste_sign.defjvp
def _ste_sign_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
  (w,), (dw,) = primals, tangents
  mask = (jnp.abs(w) <= 1).astype(dw.dtype)
  return ste_sign(w), dw * mask


def quantize(kernel: jax.Array, quantizer: str) -> jax.Array:
  """Applies ``quantizer`` to ``kernel``: identity for "none", :func:`ste_sign` for "ste"."""
  if check_quantizer(quantizer) == "ste":
    return ste_sign(kernel)
  return kernel


class BinaryDense(nn.Module):
  """Dense layer ``y = x @ q(kernel) [+ q(bias)]``, ``kernel`` of shape (in, features).

  The paper's image networks have no bias. The authors' toy MLP (two moons,
  Snelson) has one, and BayesBiNN treats it as one more binary weight:
  ``use_bias=True`` adds a ``bias`` param quantized like the kernel.

  Attributes:
    features: number of output features.
    quantizer: "none" (kernel used as given) or "ste" (``ste_sign(kernel)``).
    kernel_init: initializer of ``kernel``; the paper's uniform init by default.
    param_dtype: dtype of ``kernel``.
    use_bias: add a binary bias (initialised at zero, +1 under "ste").
  """

  features: int
  quantizer: str = "none"
  kernel_init: Initializer = default_kernel_init
  param_dtype: Any = jnp.float32
  use_bias: bool = False

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to the last axis of ``x``."""
    kernel = self.param(
        "kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), self.param_dtype
    )
    y = jnp.matmul(x, quantize(kernel, self.quantizer))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
      y = y + quantize(bias, self.quantizer)
    return y


class BinaryConv(nn.Module):
  """2-D convolution without bias on NHWC inputs, kernel of shape (kh, kw, in, features).

  ``y = conv(x, q(kernel))`` (cross-correlation, as ``flax.linen.Conv`` and PyTorch).

  Attributes:
    features: number of output channels.
    kernel_size: spatial size of the kernel.
    strides: spatial strides.
    padding: "SAME", "VALID" or explicit ``((top, bottom), (left, right))``; "SAME"
      with a 3x3 kernel and stride 1 equals PyTorch's ``padding=1``.
    quantizer: "none" (kernel used as given) or "ste" (``ste_sign(kernel)``).
    kernel_init: initializer of ``kernel``; the paper's uniform init by default.
    param_dtype: dtype of ``kernel``.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] = "SAME"
  quantizer: str = "none"
  kernel_init: Initializer = default_kernel_init
  param_dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to ``x`` of shape (..., H, W, C); leading axes are batch."""
    x = jnp.asarray(x)
    if x.ndim < 3:
      raise ValueError(f"BinaryConv expects inputs of shape (..., H, W, C); got {x.shape}.")
    batch_shape = x.shape[:-3]
    x4 = jnp.reshape(x, (-1,) + x.shape[-3:])
    kernel = self.param(
        "kernel",
        self.kernel_init,
        (*self.kernel_size, x.shape[-1], self.features),
        self.param_dtype,
    )
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding
    )
    kernel = quantize(kernel, self.quantizer)
    dtype = jnp.promote_types(x4.dtype, kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x4.astype(dtype),
        kernel.astype(dtype),
        window_strides=tuple(self.strides),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return jnp.reshape(y, batch_shape + y.shape[1:])


def BatchNorm(  # pylint: disable=invalid-name
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    *,
    axis: int = -1,
    name: str | None = None,
) -> nn.BatchNorm:
  """``flax.linen.BatchNorm`` without learned gain or bias (PyTorch ``affine=False``).

  Train mode (``use_running_average=False``) normalizes with the batch statistics
  and updates the ``batch_stats`` collection::

    y = (x - mean_B) / sqrt(var_B + epsilon)
    ra_mean <- momentum * ra_mean + (1 - momentum) * mean_B
    ra_var  <- momentum * ra_var  + (1 - momentum) * var_B

  Eval mode uses ``ra_mean`` and ``ra_var`` instead. ``momentum`` is Flax's, i.e.
  ``1 - `` PyTorch's (PyTorch 0.15 -> 0.85, 0.2 -> 0.8, default 0.1 -> 0.9). Flax
  tracks the biased batch variance where PyTorch tracks the unbiased one, which
  only changes the running variance by a factor ``n / (n - 1)``.

  Call it as ``BatchNorm(...)(x, use_running_average=not train)``; it owns no
  ``params``, only ``batch_stats`` (``mean`` and ``var``).
  """
  check_range("momentum", momentum, low=0.0, high=1.0)
  check_positive("epsilon", epsilon)
  return nn.BatchNorm(
      momentum=momentum,
      epsilon=epsilon,
      use_scale=False,
      use_bias=False,
      axis=axis,
      name=name,
  )
