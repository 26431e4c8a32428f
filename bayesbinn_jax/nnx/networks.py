"""The paper's binary networks in Flax NNX, twins of :mod:`bayesbinn_jax.nn.networks`.

Each network takes the linen network's options (same names, same defaults, checked
by building the linen twin) plus the input shape NNX needs up front
(``in_features``, or ``in_channels`` and ``image_size`` for the VGG) and
``rngs``. Given the same kernels and BatchNorm statistics, each computes what its
linen twin computes, in train and in eval mode (``tests/test_nnx.py``);
:mod:`bayesbinn_jax.nnx.convert` moves variables between the two.

Modes follow NNX: ``model.train()`` (batch statistics, updated in place; dropout
on, drawn from the ``dropout`` stream of the ``rngs`` given at construction, else
``default``) and ``model.eval()`` (running statistics, no dropout); or pass
``train=True/False`` to the call, which overrides the mode for that call. A new
network is in train mode.

Submodules are lists in creation order, so that ``dense[i]``, ``conv[i]`` and
``bn[i]`` are linen's ``BinaryDense_i``, ``BinaryConv_i`` and ``BatchNorm_i``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bayesbinn_jax._checks import check_integer
from bayesbinn_jax.nn import networks as linen_networks
from bayesbinn_jax.nn.networks import InputShapeError
from bayesbinn_jax.nnx.layers import BatchNorm, BinaryConv, BinaryLinear

VGG_CONVS = linen_networks.VGG_CONVS
VGG_DENSES = linen_networks.VGG_DENSES


def _flatten(network: _Network, x: jax.Array) -> jax.Array:
  """(N, ...) -> (N, in_features), or InputShapeError naming the width the network was built for."""
  x = jnp.asarray(x)
  width = int(np.prod(x.shape[1:])) if x.ndim else None
  if width != network.in_features:
    raise InputShapeError(
        type(network).__name__, x.shape,
        f"has {width} features per example, and this network was built with "
        f"in_features={network.in_features}", f"(N, {network.in_features})")
  return jnp.reshape(x, (x.shape[0], -1))


class _Network(nnx.Module):
  """What every network shares: its linen twin, layer options and mode handling."""

  linen_class: type = linen.Module
  config: dict[str, Any]
  # Set from ``config`` by _setup (the options of the linen twin), or by a subclass.
  activations: str
  activation_quantizer: str
  quantizer: str
  dtype: Any
  param_dtype: Any
  learned_output_scale: bool
  in_features: int
  hidden: Any
  output_batchnorm: bool
  depth: int

  def _setup(self, config: dict[str, Any]) -> None:
    self.config = config
    self.linen()  # the linen twin checks every option, with its error messages
    for name, value in config.items():
      setattr(self, name, value)
    self.dense: nnx.List[BinaryLinear] = nnx.List([])
    self.bn: nnx.List[nnx.BatchNorm] = nnx.List([])
    self.dropouts: nnx.List[nnx.Dropout] = nnx.List([])

  def linen(self) -> linen.Module:
    """The linen network with the same options (:mod:`bayesbinn_jax.nn.networks`)."""
    return self.linen_class(**self.config)

  def _input_quantizer(self, first: bool) -> str:
    return "none" if first or self.activations == "real" else self.activation_quantizer

  def _hidden(self, x: jax.Array, activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
    return activation(x) if self.activations == "real" else x

  def _add_dense(self, in_features: int, out_features: int, first: bool, rngs: nnx.Rngs,
                 **kwargs: Any) -> None:
    self.dense.append(BinaryLinear(
        in_features, out_features, quantizer=self.quantizer,
        input_quantizer=self._input_quantizer(first), dtype=self.dtype,
        param_dtype=self.param_dtype, rngs=rngs, **kwargs))

  def _add_bn(self, features: int, momentum: float, epsilon: float, rngs: nnx.Rngs,
              output: bool = False) -> None:
    self.bn.append(BatchNorm(features, momentum, epsilon, dtype=jnp.float32,
                             use_scale=output and self.learned_output_scale, rngs=rngs))

  def _add_dropout(self, rate: float, rngs: nnx.Rngs) -> None:
    self.dropouts.append(nnx.Dropout(rate, rngs=rngs if rate > 0 else None))

  @staticmethod
  def _mode(train: bool | None) -> dict[str, Any]:
    return {} if train is None else {"use_running_average": not train}

  @staticmethod
  def _drop(dropout: nnx.Dropout, x: jax.Array, train: bool | None) -> jax.Array:
    kwargs: dict[str, Any] = {} if train is None else {"deterministic": not train}
    return dropout(x, **kwargs)


class ToyMLP(_Network):
  """Two moons / Snelson MLP (the twin of :class:`bayesbinn_jax.nn.ToyMLP`).

  ``Dense -> tanh -> Dense -> tanh -> Dense [-> BN]`` with binary biases;
  ``activations="binary"`` signs the hidden pre-activations instead of tanh.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = ToyMLP(in_features=2, hidden=(8,), rngs=nnx.Rngs(0))   # the paper's: (64, 64)
    >>> model.dense[0].kernel.shape, model.dense[0].bias.shape
    ((2, 8), (8,))
    >>> model(jnp.zeros((4, 2))).shape                                  # 4 two-moons points
    (4, 2)
  """

  linen_class = linen_networks.ToyMLP

  def __init__(self, in_features: int = 2, hidden: Sequence[int] = (64, 64), outputs: int = 2,
               output_batchnorm: bool = False, quantizer: str = "none", use_bias: bool = True,
               bn_momentum: float = 0.85, bn_epsilon: float = 1e-4, activations: str = "real",
               activation_quantizer: str = "ste_sign", dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, learned_output_scale: bool = False, *,
               rngs: nnx.Rngs) -> None:
    check_integer("in_features", in_features, low=1)
    self._setup(dict(hidden=tuple(hidden), outputs=outputs, output_batchnorm=output_batchnorm,
                     quantizer=quantizer, use_bias=use_bias, bn_momentum=bn_momentum,
                     bn_epsilon=bn_epsilon, activations=activations,
                     activation_quantizer=activation_quantizer, dtype=dtype,
                     param_dtype=param_dtype, learned_output_scale=learned_output_scale))
    self.in_features = in_features
    widths = (in_features, *self.hidden, outputs)
    for i in range(len(widths) - 1):
      self._add_dense(widths[i], widths[i + 1], i == 0, rngs, use_bias=use_bias)
    if output_batchnorm:
      self._add_bn(outputs, bn_momentum, bn_epsilon, rngs, output=True)

  def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
    """Maps inputs (N, ...) to outputs (N, outputs)."""
    x = _flatten(self, x)
    for layer in self.dense[:-1]:
      x = self._hidden(layer(x), jnp.tanh)
    x = self.dense[-1](x)
    if self.output_batchnorm:
      x = self.bn[0](x, **self._mode(train))
    return x


class MnistMLP(_Network):
  """MNIST MLP 784-2048-2048-2048-10 with dropout (the twin of :class:`bayesbinn_jax.nn.MnistMLP`).

  ``flatten -> dropout -> [Dense -> BN -> ReLU -> dropout] x depth -> Dense -> BN``.

  Examples:
    Shapes through ``nnx.eval_shape``, which draws and computes nothing:

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: MnistMLP(rngs=nnx.Rngs(0, dropout=1)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))   # 784*2048 + ...
    10014720
    >>> nnx.eval_shape(lambda m, x: m(x, train=True), model, jnp.zeros((2, 28, 28))).shape
    (2, 10)
  """

  linen_class = linen_networks.MnistMLP

  def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: int = 2048,
               depth: int = 3, dropout: float = 0.2, quantizer: str = "none",
               bn_momentum: float = 0.85, bn_epsilon: float = 1e-4, activations: str = "real",
               activation_quantizer: str = "ste_sign", dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, learned_output_scale: bool = False, *,
               rngs: nnx.Rngs) -> None:
    check_integer("in_features", in_features, low=1)
    self._setup(dict(num_classes=num_classes, hidden=hidden, depth=depth, dropout=dropout,
                     quantizer=quantizer, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                     activations=activations, activation_quantizer=activation_quantizer,
                     dtype=dtype, param_dtype=param_dtype,
                     learned_output_scale=learned_output_scale))
    self.in_features = in_features
    self._add_dropout(dropout, rngs)
    width = in_features
    for i in range(depth):
      self._add_dense(width, hidden, i == 0, rngs)
      self._add_bn(hidden, bn_momentum, bn_epsilon, rngs)
      self._add_dropout(dropout, rngs)
      width = hidden
    self._add_dense(width, num_classes, depth == 0, rngs)
    self._add_bn(num_classes, bn_momentum, bn_epsilon, rngs, output=True)

  def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
    """Maps images (N, 28, 28[, 1]) or vectors (N, 784) to logits (N, num_classes)."""
    x = self._drop(self.dropouts[0], _flatten(self, x), train)
    for i in range(self.depth):
      x = self.bn[i](self.dense[i](x), **self._mode(train))
      x = self._drop(self.dropouts[i + 1], self._hidden(x, jax.nn.relu), train)
    return self.bn[-1](self.dense[-1](x), **self._mode(train))


class ContinualMLP(MnistMLP):
  """Permuted-MNIST MLP 784-100-100-10 without dropout (the twin of
  :class:`bayesbinn_jax.nn.ContinualMLP`).

  Examples:
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: ContinualMLP(rngs=nnx.Rngs(0)))
    >>> [layer.kernel.shape for layer in model.dense]
    [(784, 100), (100, 100), (100, 10)]
  """

  linen_class = linen_networks.ContinualMLP

  def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: int = 100,
               depth: int = 2, dropout: float = 0.0, **kwargs: Any) -> None:
    super().__init__(in_features, num_classes, hidden, depth, dropout, **kwargs)


class VGGBinaryConnect(_Network):
  """BinaryConnect VGG for CIFAR-10/100, NHWC (the twin of
  :class:`bayesbinn_jax.nn.VGGBinaryConnect`).

  Six 3x3 convolutions (128, 128, 256, 256, 512, 512; 2x2 max pool after every
  second), each followed by BN and ReLU, then Dense 1024 -> BN -> ReLU twice and
  Dense num_classes -> BN. ``image_size`` (H, W) fixes the first dense layer's
  width, ``(H / 8) * (W / 8) * 512``.

  Examples:
    Shapes through ``nnx.eval_shape``, which draws and computes nothing:

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: VGGBinaryConnect(num_classes=100, rngs=nnx.Rngs(0)))
    >>> model.conv[0].kernel.shape, model.dense[0].kernel.shape       # 4 * 4 * 512 = 8192
    ((3, 3, 3, 128), (8192, 1024))
    >>> nnx.eval_shape(lambda m, x: m(x, train=False), model, jnp.zeros((1, 32, 32, 3))).shape
    (1, 100)
  """

  linen_class = linen_networks.VGGBinaryConnect

  def __init__(self, in_channels: int = 3, image_size: Sequence[int] = (32, 32),
               num_classes: int = 10, quantizer: str = "none", conv_bn_momentum: float = 0.8,
               conv_bn_epsilon: float = 1e-5, dense_bn_momentum: float = 0.9,
               dense_bn_epsilon: float = 1e-5, activations: str = "real",
               activation_quantizer: str = "ste_sign", dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, learned_output_scale: bool = False, *,
               rngs: nnx.Rngs) -> None:
    check_integer("in_channels", in_channels, low=1)
    height, width = (int(s) for s in image_size)
    for size in (height, width):
      check_integer("image_size", size, low=8)
    self._setup(dict(num_classes=num_classes, quantizer=quantizer,
                     conv_bn_momentum=conv_bn_momentum, conv_bn_epsilon=conv_bn_epsilon,
                     dense_bn_momentum=dense_bn_momentum, dense_bn_epsilon=dense_bn_epsilon,
                     activations=activations, activation_quantizer=activation_quantizer,
                     dtype=dtype, param_dtype=param_dtype,
                     learned_output_scale=learned_output_scale))
    self.in_channels = in_channels
    self.image_size = (height, width)
    self.conv: nnx.List[BinaryConv] = nnx.List([])
    channels = in_channels
    for i, (features, pool) in enumerate(VGG_CONVS):
      self.conv.append(BinaryConv(
          channels, features, (3, 3), padding="SAME", quantizer=quantizer,
          input_quantizer=self._input_quantizer(i == 0), dtype=dtype, param_dtype=param_dtype,
          rngs=rngs))
      self._add_bn(features, conv_bn_momentum, conv_bn_epsilon, rngs)
      if pool:
        height, width = height // 2, width // 2
      channels = features
    flat = height * width * channels
    for features in VGG_DENSES:
      self._add_dense(flat, features, False, rngs)
      self._add_bn(features, dense_bn_momentum, dense_bn_epsilon, rngs)
      flat = features
    self._add_dense(flat, num_classes, False, rngs)
    self._add_bn(num_classes, dense_bn_momentum, dense_bn_epsilon, rngs, output=True)

  def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
    """Maps images (N, H, W, C) to logits (N, num_classes)."""
    expected = (*self.image_size, self.in_channels)
    if jnp.ndim(x) != 4 or tuple(jnp.shape(x)[1:]) != expected:
      raise InputShapeError(type(self).__name__, tuple(jnp.shape(x)),
                            f"is not the (N, H, W, C) = (N, {', '.join(map(str, expected))}) "
                            "this network was built for (image_size, in_channels)",
                            f"(N, {', '.join(map(str, expected))})")
    for i, (_, pool) in enumerate(VGG_CONVS):
      x = self.conv[i](x)
      if pool:
        x = linen.max_pool(x, window_shape=(2, 2), strides=(2, 2))
      x = self._hidden(self.bn[i](x, **self._mode(train)), jax.nn.relu)
    x = jnp.reshape(x, (x.shape[0], -1))
    n = len(VGG_CONVS)
    for j in range(len(VGG_DENSES)):
      x = self._hidden(self.bn[n + j](self.dense[j](x), **self._mode(train)), jax.nn.relu)
    return self.bn[-1](self.dense[-1](x), **self._mode(train))
