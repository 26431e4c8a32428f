"""Fitting data layouts to the networks' input shapes, for every loader, and OOD image files.

Every file is written here (tmp_path). The expected shapes are those the
experiments pass: the CIFAR VGG ``(32, 32, 3)``, the MNIST MLPs ``(None, None,
1)``, the two moons MLP ``(2,)``, the Snelson MLP ``(1,)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayesbinn_jax import data
from bayesbinn_jax.data import DataError
from test_data_idx import write_mnist_dir

VGG, MLP, MOONS, SNELSON = (32, 32, 3), (None, None, 1), (2,), (1,)


def _images(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _save(path, x_train, x_test, x_val=None, num_classes=3):
  arrays = dict(x_train=x_train, y_train=np.arange(len(x_train)) % num_classes,
                x_test=x_test, y_test=np.arange(len(x_test)) % num_classes)
  if x_val is not None:
    arrays.update(x_val=x_val, y_val=np.arange(len(x_val)) % num_classes)
  np.savez(path, **arrays)
  return str(path)


def _load_fit(path, expected):
  return data.fit_input_shape(data.load_npz(path), expected, path)


# ------------------------------------------------------------- fitting as stored


@pytest.mark.parametrize("shape, expected", [
    ((32, 32, 3), VGG), ((28, 28), MLP), ((28, 28, 1), MLP), ((8, 8), MLP), ((10, 12, 1), MLP),
])
def test_a_fitting_layout_is_returned_unchanged(tmp_path, shape, expected):
  path = _save(tmp_path / "set.npz", _images(6, shape), _images(4, shape, seed=1))
  loaded = data.load_npz(path)
  fitted, note = data.fit_input_shape(loaded, expected, path)
  assert fitted is loaded and note is None


def test_two_moons_features_load_from_npz_and_fit(tmp_path):
  x = np.random.default_rng(0).normal(size=(10, 2))
  path = _save(tmp_path / "moons.npz", x, x[:4], num_classes=2)
  fitted, note = _load_fit(path, MOONS)
  assert note is None and fitted.x_train.shape == (10, 2) and fitted.x_train.dtype == np.float32
  np.testing.assert_array_equal(fitted.x_train, x.astype(np.float32))


def test_snelson_inputs_fit_the_regression_network(tmp_path):
  path = tmp_path / "snelson.npz"
  np.savez(path, x_train=np.linspace(0, 1, 5), y_train=np.ones(5), x_test=np.linspace(0, 1, 3))
  loaded = data.load_snelson(path)
  fitted, note = data.fit_input_shape(loaded, SNELSON, path)
  assert fitted is loaded and note is None


# ---------------------------------------------------------- channels-first read


def test_cifar_channels_first_is_transposed_in_every_split_with_a_note(tmp_path):
  channels_last = [_images(n, (32, 32, 3), seed=n) for n in (6, 4, 2)]
  first = [np.ascontiguousarray(x.transpose(0, 3, 1, 2)) for x in channels_last]
  assert first[0].shape == (6, 3, 32, 32)
  path = _save(tmp_path / "cifar.npz", first[0], first[1], x_val=first[2])
  fitted, note = _load_fit(path, VGG)
  assert note == (f"{path}: images are channels-first (3, 32, 32); "
                  "transposed to channels-last (32, 32, 3)")
  for got, want in zip((fitted.x_train, fitted.x_test, fitted.x_val), channels_last):
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.dtype == np.uint8
  # One pixel by hand: image 1, row 2, column 5, channel 1 of the stored (N, C, H, W) array.
  assert fitted.x_train[1, 2, 5, 1] == first[0][1, 1, 2, 5]
  np.testing.assert_array_equal(fitted.y_train, np.arange(6) % 3)


def test_mnist_channels_first_is_transposed(tmp_path):
  x = _images(5, (1, 28, 28))
  path = _save(tmp_path / "mnist.npz", x, x[:2])
  fitted, note = _load_fit(path, MLP)
  assert fitted.input_shape == (28, 28, 1)
  assert note.endswith("channels-first (1, 28, 28); transposed to channels-last (28, 28, 1)")
  np.testing.assert_array_equal(fitted.x_train[..., 0], x[:, 0])


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("stored, expected, found, fix", [
    ((28, 28), VGG, "(28, 28, 1)", "(N, 32, 32, 3) images, channels last"),   # MNIST to the VGG
    ((32, 32, 1), VGG, "(32, 32, 1)", "(N, 32, 32, 3) images, channels last"),  # one channel
    ((3, 28, 28), VGG, "(3, 28, 28)", "(N, 32, 32, 3) images, channels last"),  # wrong size
    ((24, 24, 3), VGG, "(24, 24, 3)", "(N, 32, 32, 3) images, channels last"),
    ((32, 32, 3), MLP, "(32, 32, 3)", "(N, H, W, 1) images, channels last"),  # CIFAR to the MLP
    ((3, 32, 32), MLP, "(3, 32, 32)", "(N, H, W, 1) images, channels last"),
    ((8, 8), MOONS, "(8, 8, 1)", "(N, 2) arrays"),
    ((3,), MOONS, "(3,)", "(N, 2) arrays"),
    ((784,), MLP, "(784,)", "(N, H, W, 1) images, channels last"),
])
def test_a_layout_that_fits_no_reading_is_one_line(tmp_path, stored, expected, found, fix):
  path = _save(tmp_path / "bad.npz", _images(6, stored), _images(4, stored, seed=1))
  with pytest.raises(DataError) as excinfo:
    _load_fit(path, expected)
  wanted = data.describe_shape(expected)
  assert str(excinfo.value) == (
      f"{path}: x_train examples are {found}, but the network takes {wanted}; save x_train as {fix}")


def test_describe_shape():
  assert data.describe_shape(VGG) == "(32, 32, 3)"
  assert data.describe_shape(MLP) == "(H, W, 1)"
  assert data.describe_shape((None, None, None)) == "(H, W, C)"
  assert data.describe_shape(MOONS) == "(2,)"
  assert data.describe_shape((None, 4)) == "(d0, 4)"


def test_idx_directory_fits_the_mlp_and_is_refused_by_the_vgg(tmp_path):
  write_mnist_dir(tmp_path, n_train=4, n_test=2)
  loaded = data.load_idx_dir(tmp_path)
  assert data.fit_input_shape(loaded, MLP, tmp_path) == (loaded, None)
  with pytest.raises(DataError, match=r"^.*: x_train examples are \(28, 28, 1\), but the network "
                     r"takes \(32, 32, 3\)") as excinfo:
    data.fit_input_shape(loaded, VGG, tmp_path)
  assert str(excinfo.value).startswith(f"{tmp_path}: ")


def test_tfds_mnist_is_refused_by_the_vgg():
  import tensorflow_datasets as tfds  # a declared dependency
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=3):
    loaded = data.load_tfds("mnist")
  assert data.fit_input_shape(loaded, MLP, "tfds:mnist") == (loaded, None)
  with pytest.raises(DataError, match=r"^tfds:mnist: x_train examples are \(28, 28, 1\)"):
    data.fit_input_shape(loaded, VGG, "tfds:mnist")


def test_inputs_of_one_dimension_are_refused_by_validation(tmp_path):
  path = _save(tmp_path / "flat.npz", np.zeros(6, np.uint8), np.zeros(4, np.uint8))
  with pytest.raises(DataError, match=r"x_train has shape \(6,\) \(ndim 1\); expected images"):
    data.load_npz(path)


# ------------------------------------------------------------------ OOD files


def test_ood_uses_x_test_and_ignores_labels(tmp_path):
  x, x_test = _images(5, (28, 28)), _images(3, (28, 28), seed=1)
  path = tmp_path / "ood.npz"
  np.savez(path, x=x, x_test=x_test, y_test=np.zeros(7, np.int64))  # labels of the wrong count
  images = data.load_ood_images(path, (28, 28, 1))
  assert images.shape == (3, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(images[..., 0], x_test)


def test_ood_falls_back_to_x(tmp_path):
  x = np.random.default_rng(0).random((4, 32, 32, 3))
  path = tmp_path / "ood.npz"
  np.savez(path, x=x)
  images = data.load_ood_images(path, VGG)
  assert images.dtype == np.float32
  np.testing.assert_array_equal(images, x.astype(np.float32))


def test_ood_channels_first_is_transposed(tmp_path):
  x = _images(4, (32, 32, 3))
  path = tmp_path / "ood.npz"
  np.savez(path, x_test=x.transpose(0, 3, 1, 2))
  np.testing.assert_array_equal(data.load_ood_images(path, VGG), x)


def _ood_file(tmp_path, kind):
  path = tmp_path / f"{kind}.npz"
  arrays = {
      "wrong-shape": dict(x_test=_images(3, (32, 32, 3))),
      "wrong-size": dict(x_test=_images(3, (14, 14))),
      "empty": dict(x_test=np.zeros((0, 28, 28), np.uint8)),
      "nan": dict(x_test=np.full((2, 28, 28), np.nan, np.float32)),
      "inf": dict(x=np.full((2, 28, 28, 1), -np.inf)),
      "no-images": dict(y_test=np.arange(3), images=_images(3, (28, 28))),
      "int64": dict(x_test=np.zeros((2, 28, 28), np.int64)),
      "one-d": dict(x_test=np.zeros(5, np.uint8)),
  }.get(kind)
  if arrays is not None:
    np.savez(path, **arrays)
  elif kind == "not-npz":
    path.write_text("x_test,y_test\n1,2\n")
  elif kind == "truncated":
    np.savez(path, x_test=_images(50, (28, 28)))
    path.write_bytes(path.read_bytes()[:3000])
  elif kind == "pickled":
    np.savez(path, x_test=np.array([{"a": 1}, None], dtype=object))
  return path


@pytest.mark.parametrize("kind, words", [
    ("wrong-shape", ["x_test examples are (32, 32, 3), but the network takes (28, 28, 1)"]),
    ("wrong-size", ["x_test examples are (14, 14, 1)"]),
    ("empty", ["x_test is empty"]),
    ("nan", ["x_test contains NaN or Inf"]),
    ("inf", ["x contains NaN or Inf"]),
    ("no-images", ["holds neither x_test nor x"]),
    ("int64", ["x_test has dtype int64"]),
    ("one-d", ["x_test has shape (5,)"]),
    ("not-npz", ["not an .npz archive"]),
    ("truncated", ["corrupt or truncated"]),
    ("pickled", ["pickled"]),
    ("missing", ["file not found"]),
])
def test_a_bad_ood_file_is_one_line_naming_it(tmp_path, kind, words):
  path = _ood_file(tmp_path, kind)
  with pytest.raises(DataError) as excinfo:
    data.load_ood_images(path, (28, 28, 1))
  message = str(excinfo.value)
  assert message.startswith(f"{path}: ") and "\n" not in message
  for word in words:
    assert word in message, (word, message)


@pytest.mark.parametrize("expected, fix", [
    (MLP, "store grayscale (1-channel) images"),
    (VGG, "store 32x32 RGB (3-channel) images"),
])
def test_an_image_folder_that_does_not_fit_names_the_images_to_store(tmp_path, expected, fix):
  # Before: "x_train examples are ...; save x_train as (N, H, W, 1) images, channels last",
  # advice for an .npz given to someone whose data are image files.
  from PIL import Image
  pixels = _images(1, (12, 10, 3))[0]
  for split in ("train", "test"):
    for name in ("cat", "dog"):
      (tmp_path / split / name).mkdir(parents=True)
      Image.fromarray(pixels).save(tmp_path / split / name / "0.png")
  loaded = data.load_image_folder(tmp_path, cache_dir=str(tmp_path / "cache")).dataset
  with pytest.raises(DataError) as excinfo:
    data.fit_input_shape(loaded, expected, tmp_path)
  wanted = data.describe_shape(expected)
  assert str(excinfo.value) == (f"{tmp_path}: the images are (12, 10, 3) (height, width, channels), "
                                f"but the network takes {wanted}; {fix}")
