"""Issue 26, items 5 and 6: values that do not suit the normalisation, and test labels
the training split lacks. Each case is named by its file, the range (or labels) found
and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from bayesbinn_jax import data
from bayesbinn_jax.data import DataError, check_unseen_labels, check_value_range, validate_arrays

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
PIXELS[0, 0, 0] = 255  # every channel reaches 255
LABELS = np.arange(40) % 10


def _dataset(x_train, x_test=None, x_val=None, y_test=None, **kwargs):
  arrays = dict(x_train=x_train, y_train=LABELS, x_test=x_train if x_test is None else x_test,
                y_test=LABELS if y_test is None else y_test)
  if x_val is not None:
    arrays.update(x_val=x_val, y_val=LABELS[:len(x_val)])
  return validate_arrays(arrays, source="d.npz", **kwargs)


# ----------------------------------------------------------------------------- item 6: unseen labels
def test_a_test_split_shifted_by_one_is_refused_naming_the_file_and_the_label():
  with pytest.raises(data.UnseenLabelsError) as error:
    _dataset(PIXELS, y_test=LABELS + 1)
  assert error.value.unseen == {"y_test": (10,)} and isinstance(error.value, DataError)
  message = str(error.value)
  assert message.startswith("d.npz: y_test has label 10 that y_train lacks (y_train has 0-9)")
  assert "\n" not in message


def test_unseen_labels_pass_when_allowed_and_the_note_names_them():
  dataset = _dataset(PIXELS, y_test=LABELS + 1, allow_unseen_labels=True)
  assert dataset.num_classes == 11  # max label + 1, as before
  note = check_unseen_labels(dataset, "d.npz", allow=True)
  assert note == ("d.npz: y_test has label 10 that y_train lacks (y_train has 0-9): "
                  "no network trained on y_train predicts them")
  with pytest.raises(DataError, match="y_test has label 10"):
    check_unseen_labels(dataset, "d.npz")


def test_a_gap_in_the_training_labels_and_the_validation_split_are_named():
  y_train = np.where(LABELS == 3, 4, LABELS)  # no 3 in training
  arrays = dict(x_train=PIXELS, y_train=y_train, x_test=PIXELS, y_test=LABELS,
                x_val=PIXELS[:10], y_val=np.arange(10))
  with pytest.raises(DataError) as error:
    validate_arrays(arrays, source="gap.npz")
  assert str(error.value).startswith(
      "gap.npz: y_test has label 3 and y_val has label 3 that y_train lacks (y_train has 0-2, 4-9)")


def test_many_unseen_labels_are_listed_as_ranges_then_cut():
  y_test = np.concatenate([np.arange(20, 60, 2), np.arange(100, 110)])
  dataset = validate_arrays(dict(x_train=PIXELS, y_train=LABELS, x_test=PIXELS[:30], y_test=y_test),
                            source="d.npz", allow_unseen_labels=True)
  note = check_unseen_labels(dataset, "d.npz", allow=True)
  assert "labels 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, ... (30 labels)" in note
  assert data.unseen_labels(LABELS, y_test=y_test, y_val=None)["y_test"].tolist() == y_test.tolist()


def test_every_label_seen_gives_no_note():
  assert check_unseen_labels(_dataset(PIXELS), "d.npz", allow=True) is None
  assert data.unseen_labels(LABELS, y_test=LABELS[:3]) == {}


def test_the_loaders_refuse_unseen_labels_unless_allowed(tmp_path):
  path = tmp_path / "shifted.npz"
  np.savez(path, x_train=PIXELS[..., 0], y_train=LABELS, x_test=PIXELS[..., 0], y_test=LABELS + 1)
  with pytest.raises(DataError, match=r"shifted\.npz: y_test has label 10 that y_train lacks"):
    data.load_npz(path)
  assert data.load_npz(path, allow_unseen_labels=True).num_classes == 11

  folder = tmp_path / "idx"
  folder.mkdir()
  arrays = dict(x_train=PIXELS[..., 0], y_train=LABELS.astype(np.uint8), x_test=PIXELS[..., 0],
                y_test=(LABELS + 1).astype(np.uint8))
  for key, name in data.MNIST_IDX_FILES.items():  # IDX: magic, big-endian sizes, then the bytes
    array = arrays[key]
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (folder / name).write_bytes(header + array.tobytes())
  with pytest.raises(DataError, match="y_test has label 10 that y_train lacks"):
    data.load_idx_dir(folder)
  assert data.load_idx_dir(folder, allow_unseen_labels=True).num_classes == 11


# ----------------------------------------------------------------------------- item 5: value ranges
def _error(dataset, normalisation):
  with pytest.raises(DataError) as error:
    check_value_range(dataset, normalisation, "d.npz")
  message = str(error.value)
  assert message.startswith("d.npz: ") and "\n" not in message
  return message


def test_pixels_0_to_255_need_no_note():
  for normalisation in ("mnist", "per-channel"):
    assert check_value_range(_dataset(PIXELS), normalisation, "d.npz") == []


def test_uint8_zero_one_images_are_an_error_under_mnist():
  message = _error(_dataset(PIXELS // 128), "mnist")
  assert "x_train is uint8 with values in [0, 1]" in message and "0..255" in message


def test_uint8_zero_one_images_train_under_per_channel_unless_splits_differ():
  assert check_value_range(_dataset(PIXELS // 128), "per-channel", "d.npz") == []
  message = _error(_dataset(PIXELS, x_test=PIXELS // 128), "per-channel")
  assert "x_test is uint8 with values in [0, 1] but x_train in [0, 255]" in message


def test_uint8_images_with_few_levels_get_a_note_under_mnist():
  notes = check_value_range(_dataset(PIXELS // 16), "mnist", "d.npz")  # 0..15
  assert notes == ["d.npz: x_train, x_test are uint8 with values in [0, 15], but normalisation 'mnist' "
                   "expects uint8 pixels 0..255 (divided by 255, then normalised) with MNIST's fixed "
                   "mean and std: the inputs span 6% of their usual range"]
  assert check_value_range(_dataset(PIXELS // 16), "per-channel", "d.npz") == []  # its own statistics
  # only the split at fault is named
  notes = check_value_range(_dataset(PIXELS, x_test=PIXELS // 2), "mnist", "d.npz")
  assert len(notes) == 1 and notes[0].startswith("d.npz: x_test is uint8 with values in [0, 127]")


def test_a_constant_channel_is_an_error_under_per_channel_only():
  images = PIXELS.copy()
  images[..., 1] = 7
  message = _error(_dataset(images), "per-channel")
  assert "x_train channel 1 is constant (every value 7)" in message
  assert check_value_range(_dataset(images), "mnist", "d.npz") == []


def test_float_images_in_unit_range_get_a_note():
  scaled = PIXELS.astype(np.float32) / 255
  for normalisation in ("mnist", "per-channel"):
    notes = check_value_range(_dataset(scaled, x_val=scaled[:10]), normalisation, "d.npz")
    assert notes == [f"d.npz: x_train, x_val, x_test are float32 with values in [0, 1] (images already "
                     f"scaled to [0, 1]?): float images are used as given, without normalisation "
                     f"'{normalisation}', which applies to uint8 pixels 0..255; store uint8 pixels to "
                     "have them normalised"]


def test_unscaled_float_pixels_get_a_note():
  (note,) = check_value_range(_dataset(PIXELS.astype(np.float32)), "mnist", "d.npz")
  assert note == ("d.npz: x_train, x_test are float32 with values in [0, 255] (0..255 pixels stored as "
                  "floats?): float images are used as given, without normalisation 'mnist', which applies "
                  "to uint8 pixels 0..255; store uint8 pixels to have them normalised")
  # each kind of split named in its own note
  notes = check_value_range(_dataset(PIXELS / 255, x_test=PIXELS * 1.0), "per-channel", "d.npz")
  assert [n[:60] for n in notes] == ["d.npz: x_train is float32 with values in [0, 1] (images alre",
                                     "d.npz: x_test is float32 with values in [0, 255] (0..255 pix"]


def test_normalised_float_images_and_features_pass_without_a_note():
  normalised = (PIXELS / 255 - 0.5) / 0.25
  assert check_value_range(_dataset(normalised), "mnist", "d.npz") == []
  features = data.two_moons(20, 0.1, 0)
  assert check_value_range(features, "mnist", "moons") == []
  wide = validate_arrays(dict(x_train=np.full((4, 2), 300.0), y_train=[0, 1, 0, 1],
                              x_test=np.full((2, 2), 300.0), y_test=[0, 1]), source="f.npz")
  assert check_value_range(wide, "mnist", "f.npz") == []  # features (N, D) are used as given


def test_standardise_refuses_constant_inputs_or_targets():
  regression = data.validate_regression_arrays(
      dict(x_train=np.full(5, 3.0), y_train=np.arange(5.0), x_test=np.arange(3.0)), source="s.npz")
  message = _error(regression, "standardise")
  assert "x_train is constant (every value 3)" in message
  regression = data.validate_regression_arrays(
      dict(x_train=np.arange(5.0), y_train=np.zeros(5), x_test=np.arange(3.0)), source="s.npz")
  assert "y_train is constant (every value 0)" in _error(regression, "standardise")
  regression = data.validate_regression_arrays(
      dict(x_train=np.arange(5.0) * 1e3, y_train=np.arange(5.0), x_test=np.arange(3.0)), source="s.npz")
  assert check_value_range(regression, "standardise", "s.npz") == []


def test_an_unknown_normalisation_is_a_value_error():
  with pytest.raises(ValueError, match="normalisation must be one of mnist, per-channel, standardise"):
    check_value_range(_dataset(PIXELS), "imagenet", "d.npz")
