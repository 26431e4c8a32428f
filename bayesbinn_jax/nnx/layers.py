"""Binary layers for Flax NNX: the twins of :mod:`bayesbinn_jax.nn.layers`.

Same options, same defaults, same initialisers, same forward pass as the linen
layers, which these reuse (``quantize``, ``quantize_input``, the checks and
``default_kernel_init``; the sign functions live in
:mod:`bayesbinn_jax.nn.activations`):

- :class:`BinaryLinear` is linen's ``BinaryDense`` (NNX calls its dense layer
  ``Linear``): ``y = q_in(x) @ q(kernel) [+ q(bias)]``.
- :class:`BinaryConv`: ``y = conv(q_in(x), q(kernel))`` on NHWC inputs, no bias.
- :func:`BatchNorm`: ``flax.nnx.BatchNorm`` without gain or bias (optionally a
  learned gain), statistics in float32.

``quantizer`` ("none": the kernel as given, BayesBiNN's relaxed sample; "ste":
``ste_sign(kernel)``), ``input_quantizer`` ("none", "ste_sign", "approx_sign"),
``dtype`` (computation; None promotes input and kernel) and ``param_dtype``
(the kernel's) mean what they mean in linen. NNX needs the input width up front
(``in_features``): the kernel is created in ``__init__`` from ``rngs.params()``.

Each layer's ``linen()`` is its linen twin; inside :func:`as_linen` the layers
(BatchNorm in eval mode) compute through ``twin.apply``, so that the linen tracer
of :mod:`bayesbinn_jax.nn.xnor` packs any NNX model built from them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Iterator, Sequence

import flax.linen as linen
import jax
import jax.numpy as jnp
from flax import nnx

from bayesbinn_jax._checks import check_integer, check_positive, check_range
from bayesbinn_jax.nn import layers as linen_layers
from bayesbinn_jax.nn.activations import check_input_quantizer, quantize_input
from bayesbinn_jax.nn.layers import Initializer, check_quantizer, default_kernel_init, quantize

_AS_LINEN: contextvars.ContextVar[dict[int, str] | None] = contextvars.ContextVar(
    "bayesbinn_nnx_as_linen", default=None)


@contextlib.contextmanager
def as_linen(model: nnx.Module) -> Iterator[None]:
  """Within it, the binary layers and :func:`BatchNorm` of ``model`` compute through their
  linen twins (``twin.apply(variables, x)``, the same outputs), each named by its path in
  ``model`` joined by "_" ("dense_0", "block_conv"): what lets the linen tracer of
  :mod:`bayesbinn_jax.nn.xnor` see an NNX model's layers
  (:func:`bayesbinn_jax.nnx.pack_network`).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = BinaryLinear(3, 2, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 3))
    >>> with as_linen(layer):
    ...   y = layer(x)                       # through bayesbinn_jax.nn.BinaryDense
    >>> bool(jnp.all(y == layer(x)))
    True
  """
  names = {id(node): "_".join(str(p) for p in path) or type(node).__name__
           for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}
  token = _AS_LINEN.set(names)
  try:
    yield
  finally:
    _AS_LINEN.reset(token)


class _Named(linen.Module):
  """A linen parent whose one child, the layer ``cls(**fields)``, is named ``child``: the
  layer's path is then ``child``."""

  cls: type
  fields: tuple[tuple[str, Any], ...]
  child: str

  @linen.compact
  def __call__(self, x: jax.Array, **kwargs: Any) -> Any:
    return self.cls(**dict(self.fields), name=self.child)(x, **kwargs)


def _through_linen(module: nnx.Module, twin: linen.Module, variables: dict, x: jax.Array,
                   **kwargs: Any) -> jax.Array | None:
  """``twin`` (named after ``module``'s path) applied to ``x`` inside :func:`as_linen`, else None."""
  names = _AS_LINEN.get()
  if names is None:
    return None
  name = names.get(id(module), type(module).__name__)
  fields = tuple((f.name, getattr(twin, f.name)) for f in dataclasses.fields(twin)
                 if f.name not in ("parent", "name"))
  return _Named(type(twin), fields, name).apply({k: {name: v} for k, v in variables.items()}, x,  # type: ignore[return-value]
                                                **kwargs)


def _cast(dtype: Any, x: jax.Array) -> jax.Array:
  return x if dtype is None else jnp.asarray(x, dtype)


class BinaryLinear(nnx.Module):
  """Dense layer ``y = q_in(x) @ q(kernel) [+ q(bias)]``, kernel of shape (in, out).

  The NNX twin of :class:`bayesbinn_jax.nn.BinaryDense` (params ``kernel`` and,
  with ``use_bias``, ``bias``, initialised at zero and quantized like the kernel).

  Args:
    in_features: width of the input's last axis.
    out_features: number of output features.
    quantizer: "none" (kernel used as given) or "ste" (``ste_sign(kernel)``).
    input_quantizer: "none", "ste_sign" or "approx_sign".
    kernel_init: initializer of ``kernel``; the paper's uniform init by default.
    dtype: computation dtype; None promotes the input's and the kernel's.
    param_dtype: dtype of ``kernel`` (and ``bias``).
    use_bias: add a binary bias.
    rngs: the ``params`` stream draws the kernel.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = BinaryLinear(3, 2, quantizer="ste", rngs=nnx.Rngs(0))
    >>> layer.kernel.shape
    (3, 2)
    >>> layer.kernel[...] = jnp.array([[0.3, -0.2], [-0.7, 0.1], [0.5, 0.0]])
    >>> layer(jnp.array([[1.0, 2.0, 3.0]]))          # x @ sign(kernel)
    Array([[2., 4.]], dtype=float32)
  """

  def __init__(self, in_features: int, out_features: int, *, quantizer: str = "none",
               input_quantizer: str = "none", kernel_init: Initializer = default_kernel_init,
               dtype: Any = None, param_dtype: Any = jnp.float32, use_bias: bool = False,
               rngs: nnx.Rngs) -> None:
    check_integer("in_features", in_features, low=1)
    check_integer("out_features", out_features, low=1)
    self.in_features = in_features
    self.out_features = out_features
    self.quantizer = check_quantizer(quantizer)
    self.input_quantizer = check_input_quantizer(input_quantizer)
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.use_bias = use_bias
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

  def linen(self) -> linen_layers.BinaryDense:
    """The linen layer with the same options (``bayesbinn_jax.nn.BinaryDense``)."""
    return linen_layers.BinaryDense(self.out_features, quantizer=self.quantizer,
                                    input_quantizer=self.input_quantizer, dtype=self.dtype,
                                    param_dtype=self.param_dtype, use_bias=self.use_bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to the last axis of ``x``: (..., in) -> (..., out)."""
    params = {"kernel": self.kernel[...]}
    if self.bias is not None:
      params["bias"] = self.bias[...]
    twin = _through_linen(self, self.linen(), {"params": params}, x)
    if twin is not None:
      return twin
    x = _cast(self.dtype, quantize_input(x, self.input_quantizer))
    kernel = _cast(self.dtype, quantize(self.kernel[...], self.quantizer))
    y = jnp.matmul(x, kernel)
    if self.bias is not None:
      y = y + _cast(self.dtype, quantize(self.bias[...], self.quantizer))
    return y


class BinaryConv(nnx.Module):
  """2-D convolution without bias on NHWC inputs, kernel of shape (kh, kw, in, out).

  The NNX twin of :class:`bayesbinn_jax.nn.BinaryConv`:
  ``y = conv(q_in(x), q(kernel))`` (cross-correlation); zero padding comes after
  the input quantizer. Leading axes before (H, W, C) are batch axes.

  Args:
    in_features: input channels.
    out_features: output channels.
    kernel_size, strides, padding: as ``flax.linen.Conv`` ("SAME", "VALID" or
      explicit pairs).
    quantizer, input_quantizer, kernel_init, dtype, param_dtype, rngs: as
      :class:`BinaryLinear`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> conv = BinaryConv(3, 4, quantizer="ste", rngs=nnx.Rngs(0),
    ...                   kernel_init=jax.nn.initializers.constant(0.2))   # sign: all +1
    >>> y = conv(jnp.ones((2, 5, 5, 3)))                                   # NHWC
    >>> conv.kernel.shape, y.shape, float(y[0, 2, 2, 0]), float(y[0, 0, 0, 0])
    ((3, 3, 3, 4), (2, 5, 5, 4), 27.0, 12.0)
  """

  def __init__(self, in_features: int, out_features: int,
               kernel_size: Sequence[int] = (3, 3), strides: Sequence[int] = (1, 1),
               padding: str | Sequence[tuple[int, int]] = "SAME", *, quantizer: str = "none",
               input_quantizer: str = "none", kernel_init: Initializer = default_kernel_init,
               dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
    check_integer("in_features", in_features, low=1)
    check_integer("out_features", out_features, low=1)
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = tuple(kernel_size)
    self.strides = tuple(strides)
    self.padding: Any = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
    self.quantizer = check_quantizer(quantizer)
    self.input_quantizer = check_input_quantizer(input_quantizer)
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.kernel = nnx.Param(kernel_init(
        rngs.params(), (*self.kernel_size, in_features, out_features), param_dtype))

  def linen(self) -> linen_layers.BinaryConv:
    """The linen layer with the same options (``bayesbinn_jax.nn.BinaryConv``)."""
    return linen_layers.BinaryConv(self.out_features, self.kernel_size, self.strides, self.padding,
                                   quantizer=self.quantizer, input_quantizer=self.input_quantizer,
                                   dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to ``x`` of shape (..., H, W, C)."""
    twin = _through_linen(self, self.linen(), {"params": {"kernel": self.kernel[...]}}, x)
    if twin is not None:
      return twin
    x = jnp.asarray(x)
    if x.ndim < 3:
      raise ValueError(f"BinaryConv expects inputs of shape (..., H, W, C); got {x.shape}.")
    batch_shape = x.shape[:-3]
    x4 = quantize_input(jnp.reshape(x, (-1,) + x.shape[-3:]), self.input_quantizer)
    kernel = quantize(self.kernel[...], self.quantizer)
    dtype = self.dtype if self.dtype is not None else jnp.promote_types(x4.dtype, kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x4.astype(dtype), kernel.astype(dtype), window_strides=self.strides,
        padding=self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.reshape(y, batch_shape + y.shape[1:])


class _BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` that computes through its linen twin inside :func:`as_linen`."""

  def linen(self) -> linen.BatchNorm:
    return linen_layers.BatchNorm(self.momentum, self.epsilon, axis=self.axis, dtype=self.dtype,
                                  use_scale=self.scale is not None)

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, **kwargs: Any) -> jax.Array:
    if _AS_LINEN.get() is not None and not kwargs:
      running = self.use_running_average if use_running_average is None else use_running_average
      variables: dict[str, Any] = {"batch_stats": {"mean": self.mean[...], "var": self.var[...]}}
      if self.scale is not None:
        variables["params"] = {"scale": self.scale[...]}
      if running:
        return _through_linen(self, self.linen(), variables, x, use_running_average=True)  # type: ignore[return-value]
    return super().__call__(x, use_running_average, **kwargs)


def BatchNorm(  # pylint: disable=invalid-name
    num_features: int,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    *,
    axis: int = -1,
    dtype: Any = None,
    use_scale: bool = False,
    rngs: nnx.Rngs,
) -> nnx.BatchNorm:
  """``flax.nnx.BatchNorm`` without learned gain or bias, the twin of
  :func:`bayesbinn_jax.nn.BatchNorm` (same momentum convention, Flax's =
  1 minus PyTorch's, same float32 statistics).

  Train mode (``model.train()``, or ``use_running_average=False`` in the call)
  normalizes with the batch statistics and updates ``mean`` and ``var``
  (``nnx.BatchStat``); eval mode (``model.eval()``) uses them. ``use_scale``
  adds a learned gain (``scale``, an ``nnx.Param`` initialised to 1).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> bn = BatchNorm(1, momentum=0.9, rngs=nnx.Rngs(0))
    >>> y = bn(jnp.array([[1.0], [3.0]]))            # a new BatchNorm is in train mode
    >>> [round(v, 3) for v in y[:, 0].tolist()], round(float(bn.mean[0]), 3)
    ([-1.0, 1.0], 0.2)
    >>> bn.scale is None and bn.bias is None
    True
  """
  check_integer("num_features", num_features, low=1)
  check_range("momentum", momentum, low=0.0, high=1.0)
  check_positive("epsilon", epsilon)
  return _BatchNorm(num_features, momentum=momentum, epsilon=epsilon, axis=axis,
                    dtype=dtype, use_scale=use_scale, use_bias=False, rngs=rngs)
