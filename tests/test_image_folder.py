"""Tests of bayesbinn_jax.data.image_folder: class folders of images, tars of them, the cache.

Every set is a few 8x8 images written here with Pillow. PNG pixels are known
exactly (the expectations are the arrays written); JPEG and converted modes
are expected as Pillow decodes each file on its own.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pathlib
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from bayesbinn_jax import data
from bayesbinn_jax.atomic import OutputWriteError
from bayesbinn_jax.data import image_folder
from bayesbinn_jax.data.image_folder import (
    ImageCacheWarning,
    ImageFolderError,
    is_image_folder_source,
    load_image_folder,
)

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pixels(seed: int, channels: int = 3, size: tuple[int, int] = (8, 8)) -> np.ndarray:
  shape = (size[1], size[0]) + ((channels,) if channels > 1 else ())
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write(path: pathlib.Path, array: np.ndarray, fmt: str = "PNG", mode: str | None = None):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(array)
  if mode is not None:
    image = image.convert(mode)
  image.save(path, format=fmt)


# Written out of order, file names whose sorted order is not their numeric order.
_LAYOUT = {
    "train": {"cat": ["2.png", "10.png"], "ant": ["b.png", "a.png", "c.png"], "bee": ["x.png"]},
    "test": {"bee": ["1.png"], "cat": ["0.png"], "ant": ["9.png", "10.png"]},
}


def _make_folder(root: pathlib.Path, channels: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes _LAYOUT as PNGs; returns the arrays expected, in (class, file) sorted order."""
  pixels = {}
  seed = 0
  for split, classes in _LAYOUT.items():
    for name, files in classes.items():
      for file in files:
        seed += 1
        pixels[(split, name, file)] = _pixels(seed, channels)
        _write(root / split / name / file, pixels[(split, name, file)])
  expected = {}
  for split, classes in _LAYOUT.items():
    keys = sorted((name, file) for name in classes for file in classes[name])
    labels = [sorted(classes).index(name) for name, _ in keys]
    expected[split] = (np.stack([pixels[(split, n, f)] for n, f in keys]), np.asarray(labels))
  return expected


def _tar(folder: pathlib.Path, archive: pathlib.Path, arcname: str = ".", extra=()) -> pathlib.Path:
  with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as out:
    out.add(folder, arcname=arcname)
    for name, content in extra:
      info = tarfile.TarInfo(name)
      info.size = len(content)
      out.addfile(info, io.BytesIO(content))
  return archive


def _load(path, tmp_path: pathlib.Path, **kwargs) -> image_folder.ImageFolderData:
  kwargs.setdefault("cache_dir", tmp_path / "cache")
  return load_image_folder(path, **kwargs)


def test_folder_of_pngs_sorted_classes_and_files(tmp_path):
  expected = _make_folder(tmp_path / "set")
  (tmp_path / "set" / "train" / "cat" / "notes.txt").write_text("not an image")
  (tmp_path / "set" / "train" / ".hidden").mkdir()
  loaded = _load(tmp_path / "set", tmp_path)
  assert loaded.classes == ("ant", "bee", "cat")
  assert loaded.mode == "RGB" and loaded.source == str(tmp_path / "set")
  assert isinstance(loaded.dataset, data.ArrayDataset) and loaded.dataset.num_classes == 3
  for split in ("train", "test"):
    x, y = getattr(loaded.dataset, f"x_{split}"), getattr(loaded.dataset, f"y_{split}")
    assert x.dtype == np.uint8 and x.shape == (len(expected[split][1]), 8, 8, 3)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(x, expected[split][0])
    np.testing.assert_array_equal(y, expected[split][1])
  # Hand-written order: ant/a, ant/b, ant/c, bee/x, cat/10, cat/2.
  np.testing.assert_array_equal(loaded.dataset.y_train, [0, 0, 0, 1, 2, 2])
  # The dataset keeps its class names and origin through the validation split.
  split = data.split_validation(loaded.dataset, 0.5, 0)
  assert isinstance(split, data.ImageFolderDataset) and split.num_val == 3
  assert split.classes == ("ant", "bee", "cat") and split.origin == loaded.describe()
  assert loaded.describe() == {
      "source": str(tmp_path / "set"), "format": "folder", "classes": ["ant", "bee", "cat"],
      "mode": "RGB", "fingerprint": loaded.fingerprint, "cache_file": loaded.cache_file,
      "from_cache": False}


def test_grayscale_set_keeps_one_channel(tmp_path):
  expected = _make_folder(tmp_path / "set", channels=1)
  loaded = _load(tmp_path / "set", tmp_path)
  assert loaded.mode == "L" and loaded.dataset.input_shape == (8, 8, 1)
  np.testing.assert_array_equal(loaded.dataset.x_train[..., 0], expected["train"][0])


def test_mixed_modes_are_converted_to_rgb_as_pillow_does(tmp_path):
  root = tmp_path / "set"
  files = {
      root / "train" / "a" / "gray.png": (_pixels(1, 1), None),
      root / "train" / "a" / "bits.png": (_pixels(2, 1), "1"),
      root / "train" / "b" / "palette.png": (_pixels(3), "P"),
      root / "train" / "b" / "rgba.png": (_pixels(4), "RGBA"),
      root / "test" / "a" / "gray_alpha.png": (_pixels(5, 1), "LA"),
      root / "test" / "b" / "photo.jpg": (_pixels(6), None),
  }
  for path, (array, mode) in files.items():
    _write(path, array, "JPEG" if path.suffix == ".jpg" else "PNG", mode)
  loaded = _load(root, tmp_path)
  assert loaded.mode == "RGB"

  def pillow(path):
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))

  order = {"train": ["a/bits.png", "a/gray.png", "b/palette.png", "b/rgba.png"],
           "test": ["a/gray_alpha.png", "b/photo.jpg"]}
  for split, names in order.items():
    want = np.stack([pillow(root / split / n) for n in names])
    np.testing.assert_array_equal(getattr(loaded.dataset, f"x_{split}"), want)
  assert set(np.unique(loaded.dataset.x_train[0])) <= {0, 255}  # mode "1": black or white


def test_tar_and_tar_gz_read_as_the_folder(tmp_path):
  folder = tmp_path / "set"
  _make_folder(folder)
  want = _load(folder, tmp_path, use_cache=False).dataset
  extra = [("README.md", b"# not an image\n"), ("other/a/b.png", b"ignored")]
  archives = [
      _tar(folder, tmp_path / "set.tar.gz", extra=extra),  # members ./train/...
      _tar(folder, tmp_path / "set.tar"),
      _tar(folder, tmp_path / "wrapped.tgz", arcname="mydata"),  # mydata/train/...
      tmp_path / "reversed.tar",  # members in reverse order: the loader sorts
  ]
  with tarfile.open(archives[-1], "w") as out:
    for path in sorted(folder.rglob("*.png"), reverse=True):
      out.add(path, arcname=str(path.relative_to(folder)))
  for archive in archives:
    assert is_image_folder_source(archive)
    loaded = _load(archive, tmp_path, use_cache=False)
    assert loaded.classes == ("ant", "bee", "cat") and loaded.source == str(archive)
    for key in ("x_train", "y_train", "x_test", "y_test"):
      np.testing.assert_array_equal(getattr(loaded.dataset, key), getattr(want, key))


def test_tar_members_are_never_extracted_and_unsafe_names_ignored(tmp_path):
  folder = tmp_path / "set"
  _make_folder(folder)
  _write(tmp_path / "x.png", _pixels(99))
  png = (tmp_path / "x.png").read_bytes()
  extra = [("../train/ant/evil.png", png), ("/train/ant/abs.png", png),
           ("train/ant/../../escape.png", png)]
  archive = _tar(folder, tmp_path / "set.tar", extra=extra)
  with tarfile.open(archive, "a") as out:  # a link member: not a regular file, skipped
    info = tarfile.TarInfo("train/ant/link.png")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    out.addfile(info)
  loaded = _load(archive, tmp_path, use_cache=False)
  assert loaded.dataset.num_train == 6  # the 6 images of _LAYOUT, none of the extras
  for folder in (tmp_path, tmp_path.parent, pathlib.Path.cwd()):
    assert not any((folder / n).exists() for n in ("escape.png", "evil.png", "train"))


def _one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert "\n" not in message and isinstance(error.value, data.DataError)
  return message


@pytest.mark.parametrize("problem", ["no_test", "no_train", "classes_differ", "empty_class",
                                     "broken", "truncated", "size", "sixteen_bit", "one_class"])
def test_bad_folders_raise_one_line_naming_the_culprit(tmp_path, problem):
  root = tmp_path / "set"
  _make_folder(root)
  culprit = str(root)
  if problem == "no_test":
    for path in sorted((root / "test").rglob("*"), reverse=True):
      path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()
    words = "no test/ folder"
  elif problem == "no_train":
    (root / "train").rename(root / "training")
    words = "no train/ folder"
  elif problem == "classes_differ":
    _write(root / "test" / "dog" / "0.png", _pixels(7))
    words = "only in test/: dog"
  elif problem == "empty_class":
    for path in (root / "test" / "bee").iterdir():
      path.unlink()
    (root / "test" / "bee" / "readme.txt").write_text("no images here")
    culprit, words = str(root / "test" / "bee"), "empty class folder"
  elif problem == "broken":
    (root / "train" / "bee" / "x.png").write_bytes(b"this is not a png")
    culprit, words = str(root / "train" / "bee" / "x.png"), "broken or unreadable image"
  elif problem == "truncated":
    path = root / "test" / "cat" / "0.png"
    path.write_bytes(path.read_bytes()[:60])
    culprit, words = str(path), "image"
  elif problem == "size":
    _write(root / "test" / "cat" / "0.png", _pixels(8, size=(8, 6)))
    culprit, words = str(root / "test" / "cat" / "0.png"), "8x6"
  elif problem == "sixteen_bit":
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "train" / "ant" / "b.png")
    culprit, words = str(root / "train" / "ant" / "b.png"), "mode I"
  else:
    for split in ("train", "test"):
      for name in ("bee", "cat"):
        for path in (root / split / name).iterdir():
          path.unlink()
        (root / split / name).rmdir()
    culprit, words = str(root / "train"), "need at least 2 classes"
  with pytest.raises(ImageFolderError) as error:
    _load(root, tmp_path)
  message = _one_line(error)
  assert message.startswith(culprit + ":") and words in message, message
  assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_size_error_names_both_files_and_the_rule(tmp_path):
  root = tmp_path / "set"
  _make_folder(root)
  _write(root / "train" / "cat" / "2.png", _pixels(9, size=(10, 8)))
  with pytest.raises(ImageFolderError) as error:
    _load(root, tmp_path)
  message = _one_line(error)
  assert message == (f"{root / 'train' / 'cat' / '2.png'}: image is 10x8 (width x height) but "
                     f"{root / 'train' / 'ant' / 'a.png'} is 8x8; all images of a set must share "
                     "one size")


def test_bad_archives_name_the_member_or_the_archive(tmp_path):
  root = tmp_path / "set"
  _make_folder(root)
  (root / "train" / "bee" / "x.png").write_bytes(b"garbage")
  archive = _tar(root, tmp_path / "broken.tar.gz")
  with pytest.raises(ImageFolderError) as error:
    _load(archive, tmp_path)
  assert _one_line(error).startswith(f"{archive} member train/bee/x.png: broken")

  truncated = tmp_path / "truncated.tar.gz"
  truncated.write_bytes(archive.read_bytes()[:200])
  with pytest.raises(ImageFolderError) as error:
    _load(truncated, tmp_path)
  assert _one_line(error).startswith(f"{truncated}: corrupt or truncated tar archive")

  _write(root / "train" / "bee" / "x.png", _pixels(3))
  _write(root / "test" / "dog" / "0.png", _pixels(4))
  differ = _tar(root, tmp_path / "differ.tar")
  with pytest.raises(ImageFolderError) as error:
    _load(differ, tmp_path)
  assert _one_line(error) == (f"{differ}: class folders differ between train/ and test/ "
                              "(only in test/: dog)")

  (root / "test" / "dog" / "0.png").unlink()
  (root / "test" / "dog").rmdir()
  for path in (root / "train" / "bee").iterdir():
    path.unlink()
  empty = _tar(root, tmp_path / "empty.tar")
  with pytest.raises(ImageFolderError) as error:
    _load(empty, tmp_path)
  assert _one_line(error).startswith(f"{empty} member train/bee/: empty class folder")

  only_train = tmp_path / "only_train.tar"
  with tarfile.open(only_train, "w") as out:
    out.add(root / "train", arcname="train")
  with pytest.raises(ImageFolderError) as error:
    _load(only_train, tmp_path)
  assert _one_line(error).startswith(f"{only_train}: no test/<class>/<image files>")


def _count_opens(monkeypatch) -> list[int]:
  calls = [0]
  real = Image.open

  def counting(*args, **kwargs):
    calls[0] += 1
    return real(*args, **kwargs)

  monkeypatch.setattr(Image, "open", counting)
  return calls


def _forbid_decoding(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("decoded although the arrays are cached")
  monkeypatch.setattr(Image, "open", fail)


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_second_load_reads_the_cache_and_decodes_nothing(tmp_path, monkeypatch, kind):
  root = tmp_path / "set"
  _make_folder(root)
  source = root if kind == "folder" else _tar(root, tmp_path / "set.tar.gz")
  calls = _count_opens(monkeypatch)
  first = _load(source, tmp_path)
  assert not first.from_cache and calls[0] == 10  # each of the 10 images opened once
  assert os.path.dirname(first.cache_file) == str(tmp_path / "cache")
  assert os.listdir(tmp_path / "cache") == [os.path.basename(first.cache_file)]  # no temp file

  _forbid_decoding(monkeypatch)
  second = _load(source, tmp_path)
  assert second.from_cache and second.cache_file == first.cache_file
  assert second.classes == first.classes and second.mode == first.mode
  assert second.fingerprint == first.fingerprint == data.image_folder_fingerprint(source)
  for key in ("x_train", "y_train", "x_test", "y_test"):
    a, b = getattr(first.dataset, key), getattr(second.dataset, key)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_a_changed_source_is_decoded_again(tmp_path, monkeypatch):
  root = tmp_path / "set"
  _make_folder(root)
  first = _load(root, tmp_path)
  path = root / "train" / "cat" / "2.png"
  new = _pixels(123)
  _write(path, new)
  os.utime(path, ns=(1, 1))  # another mtime, whatever the clock's resolution
  calls = _count_opens(monkeypatch)
  second = _load(root, tmp_path)
  assert not second.from_cache and calls[0] == 10 and second.fingerprint != first.fingerprint
  np.testing.assert_array_equal(second.dataset.x_train[-1], new)  # cat/2.png sorts last
  assert len(os.listdir(tmp_path / "cache")) == 2


def test_cache_folder_from_the_environment_and_off(tmp_path, monkeypatch):
  root = tmp_path / "set"
  _make_folder(root)
  monkeypatch.setenv(image_folder.CACHE_DIR_ENV, str(tmp_path / "env-cache"))
  assert data.default_cache_dir() == str(tmp_path / "env-cache")
  loaded = load_image_folder(root)
  assert loaded.cache_file.startswith(str(tmp_path / "env-cache") + os.sep)
  off = load_image_folder(root, use_cache=False, cache_dir=tmp_path / "unused")
  assert off.cache_file is None and not off.from_cache and not (tmp_path / "unused").exists()
  monkeypatch.delenv(image_folder.CACHE_DIR_ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert data.default_cache_dir() == str(tmp_path / "xdg" / "bayesbinn_jax")


def test_a_damaged_cache_file_is_decoded_again_and_replaced(tmp_path, monkeypatch):
  root = tmp_path / "set"
  _make_folder(root)
  first = _load(root, tmp_path)
  pathlib.Path(first.cache_file).write_bytes(b"PK\x03\x04 truncated")
  calls = _count_opens(monkeypatch)
  second = _load(root, tmp_path)
  assert not second.from_cache and calls[0] == 10
  np.testing.assert_array_equal(second.dataset.x_train, first.dataset.x_train)
  _forbid_decoding(monkeypatch)
  assert _load(root, tmp_path).from_cache


def test_a_cache_that_cannot_be_written_warns_and_loads(tmp_path, monkeypatch):
  root = tmp_path / "set"
  _make_folder(root)
  blocker = tmp_path / "a-file"
  blocker.write_text("a file, not a folder")
  with pytest.warns(ImageCacheWarning, match="cannot cache"):
    loaded = load_image_folder(root, cache_dir=blocker / "cache")
  assert loaded.dataset.num_train == 6 and not loaded.from_cache

  def full_disk(path, content):
    del content
    raise OutputWriteError(path, OSError(28, "No space left on device"))

  monkeypatch.setattr(image_folder, "write_atomic", full_disk)
  with pytest.warns(ImageCacheWarning, match="No space left on device"):
    _load(root, tmp_path)
  assert not list((tmp_path / "cache").iterdir())


def test_is_image_folder_source(tmp_path):
  (tmp_path / "layout" / "train").mkdir(parents=True)
  (tmp_path / "idx").mkdir()
  (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"")
  (tmp_path / "a.npz").write_bytes(b"")
  (tmp_path / "a.tar.gz").write_bytes(b"")
  assert is_image_folder_source(tmp_path / "layout")
  assert is_image_folder_source(tmp_path / "a.tar.gz")
  assert not is_image_folder_source(tmp_path / "idx")
  assert not is_image_folder_source(tmp_path / "a.npz")
  assert not is_image_folder_source(tmp_path / "missing")
  with pytest.raises(ImageFolderError, match="no such folder or archive"):
    _load(tmp_path / "missing", tmp_path)


def test_cifar10_jpeg_to_npz_script_writes_the_loaders_arrays(tmp_path):
  root = tmp_path / "set"
  for split, count in (("train", 3), ("test", 2)):
    for label, name in enumerate(("truck", "airplane")):
      for index in range(count):
        _write(root / split / name / f"{index:04d}.jpg", _pixels(10 * label + index), "JPEG")
  archive = _tar(root, tmp_path / "cifar.tar.gz")
  spec = importlib.util.spec_from_file_location(
      "cifar10_jpeg_to_npz", _ROOT / "benchmarks" / "cifar10_jpeg_to_npz.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    module.main(str(archive), str(tmp_path / "out.npz"))
  with np.load(tmp_path / "out.npz") as saved:
    assert sorted(saved.files) == ["x_test", "x_train", "y_test", "y_train"]
    assert saved["y_train"].dtype == np.uint8
    np.testing.assert_array_equal(saved["y_train"], [0, 0, 0, 1, 1, 1])  # airplane < truck
    with Image.open(root / "train" / "truck" / "0001.jpg") as image:
      np.testing.assert_array_equal(saved["x_train"][4], np.asarray(image.convert("RGB")))


# ----------------------------------------------------------------------------- the CLI
def _digits(root: pathlib.Path, per_class: tuple[int, int] = (4, 2)) -> pathlib.Path:
  """28x28 grayscale PNGs in three class folders whose brightness differs."""
  rng = np.random.default_rng(0)
  for split, count in zip(("train", "test"), per_class):
    for level, name in enumerate(("zero", "one", "two")):
      for index in range(count):
        pixels = rng.normal(40 + 80 * level, 10, (28, 28)).clip(0, 255).astype(np.uint8)
        _write(root / split / name / f"{index}.png", pixels)
  return root


@pytest.mark.slow
def test_cli_trains_on_an_image_folder_and_records_its_classes(tmp_path, monkeypatch, capsys):
  from bayesbinn_jax.experiments.cli import main  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(image_folder.CACHE_DIR_ENV, str(tmp_path / "cache"))
  folder = _digits(tmp_path / "digits")
  out = tmp_path / "out"
  assert main(["mnist", "--data-dir", str(folder), "--out", str(out), "--epochs", "1", "--quiet",
               "--no-figures", "--set", "batch_size=4", "--set", "eval_batch_size=8"]) == 0
  config = json.loads((out / "config.json").read_text())
  described = config["data"]
  assert described["classes"] == ["one", "two", "zero"]  # sorted folder names: labels 0, 1, 2
  assert described["num_classes"] == 3 and described["input_shape"] == [28, 28, 1]
  assert described["num_train"] + described["num_val"] == 12 and described["num_test"] == 6
  origin = described["image_folder"]
  assert origin["source"] == str(folder) and origin["format"] == "folder" and origin["mode"] == "L"
  assert not origin["from_cache"] and os.path.dirname(origin["cache_file"]) == str(tmp_path / "cache")
  assert config["data_dir"] == str(folder)
  assert os.path.isfile(origin["cache_file"])
  assert 0.0 <= json.loads((out / "summary.json").read_text())["test_accuracy"] <= 1.0
  capsys.readouterr()


@pytest.mark.parametrize("problem", ["empty_class", "tar_classes_differ", "not_a_tar"])
def test_cli_refuses_a_bad_image_folder_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys,
                                                                  problem):
  from bayesbinn_jax.experiments.cli import main  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(image_folder.CACHE_DIR_ENV, str(tmp_path / "cache"))
  folder = _digits(tmp_path / "digits")
  if problem == "empty_class":
    for path in (folder / "test" / "two").iterdir():
      path.unlink()
    source, words = folder, f"{folder / 'test' / 'two'}: empty class folder"
  elif problem == "tar_classes_differ":
    _write(folder / "train" / "three" / "0.png", _pixels(1, 1, (28, 28)))
    source = _tar(folder, tmp_path / "digits.tar.gz")
    words = f"{source}: class folders differ between train/ and test/ (only in train/: three)"
  else:
    source = tmp_path / "notes.txt"
    source.write_text("not data")
    words = f"--data-dir {source}: not a directory, nor a .tar/.tar.gz archive"
  out = tmp_path / "out"
  try:
    code = main(["mnist", "--data-dir", str(source), "--out", str(out), "--epochs", "1", "--quiet"])
  except SystemExit as exit_info:  # argument errors
    code = exit_info.code
  assert code == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert words in line, line
  assert not out.exists()
