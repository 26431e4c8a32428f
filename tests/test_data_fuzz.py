"""Fuzzing the loaders: any bytes give a data set or a DataError naming the file, nothing else."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bayesbinn_jax import data
from bayesbinn_jax.data import DataError

_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _valid_npz() -> bytes:
  rng = np.random.default_rng(0)
  buffer = io.BytesIO()
  np.savez_compressed(
      buffer,
      x_train=rng.integers(0, 256, (30, 6, 6), dtype=np.uint8),
      y_train=np.arange(30) % 3,
      x_test=rng.integers(0, 256, (9, 6, 6), dtype=np.uint8),
      y_test=np.arange(9) % 3,
  )
  return buffer.getvalue()


_NPZ = _valid_npz()


def _load_or_data_error(load, path):
  try:
    return load(path)
  except DataError as error:
    message = str(error)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return None


@_SETTINGS
@given(content=st.binary(max_size=400))
def test_npz_random_bytes(tmp_path, content):
  path = tmp_path / "random.npz"
  path.write_bytes(content)
  assert _load_or_data_error(data.load_npz, path) is None


@_SETTINGS
@given(content=st.binary(max_size=200))
def test_npz_random_bytes_after_zip_signature(tmp_path, content):
  path = tmp_path / "zipish.npz"
  path.write_bytes(b"PK\x03\x04" + content)
  assert _load_or_data_error(data.load_npz, path) is None


@_SETTINGS
@given(length=st.integers(0, len(_NPZ) - 1))
def test_npz_truncated_anywhere(tmp_path, length):
  path = tmp_path / "cut.npz"
  path.write_bytes(_NPZ[:length])
  assert _load_or_data_error(data.load_npz, path) is None


@_SETTINGS
@given(flips=st.lists(
    st.tuples(st.integers(0, len(_NPZ) - 1), st.integers(1, 255)), min_size=1, max_size=8
))
def test_npz_corrupted_bytes(tmp_path, flips):
  content = bytearray(_NPZ)
  for position, mask in flips:
    content[position] ^= mask
  path = tmp_path / "flipped.npz"
  path.write_bytes(bytes(content))
  result = _load_or_data_error(data.load_npz, path)
  if result is not None:  # a flip in unused bytes (e.g. a timestamp) is harmless
    assert result.x_train.shape == (30, 6, 6, 1)


def _idx(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


_IDX = _idx(np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5))


@_SETTINGS
@given(content=st.binary(max_size=300), compress=st.booleans())
def test_idx_random_bytes(tmp_path, content, compress):
  path = tmp_path / "random-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(content) if compress else content)
  result = _load_or_data_error(data.read_idx, path)
  if result is not None:
    assert isinstance(result, np.ndarray)


@_SETTINGS
@given(length=st.integers(0, len(_IDX) - 1), compress=st.booleans())
def test_idx_truncated_anywhere(tmp_path, length, compress):
  path = tmp_path / "cut-idx3-ubyte"
  if compress:
    path.write_bytes(gzip.compress(_IDX)[:length] if length < len(gzip.compress(_IDX)) else b"")
  else:
    path.write_bytes(_IDX[:length])
  assert _load_or_data_error(data.read_idx, path) is None


def test_idx_full_file_reads_back(tmp_path):
  path = tmp_path / "ok-idx3-ubyte"
  path.write_bytes(_IDX)
  np.testing.assert_array_equal(data.read_idx(path), np.arange(50, dtype=np.uint8).reshape(2, 5, 5))


_DTYPES = st.sampled_from(
    [np.uint8, np.int8, np.int32, np.int64, np.float32, np.float64, np.bool_, np.uint16]
)


@settings(max_examples=80, deadline=None)
@given(
    x_train=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=4)),
    y_train=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)),
    x_test=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=4)),
    y_test=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)),
)
def test_validate_arrays_random_arrays(x_train, y_train, x_test, y_test):
  arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  try:
    ds = data.validate_arrays(arrays, source="fuzz.npz")
  except DataError as error:
    assert str(error).startswith("fuzz.npz: ")
    return
  assert ds.x_train.ndim == 4 and ds.x_train.shape[1:] == ds.x_test.shape[1:]
  assert ds.y_train.dtype == np.int32 and ds.num_classes >= 2
  assert 0 <= ds.y_train.min() and max(ds.y_train.max(), ds.y_test.max()) < ds.num_classes


@pytest.mark.parametrize("loader", [data.load_npz, data.load_snelson])
def test_loaders_share_file_checks(tmp_path, loader):
  path = tmp_path / "x.npz"
  path.write_bytes(_NPZ[:100])
  with pytest.raises(DataError, match="x.npz: corrupt or truncated"):
    loader(path)
