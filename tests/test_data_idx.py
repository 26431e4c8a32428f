"""Tests for the IDX (official MNIST format) reader, on files written here."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from bayesbinn_jax import data
from bayesbinn_jax.data import DataError

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
  """An IDX file written from the format description: magic, big-endian dims, data."""
  array = np.asarray(array)
  header = struct.pack(">BBBB", 0, 0, _CODES[array.dtype], array.ndim)
  header += struct.pack(">" + "I" * array.ndim, *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist_dir(directory, n_train=10, n_test=5, size=(28, 28), compress=True, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {
      "x_train": rng.integers(0, 256, (n_train,) + size, dtype=np.uint8),
      "y_train": (np.arange(n_train) % 10).astype(np.uint8),
      "x_test": rng.integers(0, 256, (n_test,) + size, dtype=np.uint8),
      "y_test": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
  }
  for key, name in data.MNIST_IDX_FILES.items():
    content = idx_bytes(arrays[key])
    if compress:
      (directory / (name + ".gz")).write_bytes(gzip.compress(content))
    else:
      (directory / name).write_bytes(content)
  return arrays


def _path(directory, key, compress=True):
  return directory / (data.MNIST_IDX_FILES[key] + (".gz" if compress else ""))


def test_idx_header_layout_matches_mnist():
  content = idx_bytes(np.zeros((60000, 28, 28), np.uint8))[:16]
  assert content.hex() == "00000803" "0000ea60" "0000001c" "0000001c"
  assert idx_bytes(np.zeros(10000, np.uint8))[:8].hex() == "00000801" "00002710"


@pytest.mark.parametrize("dtype", sorted(_CODES, key=str))
def test_parse_idx_round_trip_every_type(dtype):
  array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
  if dtype == np.uint8:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  parsed = data.parse_idx(idx_bytes(array))
  assert parsed.dtype == dtype and parsed.dtype.isnative
  np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize("compress", [True, False])
def test_load_idx_dir_round_trip(tmp_path, compress):
  arrays = write_mnist_dir(tmp_path, compress=compress)
  ds = data.load_idx_dir(tmp_path)
  assert ds.x_train.shape == (10, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
  np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
  np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert ds.num_classes == 10


def test_load_idx_dir_mixed_compression_prefers_gz(tmp_path):
  arrays = write_mnist_dir(tmp_path, compress=True)
  # A stale uncompressed copy of different data is ignored in favour of .gz.
  _path(tmp_path, "y_test", compress=False).write_bytes(idx_bytes(np.zeros(5, np.uint8)))
  (_path(tmp_path, "x_test")).unlink()
  _path(tmp_path, "x_test", compress=False).write_bytes(idx_bytes(arrays["x_test"]))
  ds = data.load_idx_dir(tmp_path)
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"])


def test_load_idx_dir_gz_name_holding_plain_idx(tmp_path):
  arrays = write_mnist_dir(tmp_path)
  _path(tmp_path, "y_train").write_bytes(idx_bytes(arrays["y_train"]))  # not compressed
  np.testing.assert_array_equal(data.load_idx_dir(tmp_path).y_train, arrays["y_train"])


def test_load_idx_dir_custom_names_and_num_classes(tmp_path):
  rng = np.random.default_rng(0)
  names = {"x_train": "a", "y_train": "b", "x_test": "c", "y_test": "d"}
  (tmp_path / "a").write_bytes(idx_bytes(rng.integers(0, 256, (4, 6, 6), dtype=np.uint8)))
  (tmp_path / "b").write_bytes(idx_bytes(np.array([0, 1, 2, 0], np.uint8)))
  (tmp_path / "c").write_bytes(idx_bytes(rng.integers(0, 256, (2, 6, 6), dtype=np.uint8)))
  (tmp_path / "d").write_bytes(idx_bytes(np.array([1, 0], np.uint8)))
  ds = data.load_idx_dir(tmp_path, filenames=names, num_classes=5)
  assert ds.input_shape == (6, 6, 1) and ds.num_classes == 5


def test_load_idx_dir_not_a_directory(tmp_path):
  with pytest.raises(DataError, match="not a directory"):
    data.load_idx_dir(tmp_path / "mnist")


def test_load_idx_dir_missing_files(tmp_path):
  write_mnist_dir(tmp_path)
  _path(tmp_path, "x_test").unlink()
  _path(tmp_path, "y_test").unlink()
  with pytest.raises(DataError) as excinfo:
    data.load_idx_dir(tmp_path)
  message = str(excinfo.value)
  assert str(tmp_path) in message and "missing" in message
  assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
  assert "train-images" not in message


def _corrupt(tmp_path, key, content, compress=True):
  write_mnist_dir(tmp_path)
  path = _path(tmp_path, key)
  path.write_bytes(gzip.compress(content) if compress else content)
  with pytest.raises(DataError) as excinfo:
    data.load_idx_dir(tmp_path)
  message = str(excinfo.value)
  assert "\n" not in message
  return message, path


@pytest.mark.parametrize("content, words", [
    (b"\x00\x01\x08\x03" + bytes(12), ["bad IDX magic", "0x00010803"]),
    (b"\x1f\x8b\x08\x08" + bytes(12), ["bad IDX magic"]),
    (b"\x00\x00\x07\x03" + bytes(12), ["unknown IDX type code 0x07"]),
    (b"\x00\x00\x08\x00", ["0 dimensions"]),
    (b"\x00\x00", ["truncated IDX header", "2 bytes"]),
    (b"\x00\x00\x08\x03\x00\x00\x00\x0a", ["truncated IDX header", "need 16"]),
], ids=["magic", "gzip-in-gzip", "type-code", "zero-dims", "short-magic", "short-dims"])
def test_bad_headers_name_the_file(tmp_path, content, words):
  message, path = _corrupt(tmp_path, "x_train", content)
  assert str(path) in message
  for word in words:
    assert word in message, message


def test_truncated_data_names_the_file(tmp_path):
  full = idx_bytes(np.zeros((10, 28, 28), np.uint8))
  message, path = _corrupt(tmp_path, "x_train", full[:-100])
  assert str(path) in message and "truncated IDX data" in message and "7840" in message


def test_trailing_bytes_name_the_file(tmp_path):
  message, path = _corrupt(tmp_path, "y_test", idx_bytes(np.zeros(5, np.uint8)) + b"xx")
  assert str(path) in message and "2 unexpected bytes" in message


def test_truncated_gzip_names_the_file(tmp_path):
  write_mnist_dir(tmp_path)
  path = _path(tmp_path, "x_test")
  path.write_bytes(path.read_bytes()[:-30])
  with pytest.raises(DataError) as excinfo:
    data.load_idx_dir(tmp_path)
  assert str(path) in str(excinfo.value) and "gzip" in str(excinfo.value)


def test_wrong_dimensions_name_the_file(tmp_path):
  message, path = _corrupt(tmp_path, "y_train", idx_bytes(np.zeros((10, 2), np.uint8)))
  assert str(path) in message and "expected labels" in message
  message, path = _corrupt(tmp_path, "x_test", idx_bytes(np.zeros((5, 784), np.uint8)))
  assert str(path) in message and "expected images" in message


def test_count_mismatch_names_both_files(tmp_path):
  message, _ = _corrupt(tmp_path, "y_train", idx_bytes(np.zeros(9, np.uint8)))
  assert str(tmp_path) in message
  assert "train-labels-idx1-ubyte.gz has 9 labels" in message
  assert "train-images-idx3-ubyte.gz has 10 images" in message


def test_non_uint8_images_rejected(tmp_path):
  message, _ = _corrupt(tmp_path, "x_train", idx_bytes(np.zeros((10, 28, 28), np.int16)))
  assert str(tmp_path) in message and "x_train" in message and "uint8" in message


def test_float_labels_rejected(tmp_path):
  message, _ = _corrupt(tmp_path, "y_test", idx_bytes(np.zeros(5, np.float32)))
  assert "y_test" in message and "integers" in message


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(DataError, match="file not found"):
    data.read_idx(tmp_path / "nothing-idx1-ubyte")
