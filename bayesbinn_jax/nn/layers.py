"""Binary layers for Flax linen: sign with a straight-through gradient, dense and
convolution layers without bias, and BatchNorm without learned gain or bias.

Every binary layer owns a single parameter, ``kernel``, and takes a weight ``quantizer``:

- ``"none"``: the kernel is used as given. The optimizer hands the values to use:
  BayesBiNN the relaxed sample ``tanh((lambda + delta) / tau)``, Bop exactly +-1,
  PMF ``tanh(beta * u)``, Adam (full precision) real weights.
- ``"ste"``: the forward pass uses :func:`ste_sign` of the kernel (BinaryConnect),
  so the kernel holds the latent real weights of the straight-through estimator.

and an activation ``input_quantizer`` (:mod:`bayesbinn_jax.nn.activations`):
``"none"`` (real-valued inputs, the paper's networks), ``"ste_sign"`` or
``"approx_sign"`` (binary inputs ``sign(x)``, 0 -> +1, with a surrogate gradient):
a layer with binary inputs and binary weights computes ``sign(x) @ sign(W)``, an
integer in ``[-n, n]`` that xnor/popcount evaluates on bits (``nn.xnor``).

``dtype`` is the computation dtype (flax's convention: None infers it from the
input and the kernel, as before), ``param_dtype`` the kernel's.

The default kernel init is the paper's (and the released code's BinaryLinear)
``U(-b, b)`` with ``b = sqrt(1.5 / (fan_in + fan_out))``, which is
``variance_scaling(0.25, "fan_avg", "uniform")``: that initializer draws
``U(-1, 1) * sqrt(3 * 0.25 / ((fan_in + fan_out) / 2))``. For a convolution the
fans include the receptive field, ``fan_in = kh * kw * in`` and
``fan_out = kh * kw * out``.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> w = default_kernel_init(jax.random.key(0), (3, 2))  # fan_in 3, fan_out 2
  >>> bool(jnp.all(jnp.abs(w) <= (1.5 / (3 + 2)) ** 0.5))
  True
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesbinn_jax._checks import check_choice, check_positive, check_range
from bayesbinn_jax.nn.activations import check_input_quantizer, quantize_input, ste_sign

Initializer = Callable[..., jax.Array]

QUANTIZERS: tuple[str, ...] = ("none", "ste")
"""Accepted values of every ``quantizer`` argument."""

default_kernel_init: Initializer = nn.initializers.variance_scaling(
    0.25, "fan_avg", "uniform"
)
"""The paper's init: ``U(+-sqrt(1.5 / (fan_in + fan_out)))``."""


def check_quantizer(quantizer: Any) -> str:
  """Returns ``quantizer`` if it is one of :data:`QUANTIZERS`, else raises ValueError."""
  return check_choice("quantizer", quantizer, QUANTIZERS,
                      'Pass "none" to use the kernel as given or "ste" to binarize it with a '
                      "straight-through gradient.")


def quantize(kernel: jax.Array, quantizer: str) -> jax.Array:
  """Applies ``quantizer`` to ``kernel``: identity for "none", :func:`ste_sign` for "ste"."""
  if check_quantizer(quantizer) == "ste":
    return ste_sign(kernel)
  return kernel


def _cast(dtype: Any, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """``arrays`` cast to ``dtype``, or unchanged when ``dtype`` is None."""
  if dtype is None:
    return arrays
  return tuple(jnp.asarray(a, dtype) for a in arrays)


class BinaryDense(nn.Module):
  """Dense layer ``y = x @ q(kernel) [+ q(bias)]``, ``kernel`` of shape (in, features).

  The paper's image networks have no bias. The authors' toy MLP (two moons,
  Snelson) has one, and BayesBiNN treats it as one more binary weight:
  ``use_bias=True`` adds a ``bias`` param quantized like the kernel.

  Attributes:
    features: number of output features.
    quantizer: "none" (kernel used as given) or "ste" (``ste_sign(kernel)``).
    input_quantizer: "none" (inputs used as given), "ste_sign" or "approx_sign"
      (binary inputs, see :mod:`bayesbinn_jax.nn.activations`).
    kernel_init: initializer of ``kernel``; the paper's uniform init by default.
    dtype: computation dtype; None promotes the input's and the kernel's.
    param_dtype: dtype of ``kernel``.
    use_bias: add a binary bias (initialised at zero, +1 under "ste").

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> layer = BinaryDense(features=2, quantizer="ste")
    >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> variables["params"]["kernel"].shape
    (3, 2)
    >>> kernel = jnp.array([[0.3, -0.2], [-0.7, 0.1], [0.5, 0.0]])    # sign: [[1, -1], [-1, 1], [1, 1]]
    >>> layer.apply({"params": {"kernel": kernel}}, jnp.array([[1.0, 2.0, 3.0]]))
    Array([[2., 4.]], dtype=float32)
  """

  features: int
  quantizer: str = "none"
  input_quantizer: str = "none"
  kernel_init: Initializer = default_kernel_init
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = False

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    check_input_quantizer(self.input_quantizer)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to the last axis of ``x``: (..., in) -> (..., features)."""
    kernel = self.param(
        "kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), self.param_dtype
    )
    x, kernel = _cast(self.dtype, quantize_input(x, self.input_quantizer),
                      quantize(kernel, self.quantizer))
    y = jnp.matmul(x, kernel)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
      y = y + _cast(self.dtype, quantize(bias, self.quantizer))[0]
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
    input_quantizer: "none" (inputs used as given), "ste_sign" or "approx_sign"
      (binary inputs, see :mod:`bayesbinn_jax.nn.activations`). Zero padding is
      applied after the input quantizer: padded positions contribute 0, not +-1.
    kernel_init: initializer of ``kernel``; the paper's uniform init by default.
    dtype: computation dtype; None promotes the input's and the kernel's.
    param_dtype: dtype of ``kernel``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> conv = BinaryConv(features=4, quantizer="ste")
    >>> x = jnp.ones((2, 5, 5, 3))                                    # NHWC
    >>> jax.eval_shape(conv.init, jax.random.key(0), x)["params"]["kernel"].shape
    (3, 3, 3, 4)
    >>> y = conv.apply({"params": {"kernel": jnp.full((3, 3, 3, 4), 0.2)}}, x)   # sign: all +1
    >>> y.shape, float(y[0, 2, 2, 0]), float(y[0, 0, 0, 0])          # 3*3*3 terms; a corner 2*2*3
    ((2, 5, 5, 4), 27.0, 12.0)
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] = "SAME"
  quantizer: str = "none"
  input_quantizer: str = "none"
  kernel_init: Initializer = default_kernel_init
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    check_input_quantizer(self.input_quantizer)
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
    padding: Any = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding
    )
    x4 = quantize_input(x4, self.input_quantizer)
    kernel = quantize(kernel, self.quantizer)
    dtype = self.dtype if self.dtype is not None else jnp.promote_types(x4.dtype, kernel.dtype)
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
    dtype: Any = None,
    use_scale: bool = False,
    name: str | None = None,
) -> nn.BatchNorm:
  """``flax.linen.BatchNorm`` without learned gain or bias (PyTorch ``affine=False``).

  Train mode (``use_running_average=False``) normalizes with the batch statistics
  and updates the ``batch_stats`` collection::

    y = (x - mean_B) / sqrt(var_B + epsilon)
    ra_mean <- momentum * ra_mean + (1 - momentum) * mean_B
    ra_var  <- momentum * ra_var  + (1 - momentum) * var_B

  Eval mode uses ``ra_mean`` and ``ra_var`` instead. ``momentum`` is Flax's, i.e.
  1 minus PyTorch's (PyTorch 0.15 -> 0.85, 0.2 -> 0.8, default 0.1 -> 0.9). Flax
  tracks the biased batch variance where PyTorch tracks the unbiased one, which
  only changes the running variance by a factor ``n / (n - 1)``.

  Call it as ``BatchNorm(...)(x, use_running_average=not train)``; it owns no
  ``params``, only ``batch_stats`` (``mean`` and ``var``), kept in float32. ``dtype``
  is the output dtype (None: the input's); the statistics and the normalization
  are computed in float32 whatever the input's dtype (flax's float32 reductions).

  ``use_scale=True`` adds a learned gain, one per feature (``params["scale"]``,
  float32, initialised to 1): ``y = scale * (x - mean) / sqrt(var + epsilon)``. The
  networks use it only on their output BatchNorm (``learned_output_scale``), where
  it sets the logits' scale, i.e. the predictive's confidence (not in the paper).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> bn = BatchNorm(momentum=0.9)
    >>> x = jnp.array([[1.0], [3.0]])
    >>> variables = bn.init(jax.random.key(0), x, use_running_average=True)
    >>> sorted(variables)                                             # no params
    ['batch_stats']
    >>> y, updated = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    >>> [round(v, 3) for v in y[:, 0].tolist()], round(float(updated["batch_stats"]["mean"][0]), 3)
    ([-1.0, 1.0], 0.2)
  """
  check_range("momentum", momentum, low=0.0, high=1.0)
  check_positive("epsilon", epsilon)
  return nn.BatchNorm(
      momentum=momentum,
      epsilon=epsilon,
      use_scale=use_scale,
      use_bias=False,
      axis=axis,
      dtype=dtype,
      name=name,
  )
