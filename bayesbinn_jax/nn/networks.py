"""The paper's binary networks (Meng, Bachmann, Khan, ICML 2020), in Flax linen.

Each follows the authors' released PyTorch code (team-approx-bayes/BayesBiNN,
``models/models.py`` and ``models/simple_models.py``): binary layers without bias,
BatchNorm without learned gain or bias (``affine=False``), so the only parameters
are the binary kernels and ``params`` holds nothing but ``kernel`` leaves.

Every network takes ``quantizer`` ("none" or "ste", passed to all its binary
layers) and is called as ``model.apply(variables, x, train=...)``: ``train=True``
normalizes with batch statistics (apply with ``mutable=["batch_stats"]``) and
enables dropout (pass ``rngs={"dropout": key}``); ``train=False`` uses the running
statistics and is deterministic. BatchNorm momenta are Flax's, ``1 - `` PyTorch's.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayesbinn_jax.nn.layers import BatchNorm, BinaryConv, BinaryDense, check_quantizer
from bayesbinn_jax._checks import check_integer, check_range


def _flatten(x: jax.Array) -> jax.Array:
  """Flattens every axis but the leading (batch) one: (N, ...) -> (N, prod(...))."""
  x = jnp.asarray(x)
  return jnp.reshape(x, (x.shape[0], -1))


class ToyMLP(nn.Module):
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
  """

  hidden: Sequence[int] = (64, 64)
  outputs: int = 2
  output_batchnorm: bool = False
  quantizer: str = "none"
  use_bias: bool = True
  bn_momentum: float = 0.85
  bn_epsilon: float = 1e-4

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    check_integer("outputs", self.outputs, low=1)
    for width in self.hidden:
      check_integer("hidden", width, low=1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps inputs (N, ...) to outputs (N, outputs); (N,) is read as (N, 1)."""
    x = _flatten(x)
    for width in self.hidden:
      x = jnp.tanh(BinaryDense(width, quantizer=self.quantizer, use_bias=self.use_bias)(x))
    x = BinaryDense(self.outputs, quantizer=self.quantizer, use_bias=self.use_bias)(x)
    if self.output_batchnorm:
      x = BatchNorm(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)
    return x


class MnistMLP(nn.Module):
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
  """

  num_classes: int = 10
  hidden: int = 2048
  depth: int = 3
  dropout: float = 0.2
  quantizer: str = "none"
  bn_momentum: float = 0.85
  bn_epsilon: float = 1e-4

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    check_integer("num_classes", self.num_classes, low=1)
    check_integer("hidden", self.hidden, low=1)
    check_integer("depth", self.depth, low=0)
    check_range("dropout", self.dropout, low=0.0, high=1.0, high_inclusive=False)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps images (N, 28, 28[, 1]) or vectors (N, 784) to logits (N, num_classes)."""
    x = _flatten(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    for _ in range(self.depth):
      x = BinaryDense(self.hidden, quantizer=self.quantizer)(x)
      x = BatchNorm(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = BinaryDense(self.num_classes, quantizer=self.quantizer)(x)
    return BatchNorm(self.bn_momentum, self.bn_epsilon)(x, use_running_average=not train)


class VGGBinaryConnect(nn.Module):
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
  """

  num_classes: int = 10
  quantizer: str = "none"
  conv_bn_momentum: float = 0.8
  conv_bn_epsilon: float = 1e-5
  dense_bn_momentum: float = 0.9
  dense_bn_epsilon: float = 1e-5

  def __post_init__(self) -> None:
    check_quantizer(self.quantizer)
    check_integer("num_classes", self.num_classes, low=1)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps images (N, 32, 32, 3) to logits (N, num_classes)."""
    use_running_average = not train
    for features, pool in ((128, False), (128, True), (256, False), (256, True),
                           (512, False), (512, True)):
      x = BinaryConv(features, (3, 3), padding="SAME", quantizer=self.quantizer)(x)
      if pool:
        x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
      x = BatchNorm(self.conv_bn_momentum, self.conv_bn_epsilon)(
          x, use_running_average=use_running_average
      )
      x = nn.relu(x)
    x = _flatten(x)
    for features in (1024, 1024):
      x = BinaryDense(features, quantizer=self.quantizer)(x)
      x = BatchNorm(self.dense_bn_momentum, self.dense_bn_epsilon)(
          x, use_running_average=use_running_average
      )
      x = nn.relu(x)
    x = BinaryDense(self.num_classes, quantizer=self.quantizer)(x)
    return BatchNorm(self.dense_bn_momentum, self.dense_bn_epsilon)(
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
  """

  hidden: int = 100
  depth: int = 2
  dropout: float = 0.0
