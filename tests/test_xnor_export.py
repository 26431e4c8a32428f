"""Tests of save_xnor / load_xnor: a fully binary network saved in the packed format loads as
its xnor/popcount inference function; refusals and damaged files raise one clear ValueError."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bayesbinn_jax.export import XNOR_KEY, load_packed, load_xnor, save_packed, save_xnor
from bayesbinn_jax.nn import ContinualMLP, MnistMLP, VGGBinaryConnect, XnorNetwork

KEY = jax.random.PRNGKey(0)


def _network(model, x, seed=0, samples=None):
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(seed)
  lead = () if samples is None else (samples,)
  params = jax.tree.map(lambda s: rng.choice([-1.0, 1.0], lead + s.shape).astype(np.float32),
                        shapes["params"])
  stats = {name: {"mean": rng.integers(-4, 5, s["mean"].shape).astype(np.float32),
                  "var": rng.uniform(0.5, 20.0, s["var"].shape).astype(np.float32)}
           for name, s in shapes["batch_stats"].items()}
  return {"params": params, "batch_stats": stats}


def test_round_trip_mlp(tmp_path):
  model = ContinualMLP(num_classes=5, hidden=45, activations="binary")
  x = np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32)
  variables = _network(model, x)
  path = tmp_path / "mlp.xnor.npz"
  save_xnor(path, model, variables, metadata={"dataset": "mnist"})
  net, metadata = load_xnor(path)
  assert isinstance(net, XnorNetwork)
  assert metadata["dataset"] == "mnist"
  assert metadata[XNOR_KEY]["network"] == "ContinualMLP"
  assert metadata[XNOR_KEY]["config"]["hidden"] == 45
  logits = np.asarray(model.apply(variables, x, train=False))
  assert_array_equal(np.asarray(net(x)).argmax(-1), logits.argmax(-1))
  assert_allclose(np.asarray(net(x)), logits, rtol=1e-6, atol=1e-6)
  # It is an ordinary packed file: the +-1 kernels load with load_packed too.
  params, _, _ = load_packed(path)
  assert_array_equal(params["BinaryDense_1"]["kernel"], variables["params"]["BinaryDense_1"]["kernel"])


@pytest.mark.slow
def test_round_trip_vgg_small_input(tmp_path):
  model = VGGBinaryConnect(num_classes=3, activations="binary")
  x = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype(np.float32)
  variables = _network(model, x)
  save_xnor(tmp_path / "vgg.npz", model, variables, input_shape=x.shape)
  net, _ = load_xnor(tmp_path / "vgg.npz")
  assert_array_equal(np.asarray(net(x)).argmax(-1),
                     np.asarray(model.apply(variables, x, train=False)).argmax(-1))


def test_round_trip_ensemble_k_bits_per_weight(tmp_path):
  model = MnistMLP(num_classes=4, hidden=40, depth=2, activations="binary")
  x = np.random.default_rng(3).standard_normal((5, 784)).astype(np.float32)
  one, eight = tmp_path / "one.npz", tmp_path / "eight.npz"
  save_xnor(one, model, _network(model, x))
  variables = _network(model, x, samples=8)
  save_xnor(eight, model, variables, ensemble=True)
  net, metadata = load_xnor(eight)
  assert metadata[XNOR_KEY]["num_samples"] == 8 and net.num_samples == 8
  weights = 784 * 40 + 40 * 40 + 40 * 4
  params, _, _ = load_packed(eight)
  assert sum(np.size(p) for p in jax.tree.leaves(params)) == 8 * weights
  assert os.path.getsize(eight) - os.path.getsize(one) >= 7 * weights // 8
  expected = np.mean([np.asarray(jax.nn.softmax(model.apply(
      {"params": jax.tree.map(lambda p, k=k: p[k], variables["params"]),
       "batch_stats": variables["batch_stats"]}, x, train=False))) for k in range(8)], axis=0)
  assert_allclose(np.asarray(net.predict_proba(x)), expected, rtol=1e-5, atol=1e-6)


def test_refusal_writes_nothing(tmp_path):
  model = MnistMLP(hidden=8, depth=2, activations="binary")
  x = np.zeros((1, 784), np.float32)
  variables = _network(model, x)
  variables["params"]["BinaryDense_1"]["kernel"][0, 0] = 0.25
  path = tmp_path / "net.npz"
  with pytest.raises(ValueError, match=r"^BinaryDense_1: kernel is not binary"):
    save_xnor(path, model, variables)
  assert os.listdir(tmp_path) == []
  # An existing file is left as it was.
  path.write_bytes(b"old")
  with pytest.raises(ValueError, match="^BinaryDense_1: real-valued inputs"):
    save_xnor(path, MnistMLP(hidden=8, depth=2), _network(model, x))
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["net.npz"]


def test_damaged_and_foreign_files_raise_naming_the_file(tmp_path):
  model = MnistMLP(hidden=8, depth=2, activations="binary")
  variables = _network(model, np.zeros((1, 784), np.float32))
  path = tmp_path / "net.npz"
  save_xnor(path, model, variables)
  data = path.read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="truncated.npz"):
    load_xnor(truncated)
  plain = tmp_path / "plain.npz"
  save_packed(plain, variables["params"], variables["batch_stats"])
  with pytest.raises(ValueError, match=r"plain.npz: not an xnor network file \(no 'xnor' metadata\)"):
    load_xnor(plain)
  foreign = tmp_path / "foreign.npz"
  save_packed(foreign, variables["params"], variables["batch_stats"],
              metadata={XNOR_KEY: {"network": "ResNet", "config": {}}})
  with pytest.raises(ValueError, match="foreign.npz: unknown network 'ResNet'"):
    load_xnor(foreign)
