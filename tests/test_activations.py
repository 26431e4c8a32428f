"""Tests of binary activations: the sign quantizers, binary-input layers, fully binary networks.

Gradients are checked against hand-computed values, eager and jit; the networks
against an independent NumPy (float64) transcription of BinaryNet's forward pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax.nn import (
    ACTIVATIONS,
    INPUT_QUANTIZERS,
    BatchNorm,
    BinaryConv,
    BinaryDense,
    ContinualMLP,
    MnistMLP,
    ToyMLP,
    VGGBinaryConnect,
    approx_sign,
    ste_sign,
)

KEY = jax.random.PRNGKey(0)
JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def _variables(model, x, seed=0):
  """+-1 kernels and random positive-variance BatchNorm statistics shaped like ``model.init``'s."""
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                        shapes["params"])
  stats = jax.tree.map(lambda s: rng.uniform(0.5, 3.0, s.shape).astype(np.float32),
                       shapes.get("batch_stats", {}))
  return {"params": params, "batch_stats": stats}


# --------------------------------------------------------------------------- quantizers


def test_input_quantizers_constant():
  assert INPUT_QUANTIZERS == ("none", "ste_sign", "approx_sign")
  assert ACTIVATIONS == ("real", "binary")


@JIT
@pytest.mark.parametrize("fn", [ste_sign, approx_sign], ids=["ste_sign", "approx_sign"])
def test_sign_forward_ties_to_plus_one(fn, jit):
  f = jax.jit(fn) if jit else fn
  x = jnp.array([-3.0, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0])
  assert_array_equal(np.asarray(f(x)), [-1, -1, -1, 1, 1, 1, 1, 1])
  assert f(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@JIT
def test_approx_sign_gradient_by_hand(jit):
  x = jnp.array([-2.0, -1.0, -0.75, -0.25, 0.0, 0.5, 0.9, 1.0, 1.5])
  c = jnp.arange(1.0, 10.0)
  grad = jax.grad(lambda x: jnp.sum(approx_sign(x) * c))
  grad = jax.jit(grad) if jit else grad
  # c * max(0, 2 - 2|x|): 0, 0, 0.5, 1.5, 2, 1, 0.2, 0, 0 times c.
  slope = np.array([0.0, 0.0, 0.5, 1.5, 2.0, 1.0, 0.2, 0.0, 0.0])
  assert_allclose(np.asarray(grad(x)), slope * np.arange(1.0, 10.0), rtol=1e-6, atol=1e-7)
  _, tangent = jax.jvp(approx_sign, (x,), (c,))
  assert_allclose(np.asarray(tangent), slope * np.arange(1.0, 10.0), rtol=1e-6, atol=1e-7)


@JIT
def test_ste_sign_as_activation_gradient_by_hand(jit):
  x = jnp.array([-1.5, -1.0, -0.3, 0.0, 0.3, 1.0, 1.2])
  c = jnp.arange(1.0, 8.0)
  grad = jax.grad(lambda x: jnp.sum(ste_sign(x) * c))
  grad = jax.jit(grad) if jit else grad
  assert_array_equal(np.asarray(grad(x)), [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0])


# --------------------------------------------------------------------------- layers


@JIT
@pytest.mark.parametrize("quantizer,slope", [("ste_sign", [1.0, 0.0, 1.0]),
                                              ("approx_sign", [1.0, 0.0, 1.6])])
def test_binary_dense_input_quantizer_forward_and_gradient(quantizer, slope, jit):
  layer = BinaryDense(2, input_quantizer=quantizer)
  kernel = jnp.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
  x = jnp.array([[0.0, -2.0, 0.2]])
  apply = jax.jit(layer.apply) if jit else layer.apply
  # sign(x) = [1, -1, 1]; [1, -1, 1] @ kernel = [-1, -1].
  assert_array_equal(np.asarray(apply({"params": {"kernel": kernel}}, x)), [[-1.0, -1.0]])
  grad = jax.grad(lambda x: jnp.sum(layer.apply({"params": {"kernel": kernel}}, x)))
  grad = jax.jit(grad) if jit else grad
  # d sum / d sign(x) = kernel row sums [0, 2, 0] ... times the surrogate slope.
  row_sums = np.asarray(kernel).sum(axis=1)
  assert_allclose(np.asarray(grad(x))[0], row_sums * np.array(slope), rtol=1e-6)
  # The kernel's gradient uses the binary input: d sum / d kernel = sign(x)^T 1.
  kgrad = jax.grad(lambda k: jnp.sum(layer.apply({"params": {"kernel": k}}, x)))(kernel)
  assert_array_equal(np.asarray(kgrad), [[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])


def test_binary_conv_binary_input_zero_padding_counts_zero():
  # A -0.5 image binarizes to -1 everywhere; zero padding stays 0 (not sign(0) = +1).
  x = jnp.full((1, 3, 3, 1), -0.5)
  out = BinaryConv(1, input_quantizer="ste_sign").apply(
      {"params": {"kernel": jnp.ones((3, 3, 1, 1))}}, x)
  expected = -np.array([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]])
  assert_array_equal(np.asarray(out)[0, :, :, 0], expected)


@pytest.mark.parametrize("build", [lambda q: BinaryDense(2, input_quantizer=q),
                                   lambda q: BinaryConv(2, input_quantizer=q)],
                         ids=["dense", "conv"])
@pytest.mark.parametrize("bad", ["sign", "ste", None])
def test_bad_input_quantizer_raises(build, bad):
  with pytest.raises(ValueError, match="input_quantizer") as info:
    build(bad)
  assert "'ste_sign'" in str(info.value)


def test_layer_dtype_bfloat16():
  layer = BinaryDense(3, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  variables = layer.init(KEY, jnp.ones((2, 5)))
  assert variables["params"]["kernel"].dtype == jnp.bfloat16
  assert layer.apply(variables, jnp.ones((2, 5))).dtype == jnp.bfloat16
  conv = BinaryConv(3, dtype=jnp.bfloat16)
  variables = conv.init(KEY, jnp.ones((1, 4, 4, 2)))
  assert variables["params"]["kernel"].dtype == jnp.float32
  assert conv.apply(variables, jnp.ones((1, 4, 4, 2))).dtype == jnp.bfloat16


# --------------------------------------------------------------------------- networks


def _np_binary_mlp(x, kernels, stats, eps):
  """BinaryNet MLP in float64: Dense -> BN, then sign (0 -> +1) into every later Dense."""
  h = np.asarray(x, np.float64).reshape(len(x), -1)
  for i, k in enumerate(kernels):
    if i > 0:
      h = np.where(h >= 0, 1.0, -1.0)
    h = h @ np.asarray(k, np.float64)
    mean, var = stats[i]
    h = (h - mean) / np.sqrt(np.asarray(var, np.float64) + eps)
  return h


@JIT
@pytest.mark.parametrize("cls", [MnistMLP, ContinualMLP])
def test_binary_mlp_matches_numpy_transcription(cls, jit):
  model = cls(hidden=37, depth=2, activations="binary")
  x = np.random.default_rng(1).standard_normal((4, 784)).astype(np.float32)
  variables = _variables(model, x)
  flat = traverse_util.flatten_dict(variables, sep="/")
  kernels = [flat[f"params/BinaryDense_{i}/kernel"] for i in range(3)]
  stats = [(flat[f"batch_stats/BatchNorm_{i}/mean"], flat[f"batch_stats/BatchNorm_{i}/var"])
           for i in range(3)]
  apply = jax.jit(model.apply, static_argnames="train") if jit else model.apply
  out = apply(variables, x, train=False)
  assert_allclose(np.asarray(out), _np_binary_mlp(x, kernels, stats, model.bn_epsilon),
                  rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model,first", [
    (MnistMLP(hidden=8, depth=2, activations="binary"), "BinaryDense_0"),
    (VGGBinaryConnect(activations="binary", activation_quantizer="approx_sign"), "BinaryConv_0"),
    (ToyMLP(activations="binary"), "BinaryDense_0"),
])
def test_only_the_first_layer_takes_real_inputs(model, first):
  shape = (1, 32, 32, 3) if isinstance(model, VGGBinaryConnect) else (1, 28 * 28)
  if isinstance(model, ToyMLP):
    shape = (1, 2)
  quantizers = {}

  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, (BinaryDense, BinaryConv)) and context.method_name == "__call__":
      quantizers[context.module.name] = context.module.input_quantizer
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    jax.eval_shape(lambda: model.init(KEY, jnp.zeros(shape), train=False))
  assert quantizers.pop(first) == "none"
  assert quantizers and set(quantizers.values()) == {model.activation_quantizer}


@pytest.mark.parametrize("build", [
    lambda **kw: MnistMLP(**kw), lambda **kw: VGGBinaryConnect(**kw), lambda **kw: ToyMLP(**kw)],
    ids=["mnist", "vgg", "toy"])
def test_bad_activations_raise(build):
  with pytest.raises(ValueError, match="activations must be one of 'real', 'binary'"):
    build(activations="sign")
  with pytest.raises(ValueError, match="activation_quantizer"):
    build(activations="binary", activation_quantizer="none")


def test_binary_mlp_trains_with_gradients_through_the_signs():
  model = MnistMLP(hidden=16, depth=2, dropout=0.0, activations="binary", quantizer="ste")
  x = np.random.default_rng(0).standard_normal((8, 784)).astype(np.float32)
  variables = model.init(KEY, x, train=False)

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                         train=True, mutable=["batch_stats"])
    return -jnp.sum(jax.nn.log_softmax(out)[:, 0])  # nonlinear: a per-column sum vanishes in BN

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for name in ("BinaryDense_0", "BinaryDense_1", "BinaryDense_2"):
    assert np.any(np.asarray(grads[name]["kernel"]) != 0), name


def test_default_dtype_is_the_previous_float32_network_bit_for_bit():
  """MnistMLP() equals the same blocks built with the layers' dtype=None (the former code)."""
  model = MnistMLP(hidden=24, dropout=0.0)
  x = np.random.default_rng(2).standard_normal((3, 784)).astype(np.float32)
  variables = _variables(model, x)
  variables["params"] = jax.tree.map(
      lambda k: np.random.default_rng(3).uniform(-1, 1, k.shape).astype(np.float32),
      variables["params"])

  def former(v, x):
    h = x
    for i in range(4):
      h = BinaryDense(24 if i < 3 else 10).apply({"params": v["params"][f"BinaryDense_{i}"]}, h)
      h = BatchNorm(0.85, 1e-4).apply({"batch_stats": v["batch_stats"][f"BatchNorm_{i}"]}, h,
                                      use_running_average=True)
      h = jax.nn.relu(h) if i < 3 else h
    return h

  assert_array_equal(np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)),
                     np.asarray(jax.jit(former)(variables, x)))


def test_bfloat16_network_with_float32_batchnorm():
  model = MnistMLP(hidden=32, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  x = np.random.default_rng(4).standard_normal((6, 784)).astype(np.float32)
  variables = model.init(KEY, x, train=False)
  assert all(k.dtype == jnp.bfloat16 for k in jax.tree.leaves(variables["params"]))
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(variables["batch_stats"]))
  out, state = model.apply(variables, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": KEY})
  assert out.dtype == jnp.float32  # the logits come out of a float32 BatchNorm
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(state["batch_stats"]))
  hidden = model.apply(variables, x, train=False, capture_intermediates=True,
                       mutable=["intermediates"])[1]["intermediates"]
  assert hidden["BinaryDense_1"]["__call__"][0].dtype == jnp.bfloat16
  # Close to the float32 network with the same (bfloat16-exact) weights.
  f32 = MnistMLP(hidden=32)
  v32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
  assert_allclose(np.asarray(model.apply(variables, x, train=False), np.float32),
                  np.asarray(f32.apply(v32, x, train=False)), rtol=0.1, atol=0.1)
