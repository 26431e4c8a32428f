"""Tests for minibatching and CIFAR augmentation."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bayesbinn_jax import data


def _xy(n=23):
  x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  return x, np.arange(n)


# ------------------------------------------------------------------ batching


@pytest.mark.parametrize("n, batch_size", [(23, 5), (20, 5), (3, 10), (1, 1)])
def test_every_example_once_per_epoch(n, batch_size):
  x, y = _xy(n)
  batches = list(data.iterate_batches(x, y, batch_size, seed=0))
  assert len(batches) == data.num_batches(n, batch_size) == -(-n // batch_size)
  seen = np.concatenate([yb for _, yb in batches])
  assert sorted(seen.tolist()) == list(range(n))
  for xb, yb in batches:
    np.testing.assert_array_equal(xb, x[yb])  # inputs and targets stay paired
    assert len(yb) <= batch_size
  assert all(len(yb) == batch_size for _, yb in batches[:-1])


def test_drop_last():
  x, y = _xy(23)
  batches = list(data.iterate_batches(x, y, 5, seed=0, drop_last=True))
  assert len(batches) == data.num_batches(23, 5, drop_last=True) == 4
  assert all(len(yb) == 5 for _, yb in batches)
  seen = np.concatenate([yb for _, yb in batches])
  assert len(np.unique(seen)) == 20
  order = data.epoch_order(23, 0, 0)
  np.testing.assert_array_equal(seen, order[:20])


def test_no_shuffle_keeps_order_and_needs_no_seed():
  x, y = _xy(7)
  batches = list(data.iterate_batches(x, y, 3, shuffle=False))
  assert [yb.tolist() for _, yb in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_shuffle_reproducible_per_seed_and_epoch():
  x, y = _xy(50)
  run = lambda **kw: np.concatenate([yb for _, yb in data.iterate_batches(x, y, 8, **kw)])
  np.testing.assert_array_equal(run(seed=3, epoch=2), run(seed=3, epoch=2))
  assert not np.array_equal(run(seed=3, epoch=2), run(seed=3, epoch=3))
  assert not np.array_equal(run(seed=3, epoch=0), run(seed=4, epoch=0))
  assert not np.array_equal(run(seed=3), np.arange(50))
  np.testing.assert_array_equal(run(seed=jax.random.key(1)), run(seed=jax.random.key(1)))
  np.testing.assert_array_equal(run(seed=5, epoch=1), data.epoch_order(50, 5, 1))


def test_resume_mid_epoch_gives_the_same_batches():
  x, y = _xy(30)
  augment = lambda xb, rng: xb + rng.normal(size=xb.shape).astype(np.float32)
  full = list(data.iterate_batches(x, y, 4, seed=9, epoch=6, augment=augment))
  resumed = list(data.iterate_batches(x, y, 4, seed=9, epoch=6, augment=augment, start_batch=3))
  assert len(resumed) == len(full) - 3
  for (xa, ya), (xb, yb) in zip(full[3:], resumed):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_generator_seed_advances():
  x, y = _xy(40)
  generator = np.random.default_rng(0)
  first = np.concatenate([yb for _, yb in data.iterate_batches(x, y, 8, seed=generator)])
  second = np.concatenate([yb for _, yb in data.iterate_batches(x, y, 8, seed=generator)])
  assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(40))
  assert not np.array_equal(first, second)


def test_augment_is_applied_to_inputs_only():
  x, y = _xy(10)
  calls = []

  def augment(xb, rng):
    calls.append(rng)
    return -xb

  batches = list(data.iterate_batches(x, y, 4, seed=0, augment=augment))
  assert len(calls) == 3 and all(isinstance(r, np.random.Generator) for r in calls)
  for xb, yb in batches:
    np.testing.assert_array_equal(xb, -x[yb])


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0, seed=0), "batch_size"),
    (dict(batch_size=2.5, seed=0), "batch_size"),
    (dict(batch_size=2), "seed is required"),
    (dict(batch_size=2, seed=0, epoch=-1), "epoch"),
])
def test_iterate_batches_rejects(kwargs, match):
  x, y = _xy(5)
  with pytest.raises(ValueError, match=match):
    list(data.iterate_batches(x, y, **kwargs))


def test_iterate_batches_rejects_length_mismatch():
  with pytest.raises(ValueError, match="examples"):
    list(data.iterate_batches(np.zeros((5, 2)), np.zeros(4), 2, seed=0))


# ---------------------------------------------------------------- augmentation


def _images(n=16, size=32, channels=3, seed=0):
  # Strictly positive pixels so that zero padding is recognisable.
  return np.random.default_rng(seed).integers(1, 256, (n, size, size, channels), dtype=np.uint8)


def test_pad_crop_flip_against_explicit_slicing():
  images = _images(6, size=8, channels=2)
  offsets = np.array([[0, 0], [8, 8], [4, 4], [1, 7], [3, 0], [8, 2]])
  flips = np.array([False, False, True, True, False, True])
  out = data.pad_crop_flip(images, offsets, flips, padding=4)
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i, ((r, c), flip) in enumerate(zip(offsets, flips)):
    window = padded[i, r:r + 8, c:c + 8]
    np.testing.assert_array_equal(out[i], window[:, ::-1] if flip else window)
  np.testing.assert_array_equal(out[2], images[2, :, ::-1])  # centred crop, flipped


def _find_window(image, padded):
  """All (row, col, flipped) such that image is that window of padded."""
  height, width = image.shape[:2]
  hits = []
  for r in range(padded.shape[0] - height + 1):
    for c in range(padded.shape[1] - width + 1):
      window = padded[r:r + height, c:c + width]
      if np.array_equal(image, window):
        hits.append((r, c, False))
      if np.array_equal(image, window[:, ::-1]):
        hits.append((r, c, True))
  return hits


def test_augment_cifar_crops_are_shifted_windows_of_padded_images():
  images = _images(16)
  out = data.augment_cifar(images, np.random.default_rng(0))
  assert out.shape == images.shape and out.dtype == images.dtype
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  positions = []
  for i in range(len(images)):
    hits = _find_window(out[i], padded[i])
    assert len(hits) == 1, hits
    positions.append(hits[0])
  rows, cols, flips = zip(*positions)
  assert all(0 <= r <= 8 for r in rows) and all(0 <= c <= 8 for c in cols)
  assert len(set(flips)) == 2  # both flipped and unflipped crops occur
  # Zero pixels (the images have none) are exactly the padding inside the window.
  inside = np.pad(np.ones((32, 32), bool), 4)
  for i, (r, c, flip) in enumerate(positions):
    mask = inside[r:r + 32, c:c + 32]
    mask = mask[:, ::-1] if flip else mask
    np.testing.assert_array_equal(np.all(out[i] > 0, axis=-1), mask)


def test_augment_cifar_distribution_of_offsets_and_flips():
  images = _images(400, size=4, channels=1)
  rng = np.random.default_rng(1)
  offsets = rng.integers(0, 9, size=(400, 2))
  flips = rng.random(400) < 0.5
  np.testing.assert_array_equal(
      data.augment_cifar(images, np.random.default_rng(1)),
      data.pad_crop_flip(images, offsets, flips, 4),
  )
  assert set(np.unique(offsets)) == set(range(9))
  assert 150 < flips.sum() < 250


def test_augment_cifar_deterministic_given_rng():
  images = _images(32)
  a = data.augment_cifar(images, np.random.default_rng(5))
  b = data.augment_cifar(images, np.random.default_rng(5))
  c = data.augment_cifar(images, np.random.default_rng(6))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(data.augment_cifar(images, 5), data.augment_cifar(images, 5))
  # A Generator is advanced: two calls differ.
  generator = np.random.default_rng(5)
  first = data.augment_cifar(images, generator)
  assert not np.array_equal(first, data.augment_cifar(images, generator))


def test_augment_cifar_float_images_and_zero_padding():
  images = _images(4).astype(np.float32) / 255
  out = data.augment_cifar(images, np.random.default_rng(0), padding=0)
  # Without padding the only change is a possible flip.
  for i in range(4):
    assert np.array_equal(out[i], images[i]) or np.array_equal(out[i], images[i, :, ::-1])
  assert out.dtype == np.float32


def test_augment_cifar_inside_iterate_batches():
  images, labels = _images(10), np.arange(10)
  batches = list(data.iterate_batches(images, labels, 4, seed=0, augment=data.augment_cifar))
  assert [xb.shape for xb, _ in batches] == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]


def test_pad_crop_flip_rejects_bad_inputs():
  images = _images(2, size=4)
  with pytest.raises(ValueError, match="offsets"):
    data.pad_crop_flip(images, np.array([[0, 9], [0, 0]]), np.zeros(2, bool), 4)
  with pytest.raises(ValueError, match="offsets"):
    data.pad_crop_flip(images, np.zeros((3, 2), int), np.zeros(2, bool), 4)
  with pytest.raises(ValueError, match="N, H, W, C"):
    data.pad_crop_flip(images[..., 0], np.zeros((2, 2), int), np.zeros(2, bool), 4)
