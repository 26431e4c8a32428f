"""Tests of bayesbinn_jax.nn.summary against hand-counted sizes and operations."""

from __future__ import annotations

import jax
import numpy as np

from bayesbinn_jax.nn import MnistMLP, VGGBinaryConnect, summary

KEY = jax.random.PRNGKey(0)


def _variables(model, x):
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(0)
  return {"params": jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                                 shapes["params"]),
          "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32),
                                      shapes["batch_stats"])}


def test_fully_binary_mnist_mlp_by_hand(capsys):
  model = MnistMLP(activations="binary")
  variables = _variables(model, np.zeros((1, 784), np.float32))
  s = summary(model, variables, input_shape=(1, 784), input_dtype=np.uint8)
  weights = 784 * 2048 + 2 * 2048 * 2048 + 2048 * 10
  assert weights == 10_014_720
  assert s.binary_weights == weights
  stats = 2 * (3 * 2048 + 10)
  assert s.params == weights + stats
  assert s.float32_bytes == 4 * (weights + stats)
  assert s.packed_bytes == weights // 8 + 4 * stats        # 1,251,840 bytes of bits: ~1.25 MB
  assert [l.input_precision for l in s.layers if l.kind == "BinaryDense"] == [
      "8-bit int", "1-bit", "1-bit", "1-bit"]
  # uint8 first layer: 8 bit-planes, 8 binary MACs per multiply-accumulate.
  assert s.binary_macs == 8 * 784 * 2048 + 2 * 2048 * 2048 + 2048 * 10
  assert s.float_macs == 0
  out = capsys.readouterr().out
  assert "BinaryDense_0" in out and "binary weights 10,014,720" in out and "total" in out


def test_float_first_layer_and_real_activations():
  model = MnistMLP(hidden=8, depth=2, activations="binary")
  s = summary(model, _variables(model, np.zeros((1, 784), np.float32)), print_table=False)
  first = s.layers[0]
  assert (first.kind, first.input_precision, first.float_macs, first.binary_macs) == (
      "BinaryDense", "float32", 784 * 8, 0)
  assert s.binary_macs == 8 * 8 + 8 * 10
  # A network that does not pack (real activations) is still summarised.
  real = MnistMLP(hidden=8, depth=2)
  s = summary(real, _variables(real, np.zeros((1, 784), np.float32)), print_table=False)
  assert s.binary_macs == 0 and s.float_macs == 784 * 8 + 8 * 8 + 8 * 10


def test_vgg_conv_macs_by_hand():
  model = VGGBinaryConnect(num_classes=10, activations="binary")
  x = np.zeros((1, 8, 8, 3), np.float32)
  s = summary(model, _variables(model, x), input_shape=x.shape, print_table=False)
  conv1 = next(l for l in s.layers if l.path == "BinaryConv_1")
  assert conv1.params == 3 * 3 * 128 * 128
  assert conv1.binary_macs == 8 * 8 * 128 * (3 * 3 * 128)  # before its 2x2 max pool
  assert conv1.packed_bytes == 3 * 3 * 128 * 128 // 8


def test_mnist_mlp_of_any_input_width_as_pack_network_takes_it():
  # pack_network reads an MnistMLP's input width from its first kernel; summary took (1, 784)
  # and failed with flax's ScopeParamShapeError on a 5-feature MLP that pack_network packed.
  model = MnistMLP(num_classes=3, hidden=8, depth=1, activations="binary")
  s = summary(model, _variables(model, np.zeros((1, 5), np.float32)), print_table=False)
  assert [(l.path, l.params) for l in s.layers] == [
      ("BinaryDense_0", 5 * 8), ("BatchNorm_0", 16), ("BinaryDense_1", 8 * 3), ("BatchNorm_1", 6)]
  assert (s.float_macs, s.binary_macs) == (5 * 8, 8 * 3)
