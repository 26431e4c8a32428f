"""Tests for bayesbinn_jax.data: containers, validation, .npz / Snelson loaders,
two moons, validation split, permuted MNIST, preprocessing and seeds.

All data is generated here and written to tmp_path; nothing reads shared/data.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import jax
import numpy as np
import pytest

from bayesbinn_jax import data
from bayesbinn_jax.data import DataError


def _arrays(n_train=12, n_test=6, shape=(8, 8, 3), num_classes=3, seed=0, **overrides):
  """A small valid classification set: uint8 images, every class present."""
  rng = np.random.default_rng(seed)
  arrays = {
      "x_train": rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8),
      "y_train": np.arange(n_train) % num_classes,
      "x_test": rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8),
      "y_test": np.arange(n_test)[::-1] % num_classes,
  }
  arrays.update(overrides)
  return arrays


def _save(tmp_path, name="set.npz", **arrays):
  path = tmp_path / name
  np.savez_compressed(path, **arrays)
  return path


def _assert_error(excinfo, source, *words):
  message = str(excinfo.value)
  assert "\n" not in message
  assert str(source) in message
  for word in words:
    assert word in message, (word, message)


# ----------------------------------------------------------------- DataError


def test_data_error_is_value_error_with_one_line():
  error = DataError("a.npz", "bad\nthing   here")
  assert isinstance(error, ValueError)
  assert str(error) == "a.npz: bad thing here"
  assert error.source == "a.npz"


# --------------------------------------------------------------- validation


def test_validate_arrays_nhwc_and_dtypes():
  arrays = _arrays()
  ds = data.validate_arrays(arrays, source="mem")
  assert isinstance(ds, data.ArrayDataset)
  assert ds.x_train.shape == (12, 8, 8, 3) and ds.x_train.dtype == np.uint8
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert ds.num_classes == 3
  assert ds.input_shape == (8, 8, 3)
  assert (ds.num_train, ds.num_test, ds.num_val) == (12, 6, 0)
  assert not ds.has_validation and ds.x_val is None


def test_validate_arrays_nhw_gets_channel_axis():
  arrays = _arrays(shape=(5, 7), num_classes=2)
  ds = data.validate_arrays(arrays, source="mem")
  assert ds.x_train.shape == (12, 5, 7, 1)
  assert ds.x_test.shape == (6, 5, 7, 1)
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])


@pytest.mark.parametrize("labels_train, labels_test, expected", [
    ([0, 1, 2, 0], [1, 1], 3),
    ([0, 1, 0, 1], [4, 0], 5),  # the largest label is in the test set
    (np.array([0, 9, 3, 3], np.uint8), np.array([2, 2], np.uint8), 10),
])
def test_num_classes_inferred_over_train_and_test(labels_train, labels_test, expected):
  arrays = _arrays(
      n_train=4, n_test=2, y_train=np.asarray(labels_train), y_test=np.asarray(labels_test)
  )
  # test labels the training split lacks (4, and 2 in the last case) need allow_unseen_labels
  assert data.validate_arrays(arrays, source="mem", allow_unseen_labels=True).num_classes == expected


def test_num_classes_given_is_kept_and_checked():
  arrays = _arrays(num_classes=3)
  assert data.validate_arrays(arrays, source="mem", num_classes=10).num_classes == 10
  with pytest.raises(DataError) as excinfo:
    data.validate_arrays(arrays, source="mem", num_classes=2)
  _assert_error(excinfo, "mem", "label 2", "num_classes=2")
  with pytest.raises(DataError, match="num_classes must be an integer >= 2"):
    data.validate_arrays(arrays, source="mem", num_classes=1)


def test_float_images_accepted_when_finite():
  arrays = _arrays()
  arrays["x_train"] = arrays["x_train"] / 255.0
  arrays["x_test"] = arrays["x_test"] / 255.0
  ds = data.validate_arrays(arrays, source="mem")
  assert ds.x_train.dtype == np.float32


def test_validation_arrays_are_kept():
  arrays = _arrays(x_val=np.zeros((3, 8, 8, 3), np.uint8), y_val=np.array([0, 1, 2]))
  ds = data.validate_arrays(arrays, source="mem")
  assert ds.num_val == 3 and ds.y_val.dtype == np.int32


_INVALID_CASES = {
    "missing key": (dict(drop="y_test"), ["missing", "y_test"]),
    "inputs 1-D": (dict(x_train=np.zeros((12,), np.uint8)), ["x_train", "ndim 1"]),
    "images 5-D": (dict(x_test=np.zeros((6, 8, 8, 3, 1), np.uint8)), ["x_test", "ndim 5"]),
    "images int64": (dict(x_train=np.zeros((12, 8, 8, 3), np.int64)),
                     ["x_train", "int64", "uint8"]),
    "images bool": (dict(x_test=np.zeros((6, 8, 8, 3), bool)), ["x_test", "bool"]),
    "images NaN": (dict(x_train=np.full((12, 8, 8, 3), np.nan, np.float32)), ["x_train", "NaN"]),
    "images Inf": (dict(x_test=np.full((6, 8, 8, 3), np.inf)), ["x_test", "Inf"]),
    "images beyond float32": (dict(x_test=np.full((6, 8, 8, 3), 1e300)), ["x_test", "float32's range"]),
    "images object": (dict(x_train=np.empty((12, 8, 8, 3), object)), ["x_train", "object"]),
    "train empty": (dict(x_train=np.zeros((0, 8, 8, 3), np.uint8), y_train=np.zeros((0,), int)),
                    ["x_train", "empty"]),
    "test empty": (dict(x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros((0,), int)),
                   ["x_test", "empty"]),
    "zero width": (dict(x_test=np.zeros((6, 8, 0, 3), np.uint8)), ["x_test", "empty"]),
    "labels 2-D": (dict(y_train=np.zeros((12, 1), int)), ["y_train", "1-D"]),
    "labels float": (dict(y_train=np.zeros(12, np.float32)), ["y_train", "float32", "integers"]),
    "labels bool": (dict(y_test=np.zeros(6, bool)), ["y_test", "integers"]),
    "labels negative": (dict(y_test=np.array([0, 1, 2, -1, 0, 1])), ["y_test", "negative", "-1"]),
    "length mismatch": (dict(y_train=np.zeros(11, int)), ["y_train", "11 labels", "12 images"]),
    "shape mismatch": (dict(x_test=np.zeros((6, 8, 8, 1), np.uint8)),
                       ["image shape differs", "x_test"]),
    "NHW vs NHWC": (dict(x_test=np.zeros((6, 8, 8), np.uint8)), ["image shape differs"]),
    "dtype mismatch": (dict(x_test=np.zeros((6, 8, 8, 3), np.float32)), ["dtype differs"]),
    "single class": (dict(y_train=np.zeros(12, int), y_test=np.zeros(6, int)),
                     ["at least 2 classes"]),
    "val without labels": (dict(x_val=np.zeros((2, 8, 8, 3), np.uint8)), ["x_val", "y_val"]),
    "val shape": (dict(x_val=np.zeros((2, 4, 4, 3), np.uint8), y_val=np.array([0, 1])),
                  ["image shape differs", "x_val"]),
}


def _invalid_arrays(case):
  overrides, _ = _INVALID_CASES[case]
  overrides = dict(overrides)
  drop = overrides.pop("drop", None)
  arrays = _arrays(**overrides)
  if drop:
    del arrays[drop]
  return arrays


@pytest.mark.parametrize("case", sorted(_INVALID_CASES))
def test_validate_arrays_rejects(case):
  with pytest.raises(DataError) as excinfo:
    data.validate_arrays(_invalid_arrays(case), source="some/file.npz")
  _assert_error(excinfo, "some/file.npz", *_INVALID_CASES[case][1])


@pytest.mark.parametrize("case", sorted(set(_INVALID_CASES) - {"images object"}))
def test_load_npz_rejects_invalid_arrays_naming_the_file(tmp_path, case):
  path = _save(tmp_path, "bad_set.npz", **_invalid_arrays(case))
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, *_INVALID_CASES[case][1])


# ---------------------------------------------------------------- load_npz


def test_load_npz_round_trip_mnist_like(tmp_path):
  arrays = _arrays(n_train=20, n_test=10, shape=(28, 28), num_classes=10,
                   y_train=(np.arange(20) % 10).astype(np.uint8),
                   y_test=(np.arange(10) % 10).astype(np.uint8))
  path = _save(tmp_path, "mnist_small.npz", **arrays)
  ds = data.load_npz(path)
  assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert ds.num_classes == 10 and ds.y_train.dtype == np.int32


def test_load_npz_round_trip_non_mnist_shapes(tmp_path):
  arrays = _arrays(shape=(8, 8, 3), num_classes=3)
  path = _save(tmp_path, "tiny_rgb.npz", **arrays, extra=np.arange(3))
  ds = data.load_npz(str(path))
  assert ds.input_shape == (8, 8, 3) and ds.num_classes == 3
  np.testing.assert_array_equal(ds.x_test, arrays["x_test"])
  # An uncompressed archive works too.
  plain = tmp_path / "plain.npz"
  np.savez(plain, **arrays)
  np.testing.assert_array_equal(data.load_npz(plain).x_train, arrays["x_train"])


def test_load_npz_with_validation_arrays_and_num_classes(tmp_path):
  arrays = _arrays(x_val=np.ones((2, 8, 8, 3), np.uint8), y_val=np.array([2, 0]))
  ds = data.load_npz(_save(tmp_path, **arrays), num_classes=4)
  assert ds.num_val == 2 and ds.num_classes == 4


def test_load_npz_missing_file(tmp_path):
  path = tmp_path / "nowhere.npz"
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "not found")


def test_load_npz_directory(tmp_path):
  with pytest.raises(DataError) as excinfo:
    data.load_npz(tmp_path)
  _assert_error(excinfo, tmp_path, "not a regular file")


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a zip", b"\x93NUMPY\x01\x00", b"\x80\x04K\x01."]
)
def test_load_npz_not_a_zip(tmp_path, content):
  path = tmp_path / "junk.npz"
  path.write_bytes(content)
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "not an .npz")


def test_load_npz_plain_npy_file(tmp_path):
  path = tmp_path / "array.npz"
  with open(path, "wb") as handle:
    np.save(handle, np.arange(4))
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "not an .npz")


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.99])
def test_load_npz_truncated(tmp_path, keep):
  good = _save(tmp_path, **_arrays())
  content = good.read_bytes()
  path = tmp_path / "truncated.npz"
  path.write_bytes(content[: int(len(content) * keep)])
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "truncated")


def test_load_npz_corrupt_member(tmp_path):
  good = _save(tmp_path, **_arrays(n_train=200))
  content = bytearray(good.read_bytes())
  # Flip bytes inside the first member's compressed data (after its local header).
  for i in range(60, 120):
    content[i] ^= 0xFF
  path = tmp_path / "corrupt.npz"
  path.write_bytes(bytes(content))
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "corrupt")


def test_load_npz_pickled_object_array(tmp_path):
  arrays = _arrays()
  arrays["y_train"] = np.array([{"label": i} for i in range(12)], dtype=object)
  path = tmp_path / "pickled.npz"
  np.savez(path, **arrays)
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "y_train", "pickled")


def test_load_npz_zip_without_arrays(tmp_path):
  path = tmp_path / "other.npz"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("readme.txt", "hello")
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "missing", "x_train")


def test_load_npz_member_not_npy(tmp_path):
  path = tmp_path / "fake.npz"
  with zipfile.ZipFile(path, "w") as archive:
    for key in ("x_train", "y_train", "x_test", "y_test"):
      archive.writestr(key + ".npy", b"definitely not npy")
  with pytest.raises(DataError) as excinfo:
    data.load_npz(path)
  _assert_error(excinfo, path, "corrupt")


# ------------------------------------------------------------------ Snelson


def _snelson_arrays(n=20, m=31):
  rng = np.random.default_rng(1)
  x = np.sort(rng.uniform(0, 6, n))
  return {"x_train": x, "y_train": np.sin(x), "x_test": np.linspace(-3, 10, m)}


def test_load_snelson_round_trip(tmp_path):
  arrays = _snelson_arrays()
  ds = data.load_snelson(_save(tmp_path, "snelson.npz", **arrays))
  assert isinstance(ds, data.RegressionDataset)
  assert ds.x_train.shape == (20, 1) and ds.y_train.shape == (20,) and ds.x_test.shape == (31, 1)
  assert ds.x_train.dtype == ds.y_train.dtype == ds.x_test.dtype == np.float32
  assert ds.y_test is None
  np.testing.assert_allclose(ds.x_train[:, 0], arrays["x_train"], rtol=1e-6)
  np.testing.assert_allclose(ds.y_train, arrays["y_train"], rtol=1e-6)
  assert (ds.num_train, ds.num_test) == (20, 31)


def test_load_snelson_accepts_column_vectors_and_test_targets(tmp_path):
  arrays = _snelson_arrays()
  arrays["x_train"] = arrays["x_train"][:, None]
  arrays["y_test"] = np.zeros(31)
  ds = data.load_snelson(_save(tmp_path, "snelson.npz", **arrays))
  assert ds.x_train.shape == (20, 1) and ds.y_test.shape == (31,)


@pytest.mark.parametrize("overrides, words", [
    (dict(drop="x_test"), ["missing", "x_test"]),
    (dict(y_train=np.zeros(19)), ["y_train", "19 targets", "20 inputs"]),
    (dict(x_train=np.full(20, np.nan)), ["x_train", "NaN"]),
    (dict(y_train=np.zeros((20, 2))), ["y_train", "shape"]),
    (dict(x_test=np.zeros(0)), ["x_test", "empty"]),
    (dict(y_train=np.array(["a"] * 20)), ["y_train", "real numbers"]),
    (dict(y_test=np.zeros(5)), ["y_test", "5 targets"]),
])
def test_load_snelson_rejects(tmp_path, overrides, words):
  arrays = _snelson_arrays()
  overrides = dict(overrides)
  drop = overrides.pop("drop", None)
  arrays.update(overrides)
  if drop:
    del arrays[drop]
  path = _save(tmp_path, "snelson_bad.npz", **arrays)
  with pytest.raises(DataError) as excinfo:
    data.load_snelson(path)
  _assert_error(excinfo, path, *words)


def test_load_snelson_missing_file(tmp_path):
  with pytest.raises(DataError, match="snelson.npz: file not found"):
    data.load_snelson(tmp_path / "snelson.npz")


# ---------------------------------------------------------------- two moons


def test_two_moons_shapes_balance_and_dtypes():
  ds = data.two_moons(num_per_class=100, noise=0.1, seed=0)
  assert ds.x_train.shape == (200, 2) and ds.x_test.shape == (200, 2)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 2
  for labels in (ds.y_train, ds.y_test):
    assert set(np.unique(labels)) == {0, 1}
    assert np.bincount(labels).tolist() == [100, 100]
  # Shuffled, not one class then the other.
  assert 0 < np.abs(np.diff(ds.y_train)).sum() < 199


def test_two_moons_geometry_without_noise():
  x, y = data.make_moons(50, 0.0, np.random.default_rng(0))
  upper, lower = x[y == 0], x[y == 1]
  np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-6)
  assert upper[:, 1].min() >= -1e-6 and lower[:, 1].max() <= 0.5 + 1e-6


def test_two_moons_noise_level():
  clean = data.make_moons(2000, 0.0, np.random.default_rng(3))
  noisy = data.make_moons(2000, 0.1, np.random.default_rng(3))
  # Same permutation stream is not guaranteed; compare spreads instead.
  radius = np.hypot(*noisy[0][noisy[1] == 0].T)
  assert 0.07 < np.std(radius - 1.0) < 0.13
  assert clean[0].shape == noisy[0].shape


def test_two_moons_deterministic_and_test_set_is_held_out():
  a, b = data.two_moons(seed=7), data.two_moons(seed=7)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  np.testing.assert_array_equal(a.y_train, b.y_train)
  c = data.two_moons(seed=8)
  assert not np.array_equal(a.x_train, c.x_train)
  # The test set is other points of the same distribution.
  assert not np.any(np.all(np.isclose(a.x_train[:, None], a.x_test[None]), axis=-1))
  assert abs(a.x_train.mean() - a.x_test.mean()) < 0.1


def test_two_moons_accepts_jax_key_and_test_size():
  a = data.two_moons(20, seed=jax.random.key(3), num_test_per_class=5)
  b = data.two_moons(20, seed=jax.random.key(3), num_test_per_class=5)
  assert a.x_test.shape == (10, 2)
  np.testing.assert_array_equal(a.x_train, b.x_train)


@pytest.mark.parametrize(
    "kwargs", [dict(num_per_class=0), dict(noise=-0.1), dict(num_per_class=2.5)]
)
def test_two_moons_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    data.two_moons(**kwargs)


def test_two_moons_rejects_generator_seed():
  with pytest.raises(TypeError):
    data.two_moons(seed=np.random.default_rng(0))


# ------------------------------------------------------------ validation split


def test_train_val_split_sizes_and_partition():
  x = np.arange(100) * 10
  y = np.arange(100)
  x_tr, y_tr, x_val, y_val = data.train_val_split(x, y, 0.1, seed=0)
  assert (len(x_tr), len(x_val)) == (90, 10)
  np.testing.assert_array_equal(x_tr, y_tr * 10)  # pairs stay together
  np.testing.assert_array_equal(x_val, y_val * 10)
  assert sorted(np.concatenate([y_tr, y_val]).tolist()) == list(range(100))
  assert np.all(np.diff(y_tr) > 0) and np.all(np.diff(y_val) > 0)  # original order kept


def test_train_val_split_deterministic_and_seeded():
  x = np.random.default_rng(0).normal(size=(60, 3))
  y = np.arange(60)
  a = data.train_val_split(x, y, 0.1, seed=1)
  b = data.train_val_split(x, y, 0.1, seed=1)
  c = data.train_val_split(x, y, 0.1, seed=2)
  for left, right in zip(a, b):
    np.testing.assert_array_equal(left, right)
  assert not np.array_equal(a[3], c[3])
  # The held-out part is random, not the last 10%.
  assert a[3].tolist() != list(range(54, 60))


@pytest.mark.parametrize("n, fraction, expected", [
    (60000, 0.1, 6000), (50000, 0.1, 5000), (7, 0.1, 1), (10, 0.5, 5), (3, 0.9, 2),
])
def test_num_validation(n, fraction, expected):
  assert data.num_validation(n, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_fraction(fraction):
  with pytest.raises(ValueError, match="fraction"):
    data.train_val_split(np.zeros(10), np.zeros(10), fraction)


def test_train_val_split_rejects_mismatch():
  with pytest.raises(ValueError, match="examples"):
    data.train_val_split(np.zeros(10), np.zeros(9))


def test_split_validation_on_dataset():
  ds = data.validate_arrays(_arrays(n_train=20), source="mem")
  split = data.split_validation(ds, 0.1, seed=0)
  assert (split.num_train, split.num_val, split.num_test) == (18, 2, 6)
  assert split.x_val.shape == (2, 8, 8, 3) and split.num_classes == ds.num_classes
  joined = np.concatenate([split.x_train, split.x_val])
  assert sorted(map(bytes, joined)) == sorted(map(bytes, ds.x_train))
  with pytest.raises(ValueError, match="already"):
    data.split_validation(split)


# ------------------------------------------------------------ permuted MNIST


def test_task_permutations_fresh_for_every_task():
  perms = data.task_permutations(5, 784, seed=0)
  assert perms.shape == (5, 784)
  for perm in perms:
    np.testing.assert_array_equal(np.sort(perm), np.arange(784))
    assert not np.array_equal(perm, np.arange(784))  # the first task is permuted too
  assert len({p.tobytes() for p in perms}) == 5
  np.testing.assert_array_equal(perms, data.task_permutations(5, 784, seed=0))
  assert not np.array_equal(perms, data.task_permutations(5, 784, seed=1))


def test_permute_pixels_matches_flat_indexing():
  x = np.random.default_rng(0).integers(0, 256, (4, 3, 3, 1), dtype=np.uint8)
  perm = np.random.default_rng(1).permutation(9)
  out = data.permute_pixels(x, perm)
  assert out.shape == x.shape and out.dtype == x.dtype
  for i in range(4):
    np.testing.assert_array_equal(out[i].reshape(-1), x[i].reshape(-1)[perm])
  np.testing.assert_array_equal(data.permute_pixels(out, np.argsort(perm)), x)


@pytest.mark.parametrize("perm", [np.arange(8), np.zeros(9, int), np.arange(9.0)])
def test_permute_pixels_rejects_non_permutations(perm):
  with pytest.raises(ValueError, match="permutation"):
    data.permute_pixels(np.zeros((2, 3, 3)), perm)


def test_permuted_tasks_permute_every_split():
  base = data.validate_arrays(_arrays(shape=(4, 4), num_classes=3), source="m")
  ds = data.split_validation(base, 0.25)
  perms = data.task_permutations(2, 16, seed=3)
  tasks = data.permuted_tasks(ds, perms)
  assert len(tasks) == 2
  for task, perm in zip(tasks, perms):
    for name in ("x_train", "x_val", "x_test"):
      expected = data.permute_pixels(getattr(ds, name), perm)
      np.testing.assert_array_equal(getattr(task, name), expected)
    np.testing.assert_array_equal(task.y_train, ds.y_train)


# ----------------------------------------------------------- preprocessing


def test_images_to_float_range_and_normalisation():
  images = np.array([[[[0, 255, 51]]]], np.uint8)
  x = data.images_to_float(images)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x[0, 0, 0], [0.0, 1.0, 0.2])
  y = data.images_to_float(images, mean=[0.5, 0.5, 0.0], std=[0.5, 0.25, 0.2])
  np.testing.assert_allclose(y[0, 0, 0], [-1.0, 2.0, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(data.images_to_float(x), x)
  with pytest.raises(ValueError, match="std"):
    data.images_to_float(images, std=0.0)
  with pytest.raises(ValueError, match="uint8"):
    data.images_to_float(images.astype(np.int32))


def test_channel_mean_std():
  images = np.zeros((2, 2, 2, 2), np.uint8)
  images[..., 1] = 255
  images[0, ..., 0] = 255
  mean, std = data.channel_mean_std(images)
  np.testing.assert_allclose(mean, [0.5, 1.0])
  np.testing.assert_allclose(std, [0.5, 0.0])


# --------------------------------------------------------------------- seeds


def test_as_generator_seeds():
  draw = lambda seed, *ctx: data.as_generator(seed, *ctx).integers(0, 2**31, 4).tolist()
  assert draw(3) == draw(3) and draw(3) != draw(4)
  assert draw(3, 0) != draw(3, 1) and draw(3, 1) == draw(np.int64(3), 1)
  key = jax.random.key(0)
  assert draw(key, 2) == draw(key, 2)
  assert draw(jax.random.PRNGKey(0)) == draw(jax.random.PRNGKey(0))
  assert draw(jax.random.key(0)) != draw(jax.random.key(1))
  assert draw(np.random.SeedSequence(5), 1) == draw(np.random.SeedSequence(5), 1)
  generator = np.random.default_rng(0)
  assert data.as_generator(generator, 5) is generator


@pytest.mark.parametrize(
    "seed, error", [(-1, ValueError), (True, TypeError), (1.5, TypeError), ("a", TypeError)]
)
def test_as_generator_rejects(seed, error):
  with pytest.raises(error):
    data.as_generator(seed)


def test_dataset_is_frozen():
  ds = data.two_moons(5, seed=0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    ds.num_classes = 3  # type: ignore[misc]


def test_public_names_exported():
  for name in data.__all__:
    assert hasattr(data, name), name
  assert os.path.basename(data.__file__) == "__init__.py"
