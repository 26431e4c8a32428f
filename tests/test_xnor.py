"""Tests of bayesbinn_jax.nn.xnor: packed xnor/popcount inference equals the float simulation.

Every network is random (+-1 kernels, BatchNorm statistics chosen to put thresholds
on and next to integers, beyond the reachable range, with tiny and huge
variances); widths and channels are not multiples of 32; batches of 1 and more.
The float network is the reference: its binary activations and predictions must
be equal, not close. Besides the library's networks, three networks no preset has
are packed (a strided CNN with non-3x3 kernels, explicit padding and both poolings;
a Bi-Real residual CNN; an MLP with odd widths, a binary bias and no ``train``
argument), each on both kernels (native and XLA).
"""

from __future__ import annotations

import re

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax.nn import (
    BatchNorm,
    BinaryConv,
    BinaryDense,
    ContinualMLP,
    MnistMLP,
    VGGBinaryConnect,
    pack_ensemble,
    pack_network,
)
from bayesbinn_jax.nn import xnor, xnor_kernel
from bayesbinn_jax.nn.xnor import PackingError

KEY = jax.random.PRNGKey(0)
KERNELS = ["xla"] + (["native"] if xnor_kernel.native_status()[0] else [])


def _stats(rng: np.random.Generator, size: int, n: int) -> dict:
  """Adversarial BatchNorm statistics for a layer with fan-in ``n``."""
  centre = rng.integers(-n // 4 - 1, n // 4 + 2, size).astype(np.float64)
  offset = rng.choice([0.0, 0.5, 1e-3, -1e-3, 1e-6, -1e-6, 2.0 * n, -2.0 * n], size)
  var = rng.choice([1e-6, 0.3, 7.0, 1e4], size) * rng.uniform(0.5, 2.0, size)
  return {"mean": (centre + offset).astype(np.float32), "var": var.astype(np.float32)}


def _apply(model):
  return xnor._apply_fn(model)  # model.apply(v, x, train=False) when __call__ takes train


def _random_network(model, x, seed=0, fan_in=64):
  init = (lambda: model.init(KEY, x, train=False)) if "train" in str(
      model.__call__.__annotations__) else (lambda: model.init(KEY, x))
  shapes = jax.eval_shape(init)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                        shapes["params"])
  stats = jax.tree.map(lambda s: s, shapes["batch_stats"])
  stats = _fill_stats(stats, rng, fan_in)
  return {"params": params, "batch_stats": stats}


def _fill_stats(tree, rng, fan_in):
  if "mean" in tree and "var" in tree:
    return _stats(rng, tree["mean"].shape[0], fan_in)
  return {k: _fill_stats(v, rng, fan_in) for k, v in tree.items()}


def _float_features(apply, variables, x):
  """The float network's binary activations entering its last binary layer (True is +1)."""
  inputs = []

  def spy(next_fun, args, kwargs, context):
    if (context.method_name == "__call__"
        and getattr(context.module, "input_quantizer", "none") != "none"):
      inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    logits = apply(variables, x)
  return np.asarray(inputs[-1]) >= 0, np.asarray(logits)


def _check_equal(apply, variables, x, net):
  bits, logits = _float_features(apply, variables, x)
  packed_bits = np.asarray(net.features(x)).reshape(bits.shape)
  assert_array_equal(packed_bits, bits)
  packed_logits = np.asarray(net(x))
  assert_array_equal(packed_logits.argmax(-1), logits.argmax(-1))
  # The last BatchNorm may run in another XLA fusion: logits agree to float32 rounding.
  assert_allclose(packed_logits, logits, rtol=1e-6, atol=2e-6)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("m,k,n", [(1, 64, 70), (5, 4, 7), (9, 8, 65), (4, 2, 1), (3, 70, 5)])
def test_kernels_count_mismatched_bits_bit_for_bit(m, k, n):
  rng = np.random.default_rng(m * k + n)
  a = rng.integers(0, 2 ** 32, (m, k), dtype=np.uint32)
  w = rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32)
  expected = np.array([[sum(bin(int(p) ^ int(q)).count("1") for p, q in zip(a[i], w[j]))
                        for j in range(n)] for i in range(m)])
  for kernel in KERNELS:
    count = jax.jit(lambda a, w, kernel=kernel: xnor_kernel.xnor_count(a, w, kernel, n))(
        a, xnor_kernel.weight_layout(w, kernel))
    assert_array_equal(np.asarray(count), expected)
    planes = np.stack([a, a[::-1], ~a])                    # three planes weighted 1, 2, 4
    flipped = np.array([[sum(bin(int(p) ^ int(q)).count("1") for p, q in zip(a[::-1][i], w[j]))
                         for j in range(n)] for i in range(m)])
    inverted = np.array([[sum(bin(int(~p & 0xFFFFFFFF) ^ int(q)).count("1")
                              for p, q in zip(a[i], w[j])) for j in range(n)] for i in range(m)])
    count = jax.jit(lambda a, w, kernel=kernel: xnor_kernel.xnor_count(a, w, kernel, n))(
        planes, xnor_kernel.weight_layout(w, kernel))
    assert_array_equal(np.asarray(count), expected + 2 * flipped + 4 * inverted)


@pytest.mark.parametrize("p,m,k,n", [(1, 4097, 36, 130), (3, 2001, 10, 257)])
def test_native_kernel_threads_equal_xla(p, m, k, n):
  """Products this large split their rows over threads: still the same integers."""
  if "native" not in KERNELS:
    pytest.skip("no native kernel here")
  rng = np.random.default_rng(m)
  a = rng.integers(0, 2 ** 32, (p, m, k), dtype=np.uint32)
  w = rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32)
  counts = [np.asarray(jax.jit(lambda a, w, kernel=kernel: xnor_kernel.xnor_count(
      a, w, kernel, n))(a, xnor_kernel.weight_layout(w, kernel))) for kernel in ("native", "xla")]
  assert_array_equal(counts[0], counts[1])


def test_native_kernel_is_used_when_it_builds():
  available, reason = xnor_kernel.native_status()
  if not available:
    pytest.skip(f"no native kernel here: {reason}")
  assert xnor_kernel.backend() == "native"
  assert xnor_kernel.backend("xla") == "xla"
  with pytest.raises(ValueError, match="backend must be one of native, xla; got 'gpu'"):
    xnor_kernel.backend("gpu")


def test_without_a_compiler_the_xla_kernel_packs(tmp_path, monkeypatch):
  """A machine without a C++ compiler (or an empty cache) falls back to pure XLA, same outputs."""
  monkeypatch.setattr(xnor_kernel, "_STATE", {})
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  monkeypatch.setenv(xnor_kernel.ENV_CACHE, str(tmp_path / "cache"))
  monkeypatch.delenv(xnor_kernel.ENV_BACKEND, raising=False)
  available, reason = xnor_kernel.native_status()
  assert not available and "no-such-compiler" in reason
  assert xnor_kernel.backend() == "xla"
  with pytest.raises(xnor_kernel.NativeKernelError, match="native xnor kernel unavailable"):
    xnor_kernel.backend("native")
  model = OddMLP()
  x = np.random.default_rng(3).standard_normal((2, 20)).astype(np.float32)
  variables = _random_network(model, x)
  net = pack_network(model, variables, input_shape=x.shape)
  assert net.kernel == "xla"
  _check_equal(_apply(model), variables, x, net)


def test_pack_words_layout():
  bits = np.zeros((2, 35), bool)
  bits[0, [0, 2, 31]] = True
  bits[1, [32, 34]] = True
  words = np.asarray(xnor.pack_words(bits))
  assert words.dtype == np.uint32 and words.shape == (2, 2)
  assert_array_equal(words, [[1 + 4 + 2**31, 0], [0, 1 + 4]])


# --------------------------------------------------------------------------- the library's


@pytest.mark.parametrize("hidden,depth,batch", [(37, 1, 1), (45, 2, 5), (70, 3, 1), (32, 2, 5)])
def test_mlp_equals_float_simulation(hidden, depth, batch):
  model = MnistMLP(num_classes=7, hidden=hidden, depth=depth, activations="binary")
  x = np.random.default_rng(batch).standard_normal((batch, 28, 28)).astype(np.float32)
  variables = _random_network(model, x, seed=hidden + depth)
  net = pack_network(model, variables)
  _check_equal(_apply(model), variables, x, net)
  # One network, every input shape: (N, 784) too, traced on first use.
  _check_equal(_apply(model), variables, x.reshape(batch, 784), net)


def test_thresholds_at_ties_follow_zero_to_plus_one():
  """A pre-activation exactly at the mean gives BN output 0, whose sign is +1."""
  model = ContinualMLP(num_classes=3, hidden=3, depth=2, activations="binary")
  x = np.random.default_rng(0).standard_normal((4, 784)).astype(np.float32)
  variables = _random_network(model, x)
  # Layer 1 sees z in {-3, -1, 1, 3}: means on those values put every unit on a tie.
  variables["batch_stats"]["BatchNorm_1"] = {"mean": np.array([-1.0, 1.0, 3.0], np.float32),
                                             "var": np.ones(3, np.float32)}
  net = pack_network(model, variables)
  _check_equal(_apply(model), variables, x, net)


def test_ste_latent_weights_pack_as_their_sign():
  model = MnistMLP(hidden=40, depth=2, activations="binary", quantizer="ste")
  x = np.random.default_rng(3).standard_normal((4, 784)).astype(np.float32)
  variables = _random_network(model, x)
  latent = jax.tree.map(lambda k: (k * np.random.default_rng(1).uniform(0, 2, k.shape)
                                   ).astype(np.float32), variables["params"])
  latent["BinaryDense_1"]["kernel"][0, :5] = 0.0  # sign(0) = +1
  variables = {**variables, "params": latent}
  _check_equal(_apply(model), variables, x, pack_network(model, variables))


@pytest.mark.slow
@pytest.mark.parametrize("batch,size", [(1, 10), (3, 8)])
def test_vgg_equals_float_simulation(batch, size):
  model = VGGBinaryConnect(num_classes=10, activations="binary")
  x = np.random.default_rng(size).standard_normal((batch, size, size, 3)).astype(np.float32)
  variables = _random_network(model, x, seed=size, fan_in=9 * 128)
  net = pack_network(model, variables, input_shape=x.shape)
  _check_equal(_apply(model), variables, x, net)


# --------------------------------------------------------------------------- layer kinds


class _OneConv(nn.Module):
  """sign -> BinaryConv -> BatchNorm [-> max pool] -> sign -> BinaryDense -> BatchNorm."""

  kernel_size: tuple = (3, 3)
  strides: tuple = (1, 1)
  padding: Any = "SAME"
  pool: str = "none"
  units: int = 5

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = BinaryConv(self.units, self.kernel_size, self.strides, self.padding,
                   input_quantizer="ste_sign")(x)
    if self.pool == "max_before":
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = BatchNorm(0.9, 1e-5)(x, use_running_average=not train)
    if self.pool == "max_after":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    if self.pool == "avg":
      x = nn.avg_pool(x, (2, 2), strides=(1, 2))
    x = x.reshape(x.shape[0], -1)
    x = BinaryDense(4, input_quantizer="approx_sign")(x)
    return BatchNorm(0.9, 1e-5)(x, use_running_average=not train)


@pytest.mark.parametrize("kernel_size,strides,padding", [
    ((3, 3), (1, 1), "SAME"), ((5, 5), (2, 2), "SAME"), ((2, 2), (1, 1), "VALID"),
    ((1, 3), (2, 1), ((1, 0), (2, 1))), ((4, 2), (3, 2), ((2, 2), (0, 3))),
    ((3, 3), (1, 1), ((-1, 1), (1, -1))),
])
def test_binary_conv_any_kernel_stride_and_padding(kernel_size, strides, padding):
  model = _OneConv(kernel_size, strides, padding)
  x = np.random.default_rng(7).standard_normal((2, 9, 7, 37)).astype(np.float32)
  x[0, 0, 0, :3] = 0.0  # sign(0) = +1 inside the image
  variables = _random_network(model, x, fan_in=kernel_size[0] * kernel_size[1] * 37)
  for kernel in (KERNELS if kernel_size == (5, 5) else [None]):
    _check_equal(_apply(model), variables, x, pack_network(model, variables, input_shape=x.shape,
                                                           kernel=kernel))


@pytest.mark.parametrize("pool", ["max_before", "max_after", "avg"])
def test_pooling_on_integers_bits_and_reals(pool):
  model = _OneConv(pool=pool, units=33)
  x = np.random.default_rng(8).standard_normal((3, 8, 6, 5)).astype(np.float32)
  variables = _random_network(model, x, fan_in=45)
  net = pack_network(model, variables, input_shape=x.shape)
  _check_equal(_apply(model), variables, x, net)


# --------------------------------------------------------------------------- new networks


class StridedCNN(nn.Module):
  """A strided CNN no preset has: 5x5/2 float first layer, 2x2 VALID, 1x3 with explicit
  padding and strides (2, 1), max and average pooling, flatten, dense."""

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda: BatchNorm(0.9, 1e-4)
    x = BinaryConv(19, (5, 5), (2, 2), "SAME")(x)
    x = bn()(x, use_running_average=not train)
    x = BinaryConv(40, (2, 2), padding="VALID", input_quantizer="ste_sign")(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = bn()(x, use_running_average=not train)
    x = BinaryConv(33, (1, 3), (2, 1), ((1, 0), (2, 1)), input_quantizer="ste_sign")(x)
    x = bn()(x, use_running_average=not train)
    x = nn.avg_pool(x, (2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    x = BinaryDense(10, input_quantizer="ste_sign")(x)
    return bn()(x, use_running_average=not train)


class _BiRealBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = BinaryConv(self.features, (3, 3), (self.strides,) * 2, input_quantizer="approx_sign")(x)
    y = BatchNorm(0.9, 1e-5)(y, use_running_average=not train)
    if self.strides > 1:
      x = nn.avg_pool(x, (self.strides,) * 2, strides=(self.strides,) * 2)
    return x + y  # the real-valued shortcut


class ResidualCNN(nn.Module):
  """Bi-Real / ReActNet style: every block adds its binary convolution's BatchNorm output to a
  float shortcut; the next block signs the sum."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = BinaryConv(24, (3, 3))(x)
    x = BatchNorm(0.9, 1e-5)(x, use_running_average=not train)
    x = _BiRealBlock(24)(x, train)
    x = _BiRealBlock(24)(x, train)
    x = _BiRealBlock(24, strides=2)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = BinaryDense(6, input_quantizer="ste_sign")(x)
    return BatchNorm(0.9, 1e-5)(x, use_running_average=not train)


class OddMLP(nn.Module):
  """Odd widths, a binary bias, a gain-free flax BatchNorm used directly, no train argument."""

  @nn.compact
  def __call__(self, x):
    bn = lambda: nn.BatchNorm(use_running_average=True, use_scale=False, use_bias=False)
    x = x.reshape(x.shape[0], -1)
    x = bn()(BinaryDense(13)(x))
    x = bn()(BinaryDense(7, input_quantizer="ste_sign")(x))
    x = bn()(BinaryDense(97, input_quantizer="ste_sign", use_bias=True)(x))
    return bn()(BinaryDense(5, input_quantizer="ste_sign")(x))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("make,shape", [(StridedCNN, (3, 17, 14, 3)),
                                        (ResidualCNN, (2, 8, 8, 3)),
                                        (OddMLP, (4, 5, 11))])
def test_networks_no_preset_has(make, shape, kernel):
  model = make()
  x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
  variables = _random_network(model, x, fan_in=27)
  net = pack_network(model, variables, input_shape=x.shape, kernel=kernel)
  _check_equal(_apply(model), variables, x, net)
  inputs = [layer["input"] for layer in net.layers(x) if layer["kind"] != "batchnorm"]
  assert inputs[0] == "float" and set(inputs[1:]) == {"binary"}


def test_pack_takes_any_apply_function():
  model = OddMLP()
  x = np.random.default_rng(2).standard_normal((3, 55)).astype(np.float32)
  variables = _random_network(model, x)
  net = xnor.pack(lambda v, x: {"logits": model.apply(v, x)}, variables, x)
  assert_array_equal(np.asarray(net(x)["logits"]).argmax(-1),
                     np.asarray(model.apply(variables, x)).argmax(-1))


# --------------------------------------------------------------------------- integer inputs


class _Scaled(nn.Module):
  """A network fed integers through a normalisation ``x * scale + shift``."""

  inner: nn.Module
  scale: float = 1.0
  shift: float = 0.0

  def __call__(self, x, train: bool):
    return self.inner(x.astype(jnp.float32) * self.scale + self.shift, train)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("scale,shift,planes", [(1.0, 0.0, True), (1.0, -128.0, True),
                                                (1 / 256, 0.0, True), (1 / 128, -1.0, True),
                                                (1 / 255, 0.0, False)])
def test_uint8_first_layer_runs_on_bit_planes(scale, shift, planes, kernel):
  model = _Scaled(MnistMLP(num_classes=5, hidden=45, depth=2, activations="binary"), scale, shift)
  x = np.random.default_rng(4).integers(0, 256, (6, 28, 28), dtype=np.uint8)
  x[0] = 255
  variables = _random_network(model, x, fan_in=784)
  variables["batch_stats"]["inner"]["BatchNorm_0"]["mean"] *= 255 * scale
  net = pack_network(model, variables, input_shape=x.shape, input_dtype=np.uint8, kernel=kernel)
  assert net.layers(x)[0]["input"] == ("integer bit-planes" if planes else "float")
  if planes:  # native: uint8 table lookup; XLA: 8 popcounted bit-planes (the same integers)
    first = net.products(x)[0]
    assert (first["op"], first["planes"], first["rows"]) == (
        ("dot_u8" if kernel == "native" else "xnor_count"), 8, 6)
  _check_equal(_apply(model), variables, x, net)


@pytest.mark.parametrize("scale,shift,kernel", [(1.0, 0.0, KERNELS[-1]), (1.0, -100.0, KERNELS[-1]),
                                                (1 / 128, -1.0, KERNELS[-1]), (1 / 128, -1.0, "xla")])
def test_uint8_conv_bit_planes_with_padding(scale, shift, kernel):
  model = _Scaled(StridedCNN(), scale, shift)
  x = np.random.default_rng(5).integers(0, 256, (2, 12, 10, 3), dtype=np.uint8)
  variables = _random_network(model, x, fan_in=75)
  variables["batch_stats"]["inner"]["BatchNorm_0"]["mean"] *= 100 * scale
  net = pack_network(model, variables, input_shape=x.shape, input_dtype=np.uint8, kernel=kernel)
  assert net.layers(x)[0]["input"] == "integer bit-planes"
  first = net.products(x)[0]   # native: patches of the uint8 pixels, 5 x 5 x 3 inputs each
  assert first["op"] == ("dot_u8" if kernel == "native" else "xnor_count")
  if kernel == "native":
    assert first["inputs"] == 75
  _check_equal(_apply(model), variables, x, net)


# --------------------------------------------------------------------------- ensembles


def test_ensemble_is_the_mean_of_the_samples_probabilities():
  model = MnistMLP(num_classes=4, hidden=33, depth=2, activations="binary")
  x = np.random.default_rng(5).standard_normal((6, 784)).astype(np.float32)
  samples = [_random_network(model, x, seed=s) for s in range(3)]
  stacked = {"params": jax.tree.map(lambda *k: np.stack(k), *[s["params"] for s in samples]),
             "batch_stats": samples[0]["batch_stats"]}
  net = pack_ensemble(model, stacked)
  assert net.num_samples == 3
  expected = np.mean([np.asarray(jax.nn.softmax(model.apply(
      {"params": s["params"], "batch_stats": samples[0]["batch_stats"]}, x, train=False)))
                      for s in samples], axis=0)
  assert_allclose(np.asarray(net.predict_proba(x)), expected, rtol=1e-5, atol=1e-6)
  assert np.asarray(net(x)).shape == (3, 6, 4)
  with pytest.raises(ValueError, match="leading sample axis"):
    pack_ensemble(model, samples[0])


# --------------------------------------------------------------------------- refusals


def _mlp(**kwargs):
  model = MnistMLP(hidden=8, depth=2, **kwargs)
  x = np.zeros((1, 784), np.float32)
  return model, _random_network(model, x)


def _refused(match, call, *args, **kwargs):
  with pytest.raises(PackingError, match=match) as info:
    call(*args, **kwargs)
  assert "\n" not in str(info.value)
  return info.value


def test_refuses_real_activations():
  model, variables = _mlp()
  _refused(r"^BinaryDense_1: real-valued inputs \(input_quantizer='none'\) after a binary "
           "layer", pack_network, model, variables)
  vgg = VGGBinaryConnect(num_classes=3)
  x = np.zeros((1, 8, 8, 3), np.float32)
  _refused("^BinaryConv_1: real-valued inputs", pack_network, vgg, _random_network(vgg, x),
           input_shape=x.shape)


def test_refuses_weights_not_binary():
  model, variables = _mlp(activations="binary")
  variables["params"]["BinaryDense_2"]["kernel"][3, 1] = 0.5
  error = _refused(r"^BinaryDense_2: kernel is not binary: 1 of 80 values are not exactly "
                   r"\+-1 \(e.g. 0.5 at index \(3, 1\)\)", pack_network, model, variables)
  assert error.path == "BinaryDense_2"


def test_refuses_nested_layers_by_their_path():
  model = ResidualCNN()
  x = np.zeros((1, 8, 8, 3), np.float32)
  variables = _random_network(model, x)
  variables["params"]["_BiRealBlock_1"]["BinaryConv_0"]["kernel"][0, 0, 0, 0] = 0.0
  _refused(r"^_BiRealBlock_1/BinaryConv_0: kernel is not binary", pack_network, model,
           variables, input_shape=x.shape)


def test_refuses_bad_statistics_missing_kernels_and_nothing_binary():
  model, variables = _mlp(activations="binary")
  variables["batch_stats"]["BatchNorm_1"]["var"][0] = np.nan
  _refused("^BatchNorm_1: statistics not finite", pack_network, model, variables)
  model, variables = _mlp(activations="binary")
  del variables["params"]["BinaryDense_1"]
  _refused("^MnistMLP: the network cannot be applied", pack_network, model, variables)
  shallow = MnistMLP(depth=0, activations="binary")
  _refused("^MnistMLP: no binary layer takes binary inputs", pack_network, shallow,
           _random_network(shallow, np.zeros((1, 784), np.float32)))


def test_refuses_training_mode_and_low_precision_layers():
  model, variables = _mlp(activations="binary")
  x = np.zeros((2, 784), np.float32)
  train = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": KEY})[0]
  _refused("^BatchNorm_0: BatchNorm in training mode", xnor.pack, train, variables, x)

  class Half(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.BatchNorm(use_running_average=True, use_scale=False, use_bias=False)(
          BinaryDense(8)(x))
      return BinaryDense(3, input_quantizer="ste_sign", dtype=jnp.bfloat16)(x)

  half = Half()
  _refused("^BinaryDense_1: computes in bfloat16", xnor.pack, half.apply,
           _random_network(half, x), x)
  # pack_network packs a network's float32 clone: MnistMLP(dtype=bfloat16) packs.
  bf16 = MnistMLP(hidden=8, depth=2, activations="binary", dtype=jnp.bfloat16)
  pack_network(bf16, variables)


@pytest.mark.parametrize("batch_stats", ["missing", "empty"])
def test_refuses_variables_without_batch_stats_naming_the_collection(batch_stats):
  # A user who passes {"params": ...} (or an empty batch_stats) gets the collection and the
  # layer that reads it, not flax's multi-line ScopeCollectionNotFound.
  model, variables = _mlp(activations="binary")
  variables = {"params": variables["params"]}
  if batch_stats == "empty":
    variables["batch_stats"] = {}
  _refused(r"^MnistMLP: the variables lack the 'batch_stats' collection that /BatchNorm_0 "
           r"reads; pass every collection", pack_network, model, variables)


# --------------------------------------------------------------------------- fused thresholds


def _kernel_calls(net, x):
  """The native kernels the compiled packed program calls, in order."""
  program, _ = net._networks[0].program(np.shape(x), np.asarray(x).dtype)
  text = jax.jit(program.run).lower(x).compile().as_text()
  return re.findall(r'custom_call_target="bayesbinn_(\w+)"', text.split("ENTRY", 1)[1])


@pytest.mark.skipif(not xnor_kernel.native_status()[0], reason="no native kernel here")
@pytest.mark.parametrize("make,shape,calls", [
    # binary -> BatchNorm -> binary: the kernel thresholds and packs; the last layer counts
    (OddMLP, (4, 5, 11), ["xnor_bits", "xnor_bits", "xnor_count"]),
    # through a max pool (an OR of the words) and a flatten of 64 channels (2 words each)
    (lambda: _OneConv(pool="max_before", units=64), (3, 8, 6, 5), ["xnor_conv_bits", "xnor_count"]),
    # 33 channels flatten across words: the bits are packed by XLA after the thresholds
    (lambda: _OneConv(pool="max_before", units=33), (3, 8, 6, 5), ["xnor_count", "xnor_count"]),
    # a pool that averages, and BatchNorm outputs added to a float shortcut: no fused bits
    (lambda: _OneConv(pool="avg", units=64), (3, 8, 6, 5), ["xnor_count", "xnor_count"]),
    (ResidualCNN, (2, 8, 8, 3), ["xnor_count"] * 4),
])
def test_thresholds_run_in_the_kernel_where_bits_flow_to_the_next_layer(make, shape, calls):
  """Where a binary layer's BatchNorm output reaches the next binary layer only through its
  sign (and reshapes or max pools), the kernel writes the packed bits (``xnor_bits``) and the
  int32 sums are never formed; the network still equals the float simulation and the XLA
  kernel bit for bit."""
  model = make()
  x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
  variables = _random_network(model, x, fan_in=27)
  net = pack_network(model, variables, input_shape=x.shape, kernel="native")
  assert _kernel_calls(net, x) == calls
  _check_equal(_apply(model), variables, x, net)
  fallback = pack_network(model, variables, input_shape=x.shape, kernel="xla")
  assert_array_equal(np.asarray(net(x)), np.asarray(fallback(x)))
  assert_array_equal(np.asarray(net.features(x)), np.asarray(fallback.features(x)))


class _TwoConv(nn.Module):
  """uint8 pixels into a 3x3 conv, then a 3x2 stride (2, 1) conv with asymmetric explicit
  padding over 40 channels (2 words, K = 12 words), a 1x1 conv, flatten of 64, dense."""

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda: BatchNorm(0.9, 1e-4)
    x = bn()(BinaryConv(40, (3, 3))(x.astype(jnp.float32)), use_running_average=not train)
    x = BinaryConv(70, (3, 2), (2, 1), ((1, 2), (0, 1)), input_quantizer="ste_sign")(x)
    x = bn()(x, use_running_average=not train)
    x = bn()(BinaryConv(64, (1, 1), input_quantizer="ste_sign")(x), use_running_average=not train)
    x = BinaryDense(4, input_quantizer="ste_sign")(x.reshape(x.shape[0], -1))
    return bn()(x, use_running_average=not train)


class _BiasedFirst(nn.Module):
  """uint8 pixels (offset -100) into a dense layer with a binary bias, BatchNorm, sign."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.reshape(x.shape[0], -1).astype(jnp.float32) - 100.0
    x = BatchNorm(0.9, 1e-4)(BinaryDense(37, use_bias=True)(x), use_running_average=not train)
    x = BinaryDense(5, input_quantizer="ste_sign")(x)
    return BatchNorm(0.9, 1e-4)(x, use_running_average=not train)


@pytest.mark.skipif(not xnor_kernel.native_status()[0], reason="no native kernel here")
@pytest.mark.parametrize("make,shape,calls", [
    (lambda: MnistMLP(num_classes=5, hidden=45, depth=2, activations="binary"), (6, 28, 28),
     ["dot_u8_bits", "xnor_bits", "xnor_count"]),
    (_BiasedFirst, (5, 7, 9), ["dot_u8_bits", "xnor_count"]),          # offset and bias folded
    # patches gathered in the kernel: a strided, asymmetrically padded window, then a 1x1
    (_TwoConv, (2, 9, 7, 3), ["dot_u8_bits", "xnor_conv_bits", "xnor_conv_bits", "xnor_count"]),
    # 5x5/2 first conv; the second's bits pass a max pool; an average pool stops the third's
    (StridedCNN, (2, 12, 10, 3), ["dot_u8_bits", "xnor_conv_bits", "xnor_count", "xnor_count"]),
    # a scale other than 1: the BatchNorm is not an integer threshold; bits from XLA
    (lambda: _Scaled(MnistMLP(num_classes=5, hidden=45, depth=2, activations="binary"),
                     1 / 128, -1.0), (6, 28, 28), ["dot_u8", "xnor_bits", "xnor_count"]),
])
def test_uint8_first_layer_thresholds_in_the_kernel(make, shape, calls):
  """A first layer fed uint8 pixels (scale 1) whose BatchNorm reaches the next binary layer
  through its sign writes the next layer's packed bits in one call (``dot_u8_bits``: the
  +-1 sums ``2 dot - sum_k u``, the input offset times the weights' sum and the bias folded
  into the limits); equal to the float simulation and to the XLA kernel bit for bit."""
  model = make()
  x = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
  variables = _random_network(model, x, fan_in=int(np.prod(shape[1:])))
  net = pack_network(model, variables, input_shape=x.shape, input_dtype=np.uint8,
                     kernel="native")
  assert _kernel_calls(net, x) == calls
  _check_equal(_apply(model), variables, x, net)
  fallback = pack_network(model, variables, input_shape=x.shape, input_dtype=np.uint8,
                          kernel="xla")
  assert_array_equal(np.asarray(net(x)), np.asarray(fallback(x)))
  assert_array_equal(np.asarray(net.features(x)), np.asarray(fallback.features(x)))
