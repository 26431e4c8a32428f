"""Tests of bayesbinn_jax.nn: binary layers and the paper's networks.

Expectations are computed by hand or by an independent NumPy (float64)
transcription of the authors' PyTorch forward passes. Network variables are drawn
with NumPy in the shapes ``jax.eval_shape(model.init)`` reports, which keeps the
suite fast; the initializers themselves are tested on the layers and on VGG.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax.nn import (
    QUANTIZERS,
    BatchNorm,
    BinaryConv,
    BinaryDense,
    ContinualMLP,
    MnistMLP,
    ToyMLP,
    VGGBinaryConnect,
    default_kernel_init,
    ste_sign,
)

KEY = jax.random.PRNGKey(0)


# --------------------------------------------------------------------------- helpers


def _flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _sign_params(params):
  return jax.tree.map(lambda k: jnp.where(k >= 0, 1.0, -1.0).astype(k.dtype), params)


def _normal(shape, seed) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _variables(model, x, seed=0, bound=0.1) -> dict:
  """Variables shaped like ``model.init``'s: NumPy U(-bound, bound) kernels, fresh BN stats."""
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(seed)
  draw = lambda s: rng.uniform(-bound, bound, s.shape).astype(np.float32)  # noqa: E731
  variables = {"params": jax.tree.map(draw, shapes["params"])}
  if "batch_stats" in shapes:
    fresh = {
        name: (np.zeros if name.endswith("mean") else np.ones)(s.shape, np.float32)
        for name, s in _flat(shapes["batch_stats"]).items()
    }
    variables["batch_stats"] = traverse_util.unflatten_dict(fresh, sep="/")
  return variables


def _kernels(params, prefix="BinaryDense", leaf="kernel") -> list[np.ndarray]:
  """The kernels (or biases) of the layers named ``prefix_<i>``, in creation order."""
  flat = _flat(params)
  names = [k for k in flat if k.startswith(prefix) and k.endswith("/" + leaf)]
  names.sort(key=lambda k: int(k.split("/")[0].split("_")[1]))
  return [flat[k] for k in names]


def _np_bn(h: np.ndarray, eps: float, mean=None, var=None) -> np.ndarray:
  """PyTorch affine=False BatchNorm; batch statistics (biased variance) if mean is None."""
  axes = tuple(range(h.ndim - 1))
  if mean is None:
    mean, var = h.mean(axis=axes), h.var(axis=axes)
  return (h - mean) / np.sqrt(var + eps)


def _np_relu_mlp(x, kernels, eps, stats=None) -> np.ndarray:
  """[Dense -> BN -> ReLU]* -> Dense -> BN in float64 (MLPBinaryConnect, MLP_CL_h100)."""
  h = np.asarray(x, np.float64).reshape(len(x), -1)
  for i, k in enumerate(kernels):
    h = h @ np.asarray(k, np.float64)
    mean, var = (None, None) if stats is None else stats[i]
    h = _np_bn(h, eps, mean, var)
    if i < len(kernels) - 1:
      h = np.maximum(h, 0.0)
  return h


def _np_toy(x, kernels, biases, bn_eps=None, stats=None) -> np.ndarray:
  """tanh MLP with biases and an optional output BatchNorm (simple_models.MLP, only_last_bn)."""
  h = np.asarray(x, np.float64).reshape(len(x), -1)
  for k, b in zip(kernels[:-1], biases[:-1]):
    h = np.tanh(h @ np.asarray(k, np.float64) + np.asarray(b, np.float64))
  h = h @ np.asarray(kernels[-1], np.float64) + np.asarray(biases[-1], np.float64)
  if bn_eps is not None:
    mean, var = (None, None) if stats is None else stats
    h = _np_bn(h, bn_eps, mean, var)
  return h


def _np_pool(x: np.ndarray) -> np.ndarray:
  """2x2 max pooling with stride 2 on NHWC."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# --------------------------------------------------------------------------- ste_sign


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_ste_sign_forward(jit):
  f = jax.jit(ste_sign) if jit else ste_sign
  w = jnp.array([-2.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 3.0], jnp.float32)
  expected = np.array([-1, -1, -1, -1, 1, 1, 1, 1, 1, 1], np.float32)
  out = f(w)
  assert out.dtype == jnp.float32
  assert_array_equal(np.asarray(out), expected)
  assert f(jnp.zeros((2, 3), jnp.bfloat16)).dtype == jnp.bfloat16
  assert_array_equal(np.asarray(f(jnp.zeros((2, 3)))), np.ones((2, 3)))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_ste_sign_gradient_mask(jit):
  w = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 7.0])
  c = jnp.arange(1.0, 9.0)
  grad = jax.grad(lambda w: jnp.sum(ste_sign(w) * c))
  grad = jax.jit(grad) if jit else grad
  # d/dw sum(c * sign(w)) = c * 1[|w| <= 1]; the boundary |w| = 1 passes.
  expected = np.array([0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0])
  assert_array_equal(np.asarray(grad(w)), expected)
  # Forward mode gives the same masked derivative.
  _, tangent = jax.jvp(ste_sign, (w,), (c,))
  assert_array_equal(np.asarray(tangent), expected)


# --------------------------------------------------------------------------- init


def test_default_kernel_init_is_paper_formula():
  for shape, fan_sum in (((500, 300), 800), ((3, 3, 64, 32), 9 * (64 + 32))):
    bound = np.sqrt(1.5 / fan_sum)
    k = default_kernel_init(KEY, shape, jnp.float32)
    # variance_scaling(0.25, "fan_avg", "uniform") = U(-1, 1) * sqrt(1.5 / (fan_in + fan_out)).
    formula = jax.random.uniform(KEY, shape, jnp.float32, minval=-1.0, maxval=1.0) * bound
    assert_allclose(np.asarray(k), np.asarray(formula), rtol=1e-6, atol=0)
    k = np.asarray(k, np.float64)
    assert 0.99 * bound < np.abs(k).max() <= bound * (1 + 1e-6)
    assert abs(k.var() / (bound**2 / 3) - 1) < 0.05


def test_layer_kernel_init_range():
  k = np.asarray(BinaryDense(300).init(KEY, jnp.ones((1, 500)))["params"]["kernel"])
  bound = np.sqrt(1.5 / 800)
  assert k.shape == (500, 300)
  assert bound * 0.99 < np.abs(k).max() <= bound * (1 + 1e-6)
  assert abs(k.var() / (bound**2 / 3) - 1) < 0.05
  k = np.asarray(BinaryConv(32).init(KEY, jnp.ones((1, 8, 8, 64)))["params"]["kernel"])
  bound = np.sqrt(1.5 / (9 * (64 + 32)))
  assert k.shape == (3, 3, 64, 32)
  assert bound * 0.99 < np.abs(k).max() <= bound * (1 + 1e-6)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_binary_dense_forward_and_ste_gradient(jit):
  x = jnp.array([[1.0, 2.0, 3.0]])
  binary = {"params": {"kernel": jnp.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])}}
  # sign(latent) == binary kernel; one entry outside [-1, 1].
  latent = jnp.array([[0.3, -0.2], [0.0, 1.5], [-0.7, 0.1]])
  none, ste = BinaryDense(2), BinaryDense(2, quantizer="ste")
  apply_none = jax.jit(none.apply) if jit else none.apply
  apply_ste = jax.jit(ste.apply) if jit else ste.apply
  # [1, 2, 3] @ [[1, -1], [1, 1], [-1, 1]] = [0, 4]
  assert_array_equal(np.asarray(apply_none(binary, x)), [[0.0, 4.0]])
  assert_array_equal(np.asarray(apply_ste({"params": {"kernel": latent}}, x)), [[0.0, 4.0]])
  # "none" uses the relaxed kernel as given: [0.3, -0.2] + 2 [0, 1.5] + 3 [-0.7, 0.1]
  assert_allclose(np.asarray(apply_none({"params": {"kernel": latent}}, x)), [[-1.8, 3.1]],
                  rtol=1e-6)
  grad = jax.grad(lambda k: jnp.sum(ste.apply({"params": {"kernel": k}}, x)))
  grad = jax.jit(grad) if jit else grad
  # d sum(y) / d kernel = x^T 1, zeroed where |latent| > 1 (the 1.5 entry).
  assert_array_equal(np.asarray(grad(latent)), [[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]])


def test_binary_conv_forward_same_padding():
  x = jnp.ones((1, 3, 3, 1))
  ones = {"params": {"kernel": jnp.ones((3, 3, 1, 1))}}
  halves = {"params": {"kernel": jnp.full((3, 3, 1, 1), 0.5)}}
  # 3x3 ones kernel over a 3x3 ones image with zero padding 1: neighbour counts.
  expected = np.array([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]])[None, :, :, None]
  assert_array_equal(np.asarray(BinaryConv(1).apply(ones, x)), expected)
  assert_array_equal(np.asarray(BinaryConv(1, quantizer="ste").apply(halves, x)), expected)
  assert_array_equal(np.asarray(BinaryConv(1).apply(halves, x)), expected / 2)
  # Unbatched input (H, W, C) and a 2-channel kernel.
  k2 = jnp.stack([jnp.ones((3, 3, 1)), -jnp.ones((3, 3, 1))], axis=-1)
  out = BinaryConv(2).apply({"params": {"kernel": k2}}, jnp.ones((3, 3, 1)))
  assert_array_equal(np.asarray(out), np.concatenate([expected[0], -expected[0]], axis=-1))


def test_binary_conv_ste_equals_sign_kernel():
  x = _normal((2, 6, 6, 3), 1)
  params = {"kernel": np.random.default_rng(0).uniform(-1, 1, (3, 3, 3, 4)).astype(np.float32)}
  out_ste = jax.jit(BinaryConv(4, quantizer="ste").apply)({"params": params}, x)
  out_none = jax.jit(BinaryConv(4).apply)({"params": _sign_params(params)}, x)
  assert_allclose(np.asarray(out_ste), np.asarray(out_none), rtol=1e-6, atol=1e-6)
  out_relaxed = jax.jit(BinaryConv(4).apply)({"params": params}, x)
  assert not np.allclose(np.asarray(out_ste), np.asarray(out_relaxed))


def test_layers_have_no_bias():
  for layer, x in ((BinaryDense(3), jnp.ones((2, 5))), (BinaryConv(3), jnp.ones((1, 4, 4, 2)))):
    variables = layer.init(KEY, x)
    assert list(_flat(variables)) == ["params/kernel"]
    # No bias: a zero input gives a zero output.
    assert_array_equal(np.asarray(layer.apply(variables, jnp.zeros_like(x))), 0.0)


def test_batchnorm_factory():
  bn = BatchNorm(0.85, 1e-4)
  assert isinstance(bn, nn.BatchNorm)
  assert (bn.momentum, bn.epsilon, bn.use_scale, bn.use_bias) == (0.85, 1e-4, False, False)
  x = jnp.array([[1.0, 10.0], [3.0, 14.0]])
  variables = bn.init(KEY, x, use_running_average=False)
  assert set(variables) == {"batch_stats"}
  y, state = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  # mean [2, 12], biased var [1, 4]: y = (x - mean) / sqrt(var + 1e-4).
  s1, s4 = np.sqrt(1 + 1e-4), np.sqrt(4 + 1e-4)
  assert_allclose(np.asarray(y), [[-1 / s1, -2 / s4], [1 / s1, 2 / s4]], rtol=1e-5)
  # Running averages: 0.85 * (0, 1) + 0.15 * (mean, var).
  assert_allclose(np.asarray(state["batch_stats"]["mean"]), [0.3, 1.8], rtol=1e-6)
  assert_allclose(np.asarray(state["batch_stats"]["var"]), [1.0, 1.45], rtol=1e-6)
  with pytest.raises(ValueError, match="momentum"):
    BatchNorm(momentum=1.5)
  with pytest.raises(ValueError, match="epsilon"):
    BatchNorm(epsilon=0.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda q: BinaryDense(2, quantizer=q),
        lambda q: BinaryConv(2, quantizer=q),
        lambda q: ToyMLP(quantizer=q),
        lambda q: MnistMLP(quantizer=q),
        lambda q: VGGBinaryConnect(quantizer=q),
        lambda q: ContinualMLP(quantizer=q),
    ],
    ids=["dense", "conv", "toy", "mnist", "vgg", "continual"],
)
@pytest.mark.parametrize("bad", ["sign", "STE", None])
def test_bad_quantizer_raises(build, bad):
  with pytest.raises(ValueError, match="quantizer") as info:
    build(bad)
  assert "'none'" in str(info.value) and "'ste'" in str(info.value)


def test_quantizers_constant():
  assert QUANTIZERS == ("none", "ste")


# --------------------------------------------------------------------------- networks: structure


def _assert_only_kernels(variables, expected_kernels, expected_bn_sizes):
  """params holds exactly the expected kernels; batch_stats one (mean, var) per BN."""
  assert set(variables) <= {"params", "batch_stats"}
  params = _flat(variables["params"])
  assert all(name.endswith("/kernel") and name.count("/") == 1 for name in params), list(params)
  assert {name: v.shape for name, v in params.items()} == expected_kernels
  expected_stats = {}
  for i, size in enumerate(expected_bn_sizes):
    expected_stats[f"BatchNorm_{i}/mean"] = (size,)
    expected_stats[f"BatchNorm_{i}/var"] = (size,)
  stats = _flat(variables.get("batch_stats", {}))
  assert {name: v.shape for name, v in stats.items()} == expected_stats


def _dense_kernels(*shapes) -> dict:
  return {f"BinaryDense_{i}/kernel": shape for i, shape in enumerate(shapes)}


def test_mnist_mlp_structure_default():
  model = MnistMLP()
  variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((2, 28, 28, 1)), train=False))
  _assert_only_kernels(
      variables,
      _dense_kernels((784, 2048), (2048, 2048), (2048, 2048), (2048, 10)),
      [2048, 2048, 2048, 10],
  )
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((5, 784)), train=False), variables)
  assert out.shape == (5, 10)


def test_continual_mlp_structure():
  model = ContinualMLP()
  variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((2, 28, 28)), train=False))
  _assert_only_kernels(
      variables, _dense_kernels((784, 100), (100, 100), (100, 10)), [100, 100, 10]
  )
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 784)), train=False), variables)
  assert out.shape == (3, 10)


def test_toy_mlp_has_binary_biases_like_the_authors():
  variables = ToyMLP().init(KEY, jnp.zeros((4, 2)), train=False)
  shapes = {name: v.shape for name, v in _flat(variables["params"]).items()}
  assert shapes == {**_dense_kernels((2, 64), (64, 64), (64, 2)),
                    "BinaryDense_0/bias": (64,), "BinaryDense_1/bias": (64,), "BinaryDense_2/bias": (2,)}
  # A bias is one more binary weight: "ste" adds sign(b) (0 -> +1), "none" adds b as given.
  layer = BinaryDense(3, quantizer="ste", use_bias=True)
  params = {"kernel": jnp.zeros((2, 3)), "bias": jnp.array([-0.3, 0.0, 0.7])}
  np.testing.assert_array_equal(layer.apply({"params": params}, jnp.zeros((1, 2))), [[-1.0, 1.0, 1.0]])
  layer = BinaryDense(3, use_bias=True)
  np.testing.assert_allclose(layer.apply({"params": params}, jnp.zeros((1, 2))), [[-0.3, 0.0, 0.7]])


def test_toy_mlp_structure():
  model = ToyMLP(use_bias=False)
  variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((4, 2)), train=False))
  _assert_only_kernels(variables, _dense_kernels((2, 64), (64, 64), (64, 2)), [])
  assert set(variables) == {"params"}
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((5, 2)), train=True), variables)
  assert out.shape == (5, 2)
  # Snelson: 1-d inputs of shape (N,), one output, one output BatchNorm.
  snelson = ToyMLP(outputs=1, output_batchnorm=True, use_bias=False)
  variables = jax.eval_shape(lambda: snelson.init(KEY, jnp.zeros((7,)), train=False))
  _assert_only_kernels(variables, _dense_kernels((1, 64), (64, 64), (64, 1)), [1])
  out = jax.eval_shape(lambda v: snelson.apply(v, jnp.zeros((7, 1)), train=False), variables)
  assert out.shape == (7, 1)


# --------------------------------------------------------------------------- networks: forward


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_continual_mlp_matches_numpy_and_updates_batch_stats(jit):
  model = ContinualMLP(hidden=16)
  x = _normal((8, 28, 28), 1)
  variables = _variables(model, x)
  kernels = _kernels(variables["params"])
  apply = jax.jit(model.apply, static_argnames=("train", "mutable")) if jit else model.apply

  # Eval mode with fresh statistics (mean 0, var 1): h / sqrt(1 + eps) after each Dense.
  out_eval = apply(variables, x, train=False)
  expected = _np_relu_mlp(x, kernels, 1e-4, [(0.0, 1.0)] * 3)
  assert_allclose(np.asarray(out_eval), expected, rtol=1e-4, atol=1e-5)

  # Train mode: batch statistics, and running averages with PyTorch momentum 0.15.
  out, state = apply(variables, x, train=True, mutable=("batch_stats",))
  assert_allclose(np.asarray(out), _np_relu_mlp(x, kernels, 1e-4), rtol=1e-4, atol=1e-4)
  stats = _flat(state["batch_stats"])
  h = np.asarray(x, np.float64).reshape(8, -1)
  running = []
  for i, k in enumerate(kernels):
    h = h @ np.asarray(k, np.float64)
    mean, var = h.mean(0), h.var(0)
    assert_allclose(stats[f"BatchNorm_{i}/mean"], 0.15 * mean, rtol=1e-4, atol=1e-5)
    assert_allclose(stats[f"BatchNorm_{i}/var"], 0.85 + 0.15 * var, rtol=1e-4, atol=1e-5)
    running.append((0.15 * mean, 0.85 + 0.15 * var))
    h = _np_bn(h, 1e-4)
    if i < 2:
      h = np.maximum(h, 0.0)

  # Eval mode reads the updated running statistics and leaves them unchanged.
  variables = {"params": variables["params"], "batch_stats": state["batch_stats"]}
  out_eval, state_eval = apply(variables, x, train=False, mutable=("batch_stats",))
  expected = _np_relu_mlp(x, kernels, 1e-4, running)
  assert_allclose(np.asarray(out_eval), expected, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(state_eval), jax.tree.leaves(state)):
    assert_array_equal(np.asarray(a), np.asarray(b))


def test_mnist_mlp_matches_numpy_without_dropout():
  model = MnistMLP(hidden=32, dropout=0.0)
  x = _normal((6, 28, 28, 1), 2)
  variables = _variables(model, x)
  kernels = _kernels(variables["params"])
  assert [k.shape for k in kernels] == [(784, 32), (32, 32), (32, 32), (32, 10)]
  # Dropout 0 needs no rng even in train mode.
  apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  out, state = apply(variables, x)
  assert_allclose(np.asarray(out), _np_relu_mlp(x, kernels, 1e-4), rtol=1e-4, atol=1e-4)
  h1 = np.asarray(x, np.float64).reshape(6, -1) @ np.asarray(kernels[0], np.float64)
  assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], 0.15 * h1.mean(0),
                  rtol=1e-4, atol=1e-5)


def test_mnist_mlp_dropout_only_in_train_mode():
  model = MnistMLP(hidden=32, depth=2, dropout=0.5)
  x = _normal((4, 28, 28), 3) + 3.0  # nonzero inputs
  flat_x = x.reshape(4, -1)
  variables = _variables(model, x)
  kernels = _kernels(variables["params"])

  # Eval: no rng needed, deterministic, and equal to the network without dropout.
  out_eval, inter = jax.jit(
      lambda v: model.apply(
          v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
      )
  )(variables)
  assert_array_equal(np.asarray(model.apply(variables, x, train=False)), np.asarray(out_eval))
  expected = _np_relu_mlp(x, kernels, 1e-4, [(0.0, 1.0)] * 3)
  assert_allclose(np.asarray(out_eval), expected, rtol=1e-4, atol=1e-5)
  assert_array_equal(np.asarray(inter["intermediates"]["Dropout_0"]["__call__"][0]), flat_x)

  # Train: masks drawn from the 'dropout' rng.
  @jax.jit
  def train_apply(key):
    return model.apply(
        variables, x, train=True, rngs={"dropout": key},
        mutable=["batch_stats", "intermediates"], capture_intermediates=True,
    )

  out1, state1 = train_apply(jax.random.PRNGKey(10))
  out1b, _ = train_apply(jax.random.PRNGKey(10))
  out2, _ = train_apply(jax.random.PRNGKey(11))
  assert_array_equal(np.asarray(out1), np.asarray(out1b))
  assert not np.allclose(np.asarray(out1), np.asarray(out2))
  inter = state1["intermediates"]
  assert sorted(k for k in inter if k.startswith("Dropout")) == [
      "Dropout_0", "Dropout_1", "Dropout_2"
  ]
  # Input dropout: every pixel is either dropped or scaled by 1 / (1 - 0.5).
  dropped = np.asarray(inter["Dropout_0"]["__call__"][0])
  kept = dropped != 0
  assert_allclose(dropped[kept], 2.0 * flat_x[kept], rtol=1e-6)
  assert 0.4 < kept.mean() < 0.6
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    model.apply(variables, x, train=True, mutable=["batch_stats"])  # no dropout rng


@pytest.mark.parametrize("output_batchnorm", [False, True])
def test_toy_mlp_matches_numpy(output_batchnorm):
  model = ToyMLP(outputs=3, output_batchnorm=output_batchnorm)
  x = _normal((9, 2), 4)
  variables = _variables(model, x, bound=1.0)
  kernels = _kernels(variables["params"])
  biases = _kernels(variables["params"], leaf="bias")
  assert len(biases) == 3
  eps = 1e-4 if output_batchnorm else None
  out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert_allclose(np.asarray(out), _np_toy(x, kernels, biases, eps), rtol=1e-4, atol=1e-5)
  out_eval = model.apply(variables, x, train=False)
  assert_allclose(np.asarray(out_eval), _np_toy(x, kernels, biases, eps, (0.0, 1.0)), rtol=1e-4,
                  atol=1e-6)
  if output_batchnorm:
    pre = _np_toy(x, kernels, biases)
    assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], 0.15 * pre.mean(0),
                    rtol=1e-4, atol=1e-6)
  else:
    assert not state.get("batch_stats")


@pytest.mark.parametrize(
    "build, x_shape",
    [
        (lambda q: ToyMLP(quantizer=q, output_batchnorm=True), (6, 2)),
        (lambda q: MnistMLP(hidden=24, dropout=0.2, quantizer=q), (5, 28, 28)),
    ],
    ids=["toy", "mnist"],
)
def test_ste_network_equals_none_network_on_sign_kernels(build, x_shape):
  x = _normal(x_shape, 5)
  ste, none = build("ste"), build("none")
  # Latent weights of both signs, some outside [-1, 1].
  variables = _variables(ste, x, bound=1.6)
  params = variables["params"]
  signed = _sign_params(params)
  stats = variables.get("batch_stats", {})
  rngs = {"dropout": jax.random.PRNGKey(6)}

  def apply(model, p, train):
    out, _ = model.apply(
        {"params": p, "batch_stats": stats}, x, train=train, rngs=rngs, mutable=["batch_stats"]
    )
    return out

  @jax.jit
  def run(params, signed):
    outs = [(apply(ste, params, train), apply(none, signed, train)) for train in (False, True)]
    relaxed = apply(none, params, True)
    g_ste = jax.grad(lambda p: jnp.sum(jnp.sin(apply(ste, p, True))))(params)
    g_none = jax.grad(lambda p: jnp.sum(jnp.sin(apply(none, p, True))))(signed)
    return outs, relaxed, g_ste, g_none

  outs, relaxed, g_ste, g_none = run(params, signed)
  for out_ste, out_none in outs:
    assert_allclose(np.asarray(out_ste), np.asarray(out_none), rtol=1e-5, atol=1e-5)
  # The quantizer matters: the relaxed kernels give another output.
  assert not np.allclose(np.asarray(outs[1][1]), np.asarray(relaxed))
  # The "ste" gradient is the "none" gradient at sign(w), zeroed where |w| > 1.
  expected = jax.tree.map(lambda g, w: g * (jnp.abs(w) <= 1), g_none, params)
  for a, b in zip(jax.tree.leaves(g_ste), jax.tree.leaves(expected)):
    assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert any(np.any(np.asarray(a) == 0) for a in jax.tree.leaves(g_ste))


def test_vgg_binary_connect():
  model = VGGBinaryConnect(num_classes=10)
  x = _normal((2, 32, 32, 3), 7)
  variables = jax.jit(lambda x: model.init(KEY, x, train=False))(x)
  conv_shapes = [(3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
  expected_kernels = {
      f"BinaryConv_{i}/kernel": (3, 3, c_in, c_out) for i, (c_in, c_out) in enumerate(conv_shapes)
  }
  expected_kernels.update(_dense_kernels((8192, 1024), (1024, 1024), (1024, 10)))
  _assert_only_kernels(variables, expected_kernels, [128, 128, 256, 256, 512, 512, 1024, 1024, 10])
  n_params = sum(v.size for v in jax.tree.leaves(variables["params"]))
  n_conv = 9 * sum(c_in * c_out for c_in, c_out in conv_shapes)
  assert n_params == n_conv + 8192 * 1024 + 1024 * 1024 + 1024 * 10
  bound = np.sqrt(1.5 / (8192 + 1024))
  assert np.abs(np.asarray(variables["params"]["BinaryDense_0"]["kernel"])).max() <= bound * 1.0001

  apply = jax.jit(
      lambda v, x: model.apply(
          v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True
      )
  )
  out, state = apply(variables, x)
  assert out.shape == (2, 10) and np.all(np.isfinite(np.asarray(out)))
  inter = jax.device_get(state["intermediates"])
  stats = jax.device_get(state["batch_stats"])

  def captured(name):
    return np.asarray(inter[name]["__call__"][0], np.float64)

  # Convolution BatchNorms see the pooled conv output (conv -> pool -> BN) and use
  # PyTorch momentum 0.2; the dense ones PyTorch's default 0.1.
  for i in range(6):
    h = captured(f"BinaryConv_{i}")
    if i % 2 == 1:
      h = _np_pool(h)
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    assert_allclose(stats[f"BatchNorm_{i}"]["mean"], 0.2 * mean, rtol=1e-3, atol=1e-5)
    assert_allclose(stats[f"BatchNorm_{i}"]["var"], 0.8 + 0.2 * var, rtol=1e-3, atol=1e-5)
  for i in range(3):
    h = captured(f"BinaryDense_{i}")
    assert_allclose(stats[f"BatchNorm_{6 + i}"]["mean"], 0.1 * h.mean(0), rtol=1e-3, atol=1e-5)

  # The first Dense reads flatten(ReLU(BN(pool(conv6)))) in (H, W, C) order.
  h = np.maximum(_np_bn(_np_pool(captured("BinaryConv_5")), 1e-5), 0.0).reshape(2, -1)
  kernel = np.asarray(variables["params"]["BinaryDense_0"]["kernel"], np.float64)
  assert_allclose(captured("BinaryDense_0"), h @ kernel, rtol=1e-3, atol=1e-3)
  # Output: BN (eps 1e-5) of the last Dense, no ReLU.
  assert_allclose(np.asarray(out), _np_bn(captured("BinaryDense_2"), 1e-5), rtol=1e-3, atol=1e-3)
