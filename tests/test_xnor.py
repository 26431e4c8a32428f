"""Tests of bayesbinn_jax.nn.xnor: packed xnor/popcount inference equals the float simulation.

Every network is random (+-1 kernels, BatchNorm statistics chosen to put thresholds
on and next to integers, beyond the reachable range, with tiny and huge
variances); widths and channels are not multiples of 32; batches of 1 and more.
The float network is the reference: its binary activations and predictions must
be equal, not close.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax.nn import (
    BatchNorm,
    BinaryConv,
    ContinualMLP,
    MnistMLP,
    ToyMLP,
    VGGBinaryConnect,
    pack_ensemble,
    pack_network,
)
from bayesbinn_jax.nn import xnor

KEY = jax.random.PRNGKey(0)


def _stats(rng: np.random.Generator, size: int, n: int) -> dict:
  """Adversarial BatchNorm statistics for a layer with fan-in ``n``."""
  centre = rng.integers(-n // 4 - 1, n // 4 + 2, size).astype(np.float64)
  offset = rng.choice([0.0, 0.5, 1e-3, -1e-3, 1e-6, -1e-6, 2.0 * n, -2.0 * n], size)
  var = rng.choice([1e-6, 0.3, 7.0, 1e4], size) * rng.uniform(0.5, 2.0, size)
  return {"mean": (centre + offset).astype(np.float32), "var": var.astype(np.float32)}


def _random_network(model, x, seed=0):
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                        shapes["params"])
  stats = {name: _stats(rng, s["mean"].shape[0], 64) for name, s in shapes["batch_stats"].items()}
  return {"params": params, "batch_stats": stats}


def _float_features(model, variables, x):
  """The float network's binary activations entering its last layer (True is +1)."""
  inputs = {}

  def spy(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and getattr(context.module, "input_quantizer", None):
      inputs[context.module.name] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    logits = model.apply(variables, x, train=False)
  last = sorted(inputs, key=lambda k: (k.startswith("BinaryDense"), int(k.split("_")[1])))[-1]
  return np.asarray(inputs[last]) >= 0, np.asarray(logits)


def _check_equal(model, variables, x, net):
  bits, logits = _float_features(model, variables, x)
  packed_bits = np.asarray(net.features(x)).reshape(bits.shape)
  assert_array_equal(packed_bits, bits)
  packed_logits = np.asarray(net(x))
  assert_array_equal(packed_logits.argmax(-1), logits.argmax(-1))
  # The last BatchNorm runs in another XLA fusion: logits agree to float32 rounding.
  assert_allclose(packed_logits, logits, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- bits


def test_pack_words_layout():
  bits = np.zeros((2, 35), bool)
  bits[0, [0, 2, 31]] = True
  bits[1, [32, 34]] = True
  words = np.asarray(xnor.pack_words(bits))
  assert words.dtype == np.uint32 and words.shape == (2, 2)
  assert_array_equal(words, [[1 + 4 + 2**31, 0], [0, 1 + 4]])


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100])
def test_xnor_popcount_is_the_dot_product(n):
  rng = np.random.default_rng(n)
  a, w = rng.choice([-1, 1], (5, n)), rng.choice([-1, 1], (n, 3))
  words = np.asarray(xnor.pack_words(w.T > 0))        # (3, words)
  packed = np.asarray(xnor.pack_words(a > 0))         # (5, words)
  count = np.zeros((5, 3), np.int64)
  for k in range(packed.shape[1]):
    count += np.asarray(jax.lax.population_count(
        jnp.bitwise_xor(packed[:, k:k + 1], words[None, :, k]))).astype(np.int64)
  assert_array_equal(n - 2 * count, a @ w)


# --------------------------------------------------------------------------- dense


@pytest.mark.parametrize("hidden,depth", [(37, 1), (45, 2), (70, 3), (32, 2)])
@pytest.mark.parametrize("batch", [1, 5])
def test_mlp_equals_float_simulation(hidden, depth, batch):
  model = MnistMLP(num_classes=7, hidden=hidden, depth=depth, activations="binary")
  x = np.random.default_rng(batch).standard_normal((batch, 28, 28)).astype(np.float32)
  variables = _random_network(model, x, seed=hidden + depth)
  net = pack_network(model, variables)
  _check_equal(model, variables, x, net)
  _check_equal(model, variables, jax.jit(lambda x: x)(x), net)  # the call is jitted either way


def test_thresholds_at_ties_follow_zero_to_plus_one():
  """A pre-activation exactly at the mean gives BN output 0, whose sign is +1."""
  model = ContinualMLP(num_classes=3, hidden=3, depth=2, activations="binary")
  x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
  variables = _random_network(model, x)
  # Layer 1 sees z in {-3, -1, 1, 3}: means on those values put every unit on a tie.
  variables["batch_stats"]["BatchNorm_1"] = {"mean": np.array([-1.0, 1.0, 3.0], np.float32),
                                             "var": np.ones(3, np.float32)}
  net = pack_network(model, variables)
  _check_equal(model, variables, x, net)


def test_ste_latent_weights_pack_as_their_sign():
  model = MnistMLP(hidden=40, depth=2, activations="binary", quantizer="ste")
  x = np.random.default_rng(3).standard_normal((4, 784)).astype(np.float32)
  variables = _random_network(model, x)
  latent = jax.tree.map(lambda k: (k * np.random.default_rng(1).uniform(0, 2, k.shape)
                                   ).astype(np.float32), variables["params"])
  latent["BinaryDense_1"]["kernel"][0, :5] = 0.0  # sign(0) = +1
  variables = {**variables, "params": latent}
  _check_equal(model, variables, x, pack_network(model, variables))


# --------------------------------------------------------------------------- conv


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("channels,units,spatial", [(37, 5, (7, 9)), (64, 33, (4, 4)),
                                                    (3, 2, (1, 1))])
def test_conv_layer_padding_and_pooling_exact(pool, channels, units, spatial):
  rng = np.random.default_rng(channels)
  kernel = rng.choice([-1.0, 1.0], (3, 3, channels, units)).astype(np.float32)
  stats = _stats(rng, units, 9 * channels)
  x = rng.standard_normal((2, *spatial, channels)).astype(np.float32)
  x[0, 0, 0, :3] = 0.0  # sign(0) = +1 inside the image
  z = BinaryConv(units, input_quantizer="ste_sign").apply({"params": {"kernel": kernel}}, x)
  if pool:
    z = nn.max_pool(z, window_shape=(2, 2), strides=(2, 2))
  expected = BatchNorm(0.8, 1e-5).apply({"batch_stats": stats}, z, use_running_average=True) >= 0
  layer = xnor._xnor_conv(kernel, {k: jnp.asarray(v) for k, v in stats.items()}, (0.8, 1e-5),
                          pool, spatial)
  bits = jax.jit(lambda b: xnor._run_layer(layer, b))(x >= 0)
  assert_array_equal(np.asarray(bits), np.asarray(expected))


@pytest.mark.slow
@pytest.mark.parametrize("batch,size", [(1, 10), (3, 8)])
def test_vgg_equals_float_simulation(batch, size):
  model = VGGBinaryConnect(num_classes=10, activations="binary")
  x = np.random.default_rng(size).standard_normal((batch, size, size, 3)).astype(np.float32)
  variables = _random_network(model, x, seed=size)
  net = pack_network(model, variables, input_shape=x.shape)
  _check_equal(model, variables, x, net)


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


def test_refuses_real_activations():
  model, variables = _mlp()
  with pytest.raises(ValueError, match=r"^BinaryDense_1: real-valued inputs \(activations='real'\)"):
    pack_network(model, variables)
  vgg = VGGBinaryConnect()
  with pytest.raises(ValueError, match="^BinaryConv_1: real-valued inputs"):
    pack_network(vgg, {"params": {}, "batch_stats": {}})


def test_refuses_weights_not_binary():
  model, variables = _mlp(activations="binary")
  variables["params"]["BinaryDense_2"]["kernel"][3, 1] = 0.5
  with pytest.raises(ValueError, match=r"^BinaryDense_2: weights not \+-1 \(1 of 80 values, e.g. 0.5\)"):
    pack_network(model, variables)


def test_refuses_unsupported_networks_and_bad_statistics():
  with pytest.raises(ValueError, match="^ToyMLP: unsupported network"):
    pack_network(ToyMLP(activations="binary"), {"params": {}, "batch_stats": {}})
  with pytest.raises(ValueError, match="^BinaryDense_0: the only layer"):
    pack_network(MnistMLP(depth=0, activations="binary"), {"params": {}, "batch_stats": {}})
  model, variables = _mlp(activations="binary")
  variables["batch_stats"]["BatchNorm_1"]["var"][0] = np.nan
  with pytest.raises(ValueError, match="^BatchNorm_1: statistics not finite"):
    pack_network(model, variables)
  del variables["params"]["BinaryDense_1"]
  with pytest.raises(ValueError, match="^BinaryDense_1: no kernel in params"):
    pack_network(model, variables)
