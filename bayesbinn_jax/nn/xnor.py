"""Bit-packed xnor/popcount inference of a fully binary network, equal to its float simulation.

A fully binary network (``activations="binary"``, +-1 weights, e.g. BayesBiNN's
mode ``sign(lambda)``) computes in every hidden binary layer ``z = a . w`` with
``a, w`` in {-1, +1}^n. Encoding +1 as bit 1 and -1 as bit 0 and packing 32
values per ``uint32`` word (bit j of word k holds element 32 k + j; the padding
bits of the last word are 0 in both ``a`` and ``w``, so they never differ)::

  a . w = n - 2 popcount(a XOR w)                       (XNOR-Net, BinaryNet)

computed with ``jnp.bitwise_xor``, ``jax.lax.population_count`` and int32 sums, as
a Python-unrolled loop over the words (one fused elementwise pass per word; a
``(batch, units, words)`` broadcast would be many times slower).

BatchNorm (no gain or bias) then sign is a threshold: the float network computes
``y = (z - mean) * rsqrt(var + eps)`` in float32 and the next layer's ``sign(y)``
with 0 -> +1. Both steps are monotone non-decreasing in ``z`` (float rounding is
monotone and ``rsqrt(var + eps) > 0``), so ``sign(y) = +1`` iff ``z >= t`` with
``t`` the smallest integer for which the float32 formula gives ``y >= 0``.
:func:`pack_network` finds ``t`` per unit by bisection on that very formula
(evaluated by XLA, as in the network), hence exact equality with the float
simulation, ties included. In popcount terms the output bit is
``popcount <= P`` with ``P = floor((n - t) / 2)``.

Convolutions (3x3, "SAME"): the float network pads with zeros, which are not
+-1. The packed input is padded with 0 words, so a padded tap adds
``popcount(w_tap)`` (the +1 weights of that tap) to the count and no valid
input; per output position ``p`` the true product is
``z = n_valid(p) - 2 (popcount - c(p))`` with ``c(p)`` the +1 weights on the
padded taps and ``n_valid(p)`` the in-image taps times channels, both folded
into a per-position, per-channel integer threshold ``P(p, o)``. 2x2 max pooling
before a BatchNorm commutes with the monotone threshold and becomes an OR of
bits: ``sign(BN(max z)) = max sign(BN(z))``.

The first layer takes real inputs and stays float (the network's own layer and
BatchNorm, so its bits equal the float network's); the last layer's integer
output goes through its BatchNorm in float32 to the real logits, as in the
float network. Supported networks: :class:`~bayesbinn_jax.nn.MnistMLP` (and
``ContinualMLP``) and :class:`~bayesbinn_jax.nn.VGGBinaryConnect` with
``activations="binary"``. Equality holds against the float32 simulation; a
network trained in bfloat16 packs the same way (its weights and statistics are
what matter) and predicts as its float32 simulation.

K-sample ensembles: :func:`pack_ensemble` packs K posterior samples of the
binary weights (K bits per weight, one set of BatchNorm statistics) and predicts
the Monte Carlo average of the K networks' softmax probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax.nn.layers import BatchNorm, BinaryConv, BinaryDense
from bayesbinn_jax.nn.networks import (
    VGG_CONVS,
    VGG_DENSES,
    ContinualMLP,
    MnistMLP,
    VGGBinaryConnect,
)

WORD_BITS = 32
"""Bits per packed word (``uint32``)."""

SUPPORTED_NETWORKS: tuple[type, ...] = (MnistMLP, VGGBinaryConnect)
"""Network classes (and subclasses, e.g. ContinualMLP) :func:`pack_network` packs."""

NETWORKS: dict[str, type] = {cls.__name__: cls for cls in (MnistMLP, ContinualMLP, VGGBinaryConnect)}
"""The networks :func:`network_from_config` rebuilds, by class name."""

_DTYPE_FIELDS = ("dtype", "param_dtype")


# --------------------------------------------------------------------------- bits


def pack_words(bits: jax.Array) -> jax.Array:
  """Packs booleans along the last axis into uint32 words: (..., n) -> (..., ceil(n / 32)).

  Bit j of word k holds element ``32 k + j``; the padding bits of the last word are 0.
  Works on NumPy and JAX arrays (returns a JAX array).
  """
  bits = jnp.asarray(bits)
  n = bits.shape[-1]
  pad = (-n) % WORD_BITS
  bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
  bits = jnp.reshape(bits, bits.shape[:-1] + (-1, WORD_BITS)).astype(jnp.uint32)
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  return jnp.sum(bits << shifts, axis=-1, dtype=jnp.uint32)


def _pack_words_np(bits: np.ndarray) -> np.ndarray:
  """NumPy :func:`pack_words` for the weights at packing time: (..., n) -> (..., words) uint32."""
  n = bits.shape[-1]
  pad = (-n) % WORD_BITS
  bits = np.pad(bits.astype(np.uint64), [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
  bits = bits.reshape(bits.shape[:-1] + (-1, WORD_BITS))
  return (bits << np.arange(WORD_BITS, dtype=np.uint64)).sum(-1).astype(np.uint32)


def _popcount_sum(terms: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
  """``sum_k popcount(a_k XOR w_k)`` in int32 over ``terms`` of broadcastable (a_k, w_k)."""
  total = None
  for a, w in terms:
    count = jax.lax.population_count(jnp.bitwise_xor(a, w)).astype(jnp.int32)
    total = count if total is None else total + count
  return total


# --------------------------------------------------------------------------- thresholds


def _bn_apply(momentum: float, epsilon: float, stats: Mapping[str, Any], z: jax.Array) -> jax.Array:
  """The network's eval-mode BatchNorm (float32) applied to ``z``."""
  return BatchNorm(momentum, epsilon, dtype=jnp.float32).apply(
      {"batch_stats": stats}, z, use_running_average=True)


def _thresholds(bn: Callable[[jax.Array], jax.Array], units: int, n: int) -> np.ndarray:
  """Per unit, the smallest integer ``t`` in [-n, n + 1] with ``bn(t) >= 0`` (n + 1: never).

  Bisection on the float32 BatchNorm itself, valid because ``bn`` is monotone
  non-decreasing in its input.
  """
  lo = np.full(units, -n, np.int64)
  hi = np.full(units, n + 1, np.int64)
  evaluate = jax.jit(lambda z: bn(z[None, :].astype(jnp.float32))[0] >= 0)
  while np.any(lo < hi):
    mid = (lo + hi) // 2
    ok = np.asarray(evaluate(jnp.asarray(mid, jnp.float32)))
    hi = np.where(ok & (lo < hi), mid, hi)
    lo = np.where(~ok & (lo < hi), mid + 1, lo)
  return lo


def _count_threshold(n_valid: np.ndarray, t: np.ndarray) -> np.ndarray:
  """``floor((n_valid - t) / 2)``: the largest mismatch count that gives ``z >= t``."""
  return np.floor_divide(n_valid - t, 2)


# --------------------------------------------------------------------------- layers


class _Layer(NamedTuple):
  """One packed layer: ``kind``, static ``config`` and the ``arrays`` it computes with."""

  kind: str
  config: tuple
  arrays: dict


def _first_dense(kernel: np.ndarray, bn_stats: Any, bn: tuple[float, float]) -> _Layer:
  return _Layer("first_dense", (kernel.shape[1], bn), {"kernel": jnp.asarray(kernel, jnp.float32),
                                                       "stats": bn_stats})


def _xnor_dense(kernel: np.ndarray, bn_stats: Any, bn: tuple[float, float], last: bool) -> _Layer:
  n, units = kernel.shape
  words = jnp.asarray(_pack_words_np(kernel.T > 0).T)  # (words, units)
  if last:
    return _Layer("xnor_dense_out", (n, bn), {"words": words, "stats": bn_stats})
  t = _thresholds(lambda z: _bn_apply(*bn, bn_stats, z), units, n)
  limit = _count_threshold(np.int64(n), t)
  return _Layer("xnor_dense", (), {"words": words, "limit": jnp.asarray(limit, jnp.int32)})


def _first_conv(kernel: np.ndarray, bn_stats: Any, bn: tuple[float, float], pool: bool) -> _Layer:
  return _Layer("first_conv", (kernel.shape[-1], pool, bn),
                {"kernel": jnp.asarray(kernel, jnp.float32), "stats": bn_stats})


def _xnor_conv(kernel: np.ndarray, bn_stats: Any, bn: tuple[float, float], pool: bool,
               spatial: tuple[int, int]) -> _Layer:
  """A 3x3 stride-1 "SAME" binary convolution on an input of ``spatial`` (H, W)."""
  kh, kw, channels, units = kernel.shape
  height, width = spatial
  (pt, _), (pl, _) = jax.lax.padtype_to_pads(spatial, (kh, kw), (1, 1), "SAME")
  positive = kernel > 0
  words = jnp.asarray(_pack_words_np(np.moveaxis(positive, 3, 2)))  # (kh, kw, units, words)
  words = jnp.moveaxis(words, 3, 2)                                 # (kh, kw, words, units)
  # valid[i, j, a, b]: tap (a, b) of output position (i, j) reads an in-image pixel.
  rows = np.arange(height)[:, None] + np.arange(kh)[None, :] - pt   # (H, kh)
  cols = np.arange(width)[:, None] + np.arange(kw)[None, :] - pl    # (W, kw)
  valid = (((rows >= 0) & (rows < height))[:, None, :, None]
           & ((cols >= 0) & (cols < width))[None, :, None, :])      # (H, W, kh, kw)
  taps_positive = positive.sum(axis=2).astype(np.int64)              # (kh, kw, units)
  padded_count = np.einsum("hwab,abo->hwo", (~valid).astype(np.int64), taps_positive)
  n_valid = channels * valid.sum(axis=(2, 3)).astype(np.int64)       # (H, W)
  t = _thresholds(lambda z: _bn_apply(*bn, bn_stats, z), units, kh * kw * channels)
  limit = padded_count + _count_threshold(n_valid[:, :, None], t[None, None, :])
  return _Layer("xnor_conv", ((kh, kw), (pt, pl), pool),
                {"words": words, "limit": jnp.asarray(limit, jnp.int32)})


def _run_layer(layer: _Layer, x: jax.Array) -> jax.Array:
  """Applies one packed layer: real or boolean input -> boolean bits (or real logits)."""
  a = layer.arrays
  if layer.kind == "first_dense":
    features, bn = layer.config
    x = jnp.reshape(x, (x.shape[0], -1))
    z = BinaryDense(features, dtype=jnp.float32).apply({"params": {"kernel": a["kernel"]}}, x)
    return _bn_apply(*bn, a["stats"], z) >= 0
  if layer.kind == "first_conv":
    features, pool, bn = layer.config
    z = BinaryConv(features, (3, 3), padding="SAME", dtype=jnp.float32).apply(
        {"params": {"kernel": a["kernel"]}}, x)
    if pool:
      z = nn.max_pool(z, window_shape=(2, 2), strides=(2, 2))
    return _bn_apply(*bn, a["stats"], z) >= 0
  if layer.kind in ("xnor_dense", "xnor_dense_out"):
    packed = pack_words(jnp.reshape(x, (x.shape[0], -1)))
    words = a["words"]
    count = _popcount_sum([(packed[:, k:k + 1], words[k][None, :]) for k in range(words.shape[0])])
    if layer.kind == "xnor_dense":
      return count <= a["limit"]
    n, bn = layer.config
    return _bn_apply(*bn, a["stats"], (n - 2 * count).astype(jnp.float32))
  if layer.kind == "xnor_conv":
    (kh, kw), (pt, pl), pool = layer.config
    packed = pack_words(x)                                           # (B, H, W, words)
    _, height, width, num_words = packed.shape
    padded = jnp.pad(packed, ((0, 0), (pt, kh - 1 - pt), (pl, kw - 1 - pl), (0, 0)))
    words = a["words"]
    count = _popcount_sum([
        (padded[:, i:i + height, j:j + width, k:k + 1], words[i, j, k])
        for i in range(kh) for j in range(kw) for k in range(num_words)])
    bits = count <= a["limit"]
    if pool:
      bits = jax.lax.reduce_window(bits, False, jax.lax.bitwise_or, (1, 2, 2, 1), (1, 2, 2, 1),
                                   "VALID")
    return bits
  raise AssertionError(layer.kind)


def _run(layers: Sequence[_Layer], x: jax.Array) -> jax.Array:
  for layer in layers:
    x = _run_layer(layer, x)
  return x


# --------------------------------------------------------------------------- packing


def _binary_kernel(model: nn.Module, name: str, kernel: Any) -> np.ndarray:
  """The +-1 kernel the float network multiplies with, or ValueError naming the layer."""
  w = np.asarray(jax.device_get(kernel))
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise ValueError(f"{name}: kernel has dtype {w.dtype}; a binary kernel is a float array of +-1.")
  w = w.astype(np.float32)
  if model.quantizer == "ste":
    return np.where(w >= 0, 1.0, -1.0).astype(np.float32)
  bad = ~((w == 1) | (w == -1))
  if bad.any():
    raise ValueError(
        f"{name}: weights not +-1 ({int(bad.sum())} of {w.size} values, e.g. "
        f"{float(w.ravel()[np.argmax(bad.ravel())])!r}); pack the mode network: "
        "bb.posterior_mode(lam), or bb.binarize_params(params) for STE.")
  return w


def _bn_stats(name: str, batch_stats: Mapping[str, Any], epsilon: float) -> dict:
  """The float32 statistics of BatchNorm ``name``, or ValueError naming it."""
  if name not in batch_stats:
    raise ValueError(f"{name}: no batch_stats for this BatchNorm; pass the trained batch_stats.")
  mean = np.asarray(jax.device_get(batch_stats[name]["mean"]), np.float32)
  var = np.asarray(jax.device_get(batch_stats[name]["var"]), np.float32)
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var + epsilon > 0)):
    raise ValueError(f"{name}: statistics not finite or var + epsilon <= 0; the BatchNorm is "
                     "not a monotone threshold.")
  return {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}


def _check_model(model: Any) -> None:
  if not isinstance(model, SUPPORTED_NETWORKS):
    raise ValueError(
        f"{type(model).__name__}: unsupported network for xnor packing; supported: "
        f"{', '.join(c.__name__ for c in SUPPORTED_NETWORKS)} (and subclasses) with "
        "activations=\"binary\".")
  if isinstance(model, MnistMLP) and model.depth == 0:
    raise ValueError("BinaryDense_0: the only layer takes real inputs; nothing to pack "
                     "(depth must be >= 1).")
  if model.learned_output_scale:
    raise ValueError(
        "learned_output_scale=True: xnor packing supports the paper's output BatchNorm without "
        "gain; pack a network trained with output_scale=none.")
  if model.activations != "binary":
    second = "BinaryDense_1" if isinstance(model, MnistMLP) else "BinaryConv_1"
    raise ValueError(
        f"{second}: real-valued inputs (activations={model.activations!r}); xnor packing needs "
        "binary activations into every binary layer but the first: build the network with "
        "activations=\"binary\".")


def _mlp_layers(model: MnistMLP, kernels: Mapping, stats: Mapping) -> list[_Layer]:
  bn = (model.bn_momentum, model.bn_epsilon)
  layers = []
  for i in range(model.depth + 1):
    kernel = kernels[f"BinaryDense_{i}"]["kernel"]
    bn_stats = _bn_stats(f"BatchNorm_{i}", stats, model.bn_epsilon)
    if i == 0:
      layers.append(_first_dense(kernel, bn_stats, bn))
    else:
      layers.append(_xnor_dense(kernel, bn_stats, bn, last=i == model.depth))
  return layers


def _vgg_layers(model: VGGBinaryConnect, kernels: Mapping, stats: Mapping,
                spatial: tuple[int, int]) -> list[_Layer]:
  conv_bn = (model.conv_bn_momentum, model.conv_bn_epsilon)
  dense_bn = (model.dense_bn_momentum, model.dense_bn_epsilon)
  layers = []
  for i, (_, pool) in enumerate(VGG_CONVS):
    kernel = kernels[f"BinaryConv_{i}"]["kernel"]
    bn_stats = _bn_stats(f"BatchNorm_{i}", stats, model.conv_bn_epsilon)
    if i == 0:
      layers.append(_first_conv(kernel, bn_stats, conv_bn, pool))
    else:
      layers.append(_xnor_conv(kernel, bn_stats, conv_bn, pool, spatial))
    if pool:
      spatial = (spatial[0] // 2, spatial[1] // 2)
  for i in range(len(VGG_DENSES) + 1):
    kernel = kernels[f"BinaryDense_{i}"]["kernel"]
    bn_stats = _bn_stats(f"BatchNorm_{len(VGG_CONVS) + i}", stats, model.dense_bn_epsilon)
    layers.append(_xnor_dense(kernel, bn_stats, dense_bn, last=i == len(VGG_DENSES)))
  return layers


def _layer_names(model: Any) -> list[str]:
  """The binary layers' names in params, in order."""
  if isinstance(model, MnistMLP):
    return [f"BinaryDense_{i}" for i in range(model.depth + 1)]
  return ([f"BinaryConv_{i}" for i in range(len(VGG_CONVS))]
          + [f"BinaryDense_{i}" for i in range(len(VGG_DENSES) + 1)])


def binary_params(model: Any, params: Mapping[str, Any]) -> dict:
  """The +-1 float32 kernels the network computes with, as ``{layer: {"kernel": w}}``.

  ``quantizer="none"``: the kernels, checked to be exactly +-1; ``"ste"``: the
  sign of the latent kernels (0 -> +1). A leading sample axis is kept.

  Raises:
    ValueError: naming the layer, for a missing kernel or weights not +-1, or
      an unsupported network (see :func:`pack_network`).
  """
  _check_model(model)
  out = {}
  for name in _layer_names(model):
    if name not in params or "kernel" not in params[name]:
      raise ValueError(f"{name}: no kernel in params; params do not match the network.")
    out[name] = {"kernel": _binary_kernel(model, name, params[name]["kernel"])}
  return out


def network_config(model: Any) -> dict:
  """The JSON-serializable constructor arguments of a supported network (dtypes by name).

  ``quantizer`` is stored as "none": packed kernels are already +-1.
  """
  _check_model(model)
  config = {}
  for field in dataclasses.fields(model):
    if field.name in ("parent", "name"):
      continue
    value = getattr(model, field.name)
    if field.name in _DTYPE_FIELDS:
      value = jnp.dtype(value).name
    config[field.name] = list(value) if isinstance(value, tuple) else value
  config["quantizer"] = "none"
  return {"network": type(model).__name__, "config": config}


def network_from_config(spec: Mapping[str, Any]) -> nn.Module:
  """Rebuilds the network :func:`network_config` described; ValueError if it cannot."""
  name = spec.get("network") if isinstance(spec, Mapping) else None
  if name not in NETWORKS or not isinstance(spec.get("config"), Mapping):
    raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
  config = dict(spec["config"])
  for key in _DTYPE_FIELDS:
    if key in config:
      config[key] = jnp.dtype(config[key])
  try:
    return NETWORKS[name](**config)
  except TypeError as error:
    raise ValueError(f"{name}: invalid configuration ({error})") from None


class XnorNetwork:
  """A packed fully binary network: ``net(x)`` gives the float network's eval-mode logits.

  Built by :func:`pack_network` (``XnorNetwork(net.layers[i:j])`` runs a slice
  of a packed network; a slice starting at a hidden layer takes its boolean
  input bits). ``net(x)`` takes the float network's input
  (MnistMLP: (N, 28, 28[, 1]) or (N, 784); VGG: (N, H, W, C)) and returns the
  logits (N, num_classes) float32, equal to
  ``model.apply(variables, x, train=False)`` of the float32 network. The call
  is jitted. ``predict_proba(x)`` returns ``softmax(logits)``.

  Attributes:
    layers: the packed layers, in order (kind, static config, arrays).
    num_samples: None for one network; K for an ensemble of K weight samples,
      whose ``__call__`` returns (K, N, num_classes) logits and
      ``predict_proba`` the mean of the K softmax probabilities.
  """

  def __init__(self, layers: Sequence[Any], num_samples: int | None = None):
    self.layers = layers
    self.num_samples = num_samples
    if num_samples is None:
      self._logits = jax.jit(lambda x: _run(layers, x))
      self._features = jax.jit(lambda x: _run(layers[:-1], x))
    else:
      self._logits = jax.jit(lambda x: jnp.stack([_run(sample, x) for sample in layers]))
      self._features = jax.jit(lambda x: jnp.stack([_run(sample[:-1], x) for sample in layers]))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits (N, classes), or (K, N, classes) for an ensemble, float32."""
    return self._logits(x)

  def features(self, x: jax.Array) -> jax.Array:
    """The binary activations entering the last layer, bool (N, ...) (True is +1)."""
    return self._features(x)

  def predict_proba(self, x: jax.Array) -> jax.Array:
    """Softmax probabilities (N, classes); an ensemble averages its K networks' probabilities."""
    probs = jax.nn.softmax(self(x), axis=-1)
    return probs if self.num_samples is None else jnp.mean(probs, axis=0)


def _layers(model: Any, variables: Mapping[str, Any], input_shape: Sequence[int] | None) -> list:
  params, stats = variables.get("params"), variables.get("batch_stats")
  if params is None or stats is None:
    raise ValueError("variables must hold 'params' and 'batch_stats' (the trained network's).")
  kernels = binary_params(model, params)
  if isinstance(model, MnistMLP):
    return _mlp_layers(model, kernels, stats)
  spatial = tuple(input_shape[-3:-1]) if input_shape is not None else (32, 32)
  return _vgg_layers(model, kernels, stats, spatial)


def pack_network(model: Any, variables: Mapping[str, Any], *,
                 input_shape: Sequence[int] | None = None) -> XnorNetwork:
  """Packs a trained fully binary network for xnor/popcount inference.

  Args:
    model: a :data:`SUPPORTED_NETWORKS` instance with ``activations="binary"``.
    variables: ``{"params": ..., "batch_stats": ...}``; kernels exactly +-1
      (``quantizer="none"``, e.g. ``bb.posterior_mode(lam)``) or latent weights
      binarized by sign with 0 -> +1 (``quantizer="ste"``).
    input_shape: the VGG's input shape (..., H, W, C) (default 32 x 32); the
      padding correction depends on the image size. Ignored for the MLP.

  Returns:
    An :class:`XnorNetwork` whose logits equal the float32 network's in eval mode.

  Raises:
    ValueError: one line naming the layer and the reason, for an unsupported
      network, real-valued activations into a binary layer, weights not +-1,
      missing or invalid BatchNorm statistics.
  """
  _check_model(model)
  return XnorNetwork(_layers(model, variables, input_shape))


def pack_ensemble(model: Any, variables: Mapping[str, Any], *,
                  input_shape: Sequence[int] | None = None) -> XnorNetwork:
  """Packs K weight samples (params leaves with a leading axis K) sharing one batch_stats.

  The K networks' mean softmax probability (``predict_proba``) is the Monte
  Carlo predictive ``1/K sum_k p(y | x, w_k)`` with ``w_k ~ Bernoulli(sigmoid(2
  lambda))`` (``bb.sample_binary``), stored at K bits per weight.

  Raises:
    ValueError: as :func:`pack_network`, or params leaves without a common leading axis.
  """
  _check_model(model)
  params = variables.get("params")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(params)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError("params: every leaf needs the same leading sample axis K for an ensemble; "
                     f"got leading sizes {sorted(sizes, key=str)}.")
  num_samples = sizes.pop()
  samples = [_layers(model, {**variables, "params": jax.tree.map(lambda p, k=k: p[k], params)},
                     input_shape) for k in range(num_samples)]
  return XnorNetwork(samples, num_samples)

