"""The paper's binary networks (Meng, Bachmann, Khan, ICML 2020), in Flax linen.

Each follows the authors' released PyTorch code (team-approx-bayes/BayesBiNN,
``models/models.py`` and ``models/simple_models.py``): binary layers without bias,
BatchNorm without learned gain or bias (``affine=False``), so the only parameters
are the binary kernels and ``params`` holds nothing but ``kernel`` leaves. The one
exception, not in the paper, is ``learned_output_scale=True``: the output BatchNorm
learns a real gain per output (a ``scale`` leaf, to be trained by a real-valued
optimizer beside the binary one, e.g. Adam under ``optax.multi_transform``).

Every network takes ``quantizer`` ("none" or "ste", passed to all its binary
layers), ``activations`` ("real": the paper's networks; "binary": fully binary,
see below), ``dtype`` (computation) and ``param_dtype`` (kernels), and is called as ``model.apply(variables, x, train=...)``: ``train=True``
normalizes with batch statistics (apply with ``mutable=["batch_stats"]``) and
enables dropout (pass ``rngs={"dropout": key}``); ``train=False`` uses the running
statistics and is deterministic. BatchNorm momenta are Flax's, 1 minus PyTorch's.

Fully binary networks (``activations="binary"``; BinaryNet, Courbariaux et al.
2016): every binary layer but the first takes binary inputs, ``sign(x)`` with
0 -> +1 (``input_quantizer=activation_quantizer``, "ste_sign" by default or
"approx_sign"); the first layer keeps the real-valued input and the last layer's
output (after its BatchNorm) stays real. The sign replaces the hidden ReLU (the
sign of a ReLU is always +1) and tanh (ToyMLP), so a hidden block is
``Dense -> BN -> [dropout] -> sign`` where the sign is the next layer's input
quantizer; dropout (train only) acts on the real BatchNorm output, so a dropped
unit enters the next layer as sign(0) = +1. At inference a hidden binary layer
computes ``sign(BN(a @ w))`` with ``a, w`` in {-1, +1}: xnor/popcount and an
integer threshold (``bayesbinn_jax.nn.xnor``).

Precision: ``dtype`` (float32 by default) is the computation dtype of every binary
layer and ``param_dtype`` (float32) the kernels'. BatchNorm stays float32 whatever
``dtype``: statistics, normalization and output (each binary layer casts its input
to ``dtype``), so the logits, which end in a BatchNorm, are float32. E.g.
``MnistMLP(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)`` runs bfloat16 matrix
products with bfloat16 kernels and float32 BatchNorm. The defaults compute
exactly what the float32 networks always did.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesbinn_jax._checks import check_integer, check_range
from bayesbinn_jax.nn.activations import check_input_quantizer
from bayesbinn_jax.nn.layers import BatchNorm, BinaryConv, BinaryDense, check_quantizer

ACTIVATIONS: tuple[str, ...] = ("real", "binary")
"""Accepted values of every network's ``activations`` (the paper's, or fully binary)."""


def check_activations(activations: Any, activation_quantizer: Any) -> None:
  """Raises ValueError unless ``activations`` is in :data:`ACTIVATIONS` and the quantizer is binary."""
  if not isinstance(activations, str) or activations not in ACTIVATIONS:
    raise ValueError(
        f"activations must be one of {', '.join(repr(a) for a in ACTIVATIONS)}; got "
        f"{activations!r}. Pass \"real\" for the paper's networks or \"binary\" for binary "
        "activations into every binary layer but the first.")
  if check_input_quantizer(activation_quantizer) == "none":
    raise ValueError(
        "activation_quantizer must be a binary input quantizer (\"ste_sign\" or "
        "\"approx_sign\"); got 'none'. Use activations=\"real\" for real-valued activations.")


class _Precision:
  """The precision, activation and output-scale attributes every network shares, and the
  layers built from them.

  Mixed into the network classes (a plain class, so the flax dataclass fields
  stay on each network).
  """

  quantizer: str
  activations: str
  activation_quantizer: str
  dtype: Any
  param_dtype: Any
  learned_output_scale: bool

  def _check(self) -> None:
    check_quantizer(self.quantizer)
    check_activations(self.activations, self.activation_quantizer)

  def _input_quantizer(self, first: bool) -> str:
    """The input quantizer of a binary layer: real for the first or with real activations."""
    return "none" if first or self.activations == "real" else self.activation_quantizer

  def _hidden(self, x: jax.Array, activation: Any) -> jax.Array:
    """The real activation, or identity (the next layer's input quantizer signs x)."""
    return activation(x) if self.activations == "real" else x

  def _dense(self, features: int, first: bool, **kwargs: Any) -> BinaryDense:
    return BinaryDense(features, quantizer=self.quantizer,
                       input_quantizer=self._input_quantizer(first), dtype=self.dtype,
                       param_dtype=self.param_dtype, **kwargs)

  def _bn(self, momentum: float, epsilon: float) -> Any:
    return BatchNorm(momentum, epsilon, dtype=jnp.float32)

  def _output_bn(self, momentum: float, epsilon: float) -> Any:
    """The output BatchNorm: with ``learned_output_scale`` it learns one gain per output."""
    return BatchNorm(momentum, epsilon, dtype=jnp.float32, use_scale=self.learned_output_scale)


class InputShapeError(ValueError):
  """An input that cannot pass through a network, raised when the network is called
  (at init, or at trace time under jit: shapes are static), before any layer.

  Attributes:
    network: the network's class name.
    shape: the input's shape, batch axis included.
    smallest: the smallest input shape that fits, e.g. ``"(N, 8, 8, C)"``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> try:
    ...   VGGBinaryConnect().init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)
    ... except InputShapeError as error:
    ...   print(error.shape, "->", error.smallest)
    (1, 4, 4, 3) -> (N, 8, 8, C) with C >= 1 (CIFAR: (N, 32, 32, 3))
  """

  def __init__(self, network: str, shape: tuple[int, ...], problem: str, smallest: str):
    self.network, self.shape, self.smallest = network, tuple(shape), smallest
    shown = "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")
    super().__init__(
        f"{network}: input shape {shown} {problem}; the smallest input that fits is {smallest}.")


def _check_features(network: str, x: Any) -> None:
  """An MLP's input: a batch axis and at least one feature per example once flattened."""
  shape = tuple(int(d) for d in jnp.shape(x))
  if not shape:
    raise InputShapeError(network, shape, "has no batch axis", "(N, 1)")
  if any(d == 0 for d in shape[1:]):
    raise InputShapeError(network, shape, "has no features per example (a size of 0)", "(N, 1)")


VGG_MIN_SIZE = 8
"""Smallest image height and width through the VGG's three 2x2 max-pools (8 -> 4 -> 2 -> 1)."""


def _check_images(network: str, x: Any) -> None:
  """The VGG's input: NHWC images, at least :data:`VGG_MIN_SIZE` pixels high and wide, >= 1 channel."""
  shape = tuple(int(d) for d in jnp.shape(x))
  smallest = f"(N, {VGG_MIN_SIZE}, {VGG_MIN_SIZE}, C) with C >= 1 (CIFAR: (N, 32, 32, 3))"
  if len(shape) != 4:
    raise InputShapeError(network, shape, f"has {len(shape)} axes, not 4: images are (N, H, W, C)",
                          smallest)
  height, width = shape[1:3]
  if min(height, width) < VGG_MIN_SIZE:
    pools = sum(pool for _, pool in VGG_CONVS)
    left = (height // 2 ** pools, width // 2 ** pools)
    raise InputShapeError(
        network, shape, f"is too small: its {pools} 2x2 max-pools leave {left[0]} x {left[1]} pixels",
        smallest)
  if shape[3] < 1:
    raise InputShapeError(network, shape, "has no channels", smallest)


def _flatten(x: jax.Array) -> jax.Array:
  """Flattens every axis but the leading (batch) one: (N, ...) -> (N, prod(...))."""
  x = jnp.asarray(x)
  return jnp.reshape(x, (x.shape[0], -1))


class ToyMLP(_Precision, nn.Module):
  """Two moons / Snelson MLP: Dense-tanh-Dense-tanh-Dense with binary biases (section 4.1).

  Source: ``MLP(input_size, [64, 64], output_size, act_func='tanh', use_bn=...,
  learn_bn=False, only_last_bn=True)`` in ``models/simple_models.py`` and
  ``synthetic_data.ipynb``. Two moons uses it without BatchNorm; Snelson regression
  sets ``output_batchnorm=True``: one BatchNorm (eps 1e-4, PyTorch momentum 0.15,
  Flax 0.85, no gain or bias) after the last Dense and none in the hidden layers.
  As the authors' toy MLP, every layer has a bias, binarized like the kernels
  (BayesBiNN keeps a Bernoulli posterior over it): with +-1 weights and no bias
  the first layer only forms tanh(+-x1 +-x2), which cannot separate two moons.
  The authors use one sigmoid logit for two moons; ``outputs`` picks the width
  (2 logits for softmax cross-entropy, 1 for a sigmoid logit or regression).

  Attributes:
    hidden: widths of the tanh hidden layers.
    outputs: width of the output layer.
    output_batchnorm: add the BatchNorm after the output layer (Snelson).
    quantizer: "none" or "ste", passed to every binary layer.
    use_bias: binary biases in every layer (True, as the authors).
    bn_momentum: Flax momentum of the output BatchNorm.
    bn_epsilon: epsilon of the output BatchNorm.
    activations: "real" (tanh) or "binary" (sign of the hidden pre-activations).
    activation_quantizer: the binary layers' input quantizer when "binary".
    dtype: computation dtype of the binary layers (the output BatchNorm stays float32).
    param_dtype: dtype of the kernels and biases.
    learned_output_scale: the output BatchNorm learns a gain per output
      (``params["BatchNorm_0"]["scale"]``, not in the paper); needs
      ``output_batchnorm``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = ToyMLP(hidden=(8,), outputs=2)          # the paper's: hidden=(64, 64)
    >>> x = jnp.zeros((4, 2))                           # 4 two-moons points
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> jax.tree.map(jnp.shape, variables["params"]["BinaryDense_0"])
    {'bias': (8,), 'kernel': (2, 8)}
    >>> model.apply(variables, x, train=False).shape    # logits
    (4, 2)
  """

  hidden: Sequence[int] = (64, 64)
  outputs: int = 2
  output_batchnorm: bool = False
  quantizer: str = "none"
  use_bias: bool = True
  bn_momentum: float = 0.85
  bn_epsilon: float = 1e-4
  activations: str = "real"
  activation_quantizer: str = "ste_sign"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  learned_output_scale: bool = False

  def __post_init__(self) -> None:
    self._check()
    check_integer("outputs", self.outputs, low=1)
    for width in self.hidden:
      check_integer("hidden", width, low=1)
    if self.learned_output_scale and not self.output_batchnorm:
      raise ValueError(
          "learned_output_scale (output_scale=learned) is the gain of the output BatchNorm, "
          "and this network has none (output_batchnorm=False).")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps inputs (N, ...) to outputs (N, outputs); (N,) is read as (N, 1).

    Raises:
      InputShapeError: an input with no batch axis or no features.
    """
    _check_features(type(self).__name__, x)
    x = _flatten(x)
    for i, width in enumerate(self.hidden):
      x = self._hidden(self._dense(width, i == 0, use_bias=self.use_bias)(x), jnp.tanh)
    x = self._dense(self.outputs, not self.hidden, use_bias=self.use_bias)(x)
    if self.output_batchnorm:
      x = self._output_bn(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)
    return x


class MnistMLP(_Precision, nn.Module):
  """MNIST MLP 784-2048-2048-2048-10 with dropout (paper section 4.2, Table 9).

  Source: ``MLPBinaryConnect`` in ``models/models.py`` as built by
  ``main_mnist.py`` (``num_units=2048, eps=1e-4, momentum=0.15, drop_prob=0.2,
  batch_affine=False``)::

    flatten -> dropout -> [Dense -> BN -> ReLU -> dropout] x depth -> Dense -> BN

  BatchNorm: eps 1e-4, PyTorch momentum 0.15 (Flax 0.85), no gain or bias.
  Dropout draws from the ``"dropout"`` rng and is active only when ``train``.

  Attributes:
    num_classes: number of output logits.
    hidden: width of every hidden layer.
    depth: number of hidden blocks.
    dropout: dropout rate on the input and after each hidden block.
    quantizer: "none" or "ste", passed to every binary layer.
    bn_momentum: Flax momentum of every BatchNorm.
    bn_epsilon: epsilon of every BatchNorm.
    activations: "real" (ReLU) or "binary" (binary inputs into every Dense but
      the first: ``[Dense -> BN -> dropout] x depth -> sign -> Dense -> BN``).
    activation_quantizer: the binary layers' input quantizer when "binary".
    dtype: computation dtype of the binary layers (BatchNorm stays float32).
    param_dtype: dtype of the kernels.
    learned_output_scale: the last BatchNorm learns a gain per logit
      (``params["BatchNorm_<last>"]["scale"]``, float32, initialised to 1), which
      sets the logits' scale and so the confidence; not in the paper (its last
      BatchNorm has no gain and leaves the logits standardised).

  Examples:
    Shapes through ``jax.eval_shape``, which computes nothing:

    >>> import jax, jax.numpy as jnp
    >>> model, key = MnistMLP(), jax.random.key(0)
    >>> x = jnp.zeros((2, 28, 28))
    >>> variables = jax.eval_shape(lambda: model.init(key, x, train=False))
    >>> sum(p.size for p in jax.tree.leaves(variables["params"]))   # 784*2048 + 2*2048^2 + 2048*10
    10014720
    >>> logits, updates = jax.eval_shape(lambda v: model.apply(
    ...     v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]), variables)
    >>> logits.shape, sorted(updates["batch_stats"])
    ((2, 10), ['BatchNorm_0', 'BatchNorm_1', 'BatchNorm_2', 'BatchNorm_3'])
  """

  num_classes: int = 10
  hidden: int = 2048
  depth: int = 3
  dropout: float = 0.2
  quantizer: str = "none"
  bn_momentum: float = 0.85
  bn_epsilon: float = 1e-4
  activations: str = "real"
  activation_quantizer: str = "ste_sign"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  learned_output_scale: bool = False

  def __post_init__(self) -> None:
    self._check()
    check_integer("num_classes", self.num_classes, low=1)
    check_integer("hidden", self.hidden, low=1)
    check_integer("depth", self.depth, low=0)
    check_range("dropout", self.dropout, low=0.0, high=1.0, high_inclusive=False)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps images (N, 28, 28[, 1]) or vectors (N, 784) to logits (N, num_classes).

    Raises:
      InputShapeError: an input with no batch axis or no features.
    """
    _check_features(type(self).__name__, x)
    x = _flatten(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    for i in range(self.depth):
      x = self._dense(self.hidden, i == 0)(x)
      x = self._bn(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)
      x = self._hidden(x, nn.relu)
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = self._dense(self.num_classes, self.depth == 0)(x)
    return self._output_bn(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)


VGG_CONVS: tuple[tuple[int, bool], ...] = (
    (128, False), (128, True), (256, False), (256, True), (512, False), (512, True))
"""(features, 2x2 max-pool after it) of the VGG's six 3x3 convolutions, in order."""

VGG_DENSES: tuple[int, ...] = (1024, 1024)
"""Widths of the VGG's hidden dense layers."""


class VGGBinaryConnect(_Precision, nn.Module):
  """BinaryConnect VGG for CIFAR-10/100 (paper section 4.2, Table 9), NHWC inputs.

  Source: ``VGGBinaryConnect`` in ``models/models.py`` (``eps=1e-5, momentum=0.2,
  batch_affine=False``), whose forward pass is::

    conv128 -> BN -> ReLU
    conv128 -> maxpool 2 -> BN -> ReLU
    conv256 -> BN -> ReLU
    conv256 -> maxpool 2 -> BN -> ReLU
    conv512 -> BN -> ReLU
    conv512 -> maxpool 2 -> BN -> ReLU
    flatten (4 * 4 * 512) -> Dense 1024 -> BN -> ReLU -> Dense 1024 -> BN -> ReLU
    -> Dense num_classes -> BN

  Convolutions are 3x3, stride 1, padding 1 ("SAME"). The six convolution
  BatchNorms use eps 1e-5 and PyTorch momentum 0.2 (Flax 0.8); the three dense
  BatchNorms are built with PyTorch's defaults, eps 1e-5 and momentum 0.1 (Flax
  0.9). None has gain or bias. The flatten runs over (H, W, C), PyTorch's over
  (C, H, W): the first dense kernel's rows are a permutation of PyTorch's.

  Attributes:
    num_classes: number of output logits (10 for CIFAR-10, 100 for CIFAR-100).
    quantizer: "none" or "ste", passed to every binary layer.
    conv_bn_momentum: Flax momentum of the convolution BatchNorms.
    conv_bn_epsilon: epsilon of the convolution BatchNorms.
    dense_bn_momentum: Flax momentum of the dense BatchNorms.
    dense_bn_epsilon: epsilon of the dense BatchNorms.
    activations: "real" (ReLU) or "binary" (binary inputs into every layer but
      the first convolution; the sign replaces each ReLU).
    activation_quantizer: the binary layers' input quantizer when "binary".
    dtype: computation dtype of the binary layers (BatchNorm stays float32).
    param_dtype: dtype of the kernels.
    learned_output_scale: the last BatchNorm learns a gain per logit
      (``params["BatchNorm_<last>"]["scale"]``, float32, initialised to 1), which
      sets the logits' scale and so the confidence; not in the paper (its last
      BatchNorm has no gain and leaves the logits standardised).

  Examples:
    Shapes through ``jax.eval_shape``, which computes (and compiles) nothing:

    >>> import jax, jax.numpy as jnp
    >>> model = VGGBinaryConnect(num_classes=10)
    >>> x = jnp.zeros((1, 32, 32, 3))
    >>> variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    >>> variables["params"]["BinaryConv_0"]["kernel"].shape
    (3, 3, 3, 128)
    >>> sum(p.size for p in jax.tree.leaves(variables["params"]))   # 14.0M binary weights
    14022016
    >>> jax.eval_shape(lambda v: model.apply(v, x, train=False), variables).shape
    (1, 10)
  """

  num_classes: int = 10
  quantizer: str = "none"
  conv_bn_momentum: float = 0.8
  conv_bn_epsilon: float = 1e-5
  dense_bn_momentum: float = 0.9
  dense_bn_epsilon: float = 1e-5
  activations: str = "real"
  activation_quantizer: str = "ste_sign"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  learned_output_scale: bool = False

  def __post_init__(self) -> None:
    self._check()
    check_integer("num_classes", self.num_classes, low=1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps images (N, 32, 32, 3) to logits (N, num_classes).

    Raises:
      InputShapeError: not NHWC images, or images under 8 x 8 pixels (the three
        2x2 max-pools would leave none), or with no channel.
    """
    _check_images(type(self).__name__, x)
    use_running_average = not train
    for i, (features, pool) in enumerate(VGG_CONVS):
      x = BinaryConv(features, (3, 3), padding="SAME", quantizer=self.quantizer,
                     input_quantizer=self._input_quantizer(i == 0), dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
      if pool:
        x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
      x = self._bn(self.conv_bn_momentum, self.conv_bn_epsilon)(
          x, use_running_average=use_running_average
      )
      x = self._hidden(x, nn.relu)
    x = _flatten(x)
    for features in VGG_DENSES:
      x = self._dense(features, False)(x)
      x = self._bn(self.dense_bn_momentum, self.dense_bn_epsilon)(
          x, use_running_average=use_running_average
      )
      x = self._hidden(x, nn.relu)
    x = self._dense(self.num_classes, False)(x)
    return self._output_bn(self.dense_bn_momentum, self.dense_bn_epsilon)(
        x, use_running_average=use_running_average
    )


class ContinualMLP(MnistMLP):
  """Permuted-MNIST continual-learning MLP 784-100-100-10, single head (section 4.3).

  Source: ``MLP_CL_h100`` in ``models/models.py`` as built by
  ``main_permute_mnist_CL.py`` (``num_units=100, eps=1e-4, momentum=0.15,
  batch_affine=False``; no dropout)::

    flatten -> Dense -> BN -> ReLU -> Dense -> BN -> ReLU -> Dense -> BN

  BatchNorm: eps 1e-4, PyTorch momentum 0.15 (Flax 0.85), no gain or bias.
  The :class:`MnistMLP` block structure with two hidden layers of 100 and no
  dropout.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = ContinualMLP()
    >>> x = jnp.zeros((3, 784))                         # a batch of one permuted-MNIST task
    >>> variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    >>> [kernel.shape for kernel in jax.tree.leaves(variables["params"])]
    [(784, 100), (100, 100), (100, 10)]
  """

  hidden: int = 100
  depth: int = 2
  dropout: float = 0.0
