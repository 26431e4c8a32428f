"""Tests of bayesbinn_jax.export: 1-bit packed save and load of binary networks.

The bit layout is checked against bytes worked out by hand; predictions of the
loaded networks against the mode networks they were saved from, bit for bit.
The size check uses the default MnistMLP's shapes from ``jax.eval_shape`` and
NumPy +-1 values (no network init).
"""

from __future__ import annotations

import errno
import json
import math
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import freeze
from numpy.testing import assert_array_equal

import bayesbinn_jax as bb
from bayesbinn_jax import atomic, export
from bayesbinn_jax.atomic import OutputWriteError
from bayesbinn_jax.export import load_packed, packed_size_bytes, save_packed, size_report
from bayesbinn_jax.nn import ContinualMLP, MnistMLP

KEY = jax.random.PRNGKey(0)


def _signs(shape, dtype=np.float32, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)


def _assert_same_tree(actual, expected) -> None:
  """Same nested dict structure and key order, and leaves equal with the same dtype."""
  if isinstance(expected, dict) or hasattr(expected, "items"):
    assert isinstance(actual, dict)
    assert list(actual) == list(expected)
    for key in expected:
      _assert_same_tree(actual[key], expected[key])
    return
  expected = np.asarray(expected)
  assert actual.dtype == expected.dtype
  assert actual.shape == expected.shape
  assert_array_equal(np.asarray(actual, np.float64), np.asarray(expected, np.float64))


# --------------------------------------------------------------------------- round trips


TREES = {
    "odd_dense": {"Dense_0": {"kernel": _signs((13, 7))}, "Dense_1": {"kernel": _signs((7, 3), seed=1),
                                                                      "bias": _signs((3,), seed=2)}},
    "conv_nested": {"BinaryConv_0": {"kernel": _signs((3, 3, 3, 5))},
                    "block": {"inner": {"kernel": _signs((1,), seed=3)}, "z": {"kernel": _signs((9,), seed=4)}}},
    "scalar_and_empty": {"a": {"kernel": np.float32(-1.0)}, "b": {"kernel": np.ones((0, 4), np.float32)}},
    "dtypes": {"f16": _signs((17,), np.float16), "bf16": _signs((5, 3), jnp.bfloat16),
               "f64": _signs((8,), np.float64), "i8": _signs((2, 11), np.int8)},
    "all_minus_one": {"k": -np.ones((10,), np.float32)},
}


@pytest.mark.parametrize("name", sorted(TREES))
def test_round_trip_is_exact(tmp_path, name):
  params = TREES[name]
  path = tmp_path / "net.npz"
  save_packed(path, params)
  loaded, stats, metadata = load_packed(path)
  _assert_same_tree(loaded, params)
  assert stats is None
  assert metadata[export.METADATA_KEY]["version"] == bb.__version__


def test_round_trip_jax_arrays_frozen_dicts_and_batch_stats(tmp_path):
  params = freeze({"Dense_0": {"kernel": jnp.asarray(_signs((784 + 3, 5)))}})
  stats = {"BatchNorm_0": {"mean": jnp.linspace(-1, 1, 5), "var": jnp.arange(5.0) + 0.5},
           "empty": {}}
  metadata = {"network": "MnistMLP", "num_classes": 10, "hidden": [5]}
  save_packed(str(tmp_path / "a.bin"), params, stats, metadata=metadata)
  loaded, loaded_stats, loaded_meta = load_packed(tmp_path / "a.bin")
  _assert_same_tree(loaded, params)
  _assert_same_tree(loaded_stats, jax.device_get(stats))
  assert loaded_stats["empty"] == {}
  assert {k: v for k, v in loaded_meta.items() if k != export.METADATA_KEY} == metadata
  assert loaded_meta[export.METADATA_KEY] == {
      "version": bb.__version__, "format": export.FORMAT,
      "format_version": export.FORMAT_VERSION, "bit_order": "little"}
  # batch_stats={} is kept as {}, not None.
  save_packed(tmp_path / "b.npz", params, {})
  assert load_packed(tmp_path / "b.npz")[1] == {}


def test_bit_layout_is_little_endian_by_hand(tmp_path):
  # +1 -> 1, -1 -> 0; bit i of byte j is element 8 j + i.
  w = np.array([[1, -1, -1, 1, 1], [1, -1, -1, 1, -1]], np.float32)  # C order: 1,-1,-1,1,1,1,-1,-1,1,-1
  save_packed(tmp_path / "w.npz", {"k": w})
  with np.load(tmp_path / "w.npz", allow_pickle=False) as archive:
    assert_array_equal(archive["bits_0"], np.array([1 + 8 + 16 + 32, 1], np.uint8))
    header = json.loads(archive["header"].tobytes().decode())
  assert header["bit_order"] == "little"
  assert header["params"] == ["dict", [["k", ["leaf", {"index": 0, "shape": [2, 5], "dtype": "float32"}]]]]


def test_bfloat16_batch_stats_keep_their_dtype(tmp_path):
  stats = {"bn": {"mean": jnp.asarray([0.1, -3.0], jnp.bfloat16)}}
  save_packed(tmp_path / "s.npz", {"k": _signs((3,))}, stats)
  _, loaded, _ = load_packed(tmp_path / "s.npz")
  _assert_same_tree(loaded, jax.device_get(stats))


# --------------------------------------------------------------------------- networks


def _variables(model, x, seed=0):
  """Variables shaped like ``model.init``'s (from ``jax.eval_shape``, no init compiled):
  +-1 kernels as a mode network holds, positive non-trivial BatchNorm statistics."""
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: _signs(s.shape, seed=int(rng.integers(1 << 30))), shapes["params"])
  stats = jax.tree.map(lambda s: rng.uniform(0.1, 2.0, s.shape).astype(np.float32),
                       shapes["batch_stats"])
  return params, stats


def test_mnist_mlp_mode_network_predictions_are_bitwise_identical(tmp_path):
  model = MnistMLP(hidden=64)
  x = jax.random.normal(KEY, (32, 28, 28))
  mode, stats = _variables(model, x)
  save_packed(tmp_path / "mlp.npz", mode, stats, metadata={"network": "MnistMLP", "hidden": 64})
  loaded, loaded_stats, metadata = load_packed(tmp_path / "mlp.npz")
  assert metadata["network"] == "MnistMLP"
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  expected = apply({"params": jax.device_put(mode), "batch_stats": jax.device_put(stats)}, x)
  assert_array_equal(apply({"params": loaded, "batch_stats": loaded_stats}, x), expected)


def test_ste_latent_network_equals_its_packed_binarization(tmp_path):
  ste_model, model = MnistMLP(hidden=64, quantizer="ste"), MnistMLP(hidden=64)
  x = jax.random.normal(KEY, (16, 784))
  signs, stats = _variables(ste_model, x, seed=1)
  rng = np.random.default_rng(2)
  latent = jax.tree.map(lambda s: s * rng.uniform(0.0, 1.0, s.shape).astype(np.float32), signs)
  for kernel in jax.tree.leaves(latent):
    kernel[0, :3] = 0.0  # 0 binarizes to +1
  save_packed(tmp_path / "ste.npz", bb.binarize_params(latent), stats)
  loaded, loaded_stats, _ = load_packed(tmp_path / "ste.npz")
  assert all((k[0, :3] == 1.0).all() for k in jax.tree.leaves(loaded))
  apply = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=False))  # noqa: E731
  assert_array_equal(apply(model)({"params": loaded, "batch_stats": loaded_stats}, x),
                     apply(ste_model)({"params": latent, "batch_stats": stats}, x))


@pytest.mark.slow
def test_continual_mlp_trained_with_the_engine_predicts_identically(tmp_path):
  from bayesbinn_jax.experiments.config import build_config, method_of
  from bayesbinn_jax.train.engine import create_train_state, make_predict, make_train_step

  config = build_config("permuted-mnist", "bayesbinn")
  method = method_of(config, steps_per_epoch=10, train_set_size=1000, key=KEY)
  model = ContinualMLP(quantizer=method.quantizer)
  x = jax.random.normal(KEY, (20, 28, 28))
  y = jnp.arange(20) % 10
  state = create_train_state(model, method, x[:1], 0)
  state, _ = make_train_step(method, "classification")(state, x, y)
  mode = jax.jit(bb.mode_params)(state.opt_state, state.params)
  save_packed(tmp_path / "cl.npz", mode, state.batch_stats,
              metadata={"network": "ContinualMLP", "num_classes": 10})
  loaded, loaded_stats, _ = load_packed(tmp_path / "cl.npz")
  apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False), axis=-1))
  from_file = apply({"params": loaded, "batch_stats": loaded_stats}, x)
  assert_array_equal(from_file, make_predict(method, "classification")(state, x))  # the mode network


def test_default_mnist_mlp_packed_file_is_over_25x_smaller_than_float32_npz(tmp_path):
  """Packed file vs ``np.savez`` (uncompressed) of the float32 params and batch stats."""
  shapes = jax.eval_shape(lambda: MnistMLP().init(KEY, jnp.zeros((1, 784)), train=False))
  params = jax.tree.map(lambda s: _signs(s.shape), shapes["params"])
  rng = np.random.default_rng(1)
  stats = jax.tree.map(lambda s: rng.random(s.shape).astype(np.float32), shapes["batch_stats"])
  num_weights = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes["params"]))
  assert num_weights == 784 * 2048 + 2 * 2048 * 2048 + 2048 * 10
  assert packed_size_bytes(shapes["params"]) == sum(
      math.ceil(math.prod(s.shape) / 8) for s in jax.tree.leaves(shapes["params"]))

  save_packed(tmp_path / "packed.npz", params, stats, metadata={"network": "MnistMLP"})
  flat = {jax.tree_util.keystr(p): leaf for p, leaf in
          jax.tree_util.tree_flatten_with_path({"params": params, "batch_stats": stats})[0]}
  np.savez(tmp_path / "float32.npz", **flat)
  packed = os.path.getsize(tmp_path / "packed.npz")
  full = os.path.getsize(tmp_path / "float32.npz")
  report = size_report(shapes["params"], shapes["batch_stats"])
  assert report.num_weights == num_weights
  assert report.packed_bytes <= packed <= report.packed_bytes + 16_384  # header and zip overhead
  assert full >= report.float32_bytes
  assert full / packed >= 25, (full, packed)


def test_size_report_and_packed_size_by_hand():
  params = {"a": jnp.zeros((3, 3)), "b": {"c": jnp.zeros((8,)), "d": jnp.zeros(())}}
  assert packed_size_bytes(params) == 2 + 1 + 1
  report = size_report(params, {"bn": {"mean": jnp.zeros((2,))}})
  assert report == (18, 2, 80, 4 + 8, 80 / 12)
  assert size_report(params).ratio == 18 * 4 / 4


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [
    np.array([1.0, 0.0, -1.0], np.float32),
    np.array([1.0, np.nan], np.float32),
    np.tanh(np.array([3.0, -2.0], np.float32)),  # a relaxed sample, not the mode
    np.array([True, False]),
    np.array([1, 2], np.int32),
])
def test_non_binary_leaf_is_rejected_by_path(tmp_path, bad):
  params = {"Dense_0": {"kernel": _signs((4,))}, "Dense_1": {"kernel": bad}}
  with pytest.raises(ValueError, match="params/Dense_1/kernel"):
    save_packed(tmp_path / "x.npz", params)
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("tree, match", [
    ({"a": [np.ones(2)]}, "params/a is a list"),
    ({1: np.ones(2)}, "key 1"),
    ({"a": None}, "params/a is a NoneType"),
])
def test_trees_other_than_nested_dicts_are_rejected(tmp_path, tree, match):
  with pytest.raises(ValueError, match=match):
    save_packed(tmp_path / "x.npz", tree)


def test_non_json_metadata_and_non_float_stats_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="JSON"):
    save_packed(tmp_path / "x.npz", {"k": _signs((3,))}, metadata={"f": object()})
  with pytest.raises(ValueError, match="batch_stats/bn/count"):
    save_packed(tmp_path / "x.npz", {"k": _signs((3,))}, {"bn": {"count": np.arange(3)}})
  assert not os.listdir(tmp_path)


@pytest.fixture
def saved(tmp_path):
  path = tmp_path / "net.npz"
  save_packed(path, {"Dense_0": {"kernel": _signs((300, 40))}}, {"bn": {"mean": np.ones(40, np.float32)}})
  return path


def test_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"nope\.npz: no such file"):
    load_packed(tmp_path / "nope.npz")
  with pytest.raises(ValueError, match="directory"):
    load_packed(tmp_path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_file(saved, keep):
  data = saved.read_bytes()
  saved.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
  with pytest.raises(ValueError, match=rf"{saved.name}: .*truncated"):
    load_packed(saved)


def test_corrupt_bits_fail_the_crc(saved):
  data = bytearray(saved.read_bytes())
  start = data.index(b"bits_0.npy") + 600  # inside the 1500 bytes of packed bits
  data[start:start + 16] = bytes(255 - b for b in data[start:start + 16])
  saved.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=rf"{saved.name}: .*corrupt"):
    load_packed(saved)


def _rewrite(path, **changes):
  with np.load(path, allow_pickle=False) as archive:
    arrays = {name: archive[name] for name in archive.files}
  for name, value in changes.items():
    if value is None:
      del arrays[name]
    else:
      arrays[name] = value
  np.savez(path, **arrays)


def _header_bytes(header) -> np.ndarray:
  return np.frombuffer(json.dumps(header).encode(), np.uint8)


def _header_of(path):
  with np.load(path, allow_pickle=False) as archive:
    return json.loads(archive["header"].tobytes().decode())


@pytest.mark.parametrize("change, match", [
    (lambda h, p: {"bits_0": None}, "entry 'bits_0' is missing"),
    (lambda h, p: {"bits_0": np.zeros(7, np.uint8)}, "params/Dense_0/kernel holds"),
    (lambda h, p: {"stats_0": np.ones(40, np.float64)}, "batch_stats/bn/mean holds"),
    (lambda h, p: {"header": None}, "no header"),
    (lambda h, p: {"header": np.frombuffer(b"{not json", np.uint8)}, "not valid JSON"),
    (lambda h, p: {"header": _header_bytes(dict(h, format="other"))}, "format 'other'"),
    (lambda h, p: {"header": _header_bytes(dict(h, format_version=99))}, "format version 99"),
    (lambda h, p: {"header": _header_bytes(dict(h, params=["leaf", {"index": 0, "shape": [2],
                                                                    "dtype": "nope"}]))}, "dtype"),
    (lambda h, p: {"header": _header_bytes(dict(h, params=["tuple", []]))}, "malformed"),
])
def test_inconsistent_archive_is_rejected(saved, change, match):
  _rewrite(saved, **change(_header_of(saved), saved))
  with pytest.raises(ValueError, match=rf"{saved.name}: .*{match}"):
    load_packed(saved)


def test_wrong_format_files(tmp_path):
  np.save(tmp_path / "array.npy", np.ones(3))
  (tmp_path / "text.npz").write_text("hello")
  np.savez(tmp_path / "plain.npz", a=np.ones(3))
  with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
    z.writestr("readme.txt", "hi")
  for name, match in [("array.npy", "not a packed network file"), ("text.npz", "not an .npz"),
                      ("plain.npz", "no header"), ("other.zip", "no header")]:
    with pytest.raises(ValueError, match=rf"{name}: .*{match}"):
      load_packed(tmp_path / name)


# --------------------------------------------------------------------------- atomic write


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch, call):
  # The failure strikes inside write_atomic, once the new archive is in its temporary file.
  path = tmp_path / "net.npz"
  old = {"k": _signs((100,), seed=1)}
  save_packed(path, old)
  before = path.read_bytes()
  temporaries = []

  def no_space(*args):
    temporaries.extend(n for n in os.listdir(tmp_path) if n.endswith(".tmp"))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(atomic.os, call, no_space)
  with pytest.raises(OutputWriteError, match=f"cannot write {path}: No space left on device"):
    save_packed(path, {"k": _signs((100,), seed=2)})
  with pytest.raises(OutputWriteError, match="new.npz: No space left on device"):
    save_packed(tmp_path / "new.npz", old)
  monkeypatch.undo()
  assert len(temporaries) == 2  # the temporary files existed when the write failed
  assert sorted(os.listdir(tmp_path)) == ["net.npz"]  # and are gone
  assert path.read_bytes() == before
  _assert_same_tree(load_packed(path)[0], old)


def test_save_replaces_an_existing_file(tmp_path):
  path = tmp_path / "net.npz"
  save_packed(path, {"k": _signs((10,), seed=1)})
  new = {"k": _signs((10,), seed=2), "j": _signs((3,))}
  save_packed(path, new)
  _assert_same_tree(load_packed(path)[0], new)
  assert sorted(os.listdir(tmp_path)) == ["net.npz"]
