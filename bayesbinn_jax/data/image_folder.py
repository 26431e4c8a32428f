"""Image classification sets kept as class folders of image files, or a tar of them.

The layout, as users keep their own photos::

    ROOT/train/<class>/<file>.png|.jpg ...
    ROOT/test/<class>/<file>.png|.jpg ...

``ROOT`` is a folder, or a ``.tar`` / ``.tar.gz`` (``.tgz``, ``.tar.bz2``,
``.tar.xz``) archive of that layout, read directly: the archive is streamed
with :mod:`tarfile` into memory and nothing is extracted to disk, so member
names such as ``../x`` or links cannot write anywhere. Members outside
``train/<class>/`` and ``test/<class>/`` (a README, ``pax`` headers) are
ignored; an archive whose layout sits under one top-level folder
(``data/train/...``) is read from that folder.

Rules:

- classes are the sorted names of the class folders (hidden ones, starting
  with ``.``, ignored); label ``i`` is ``classes[i]``. train and test must
  hold the same class folders, each with at least one image, and at least 2;
- the images of a class folder are its files with an image extension
  (:data:`IMAGE_EXTENSIONS`, any case; other files and sub-folders are
  ignored), taken in sorted file-name order, classes in label order;
- every image of the set (train and test) has the same width and height
  (resize them beforehand: no resizing happens here);
- pixels are decoded with Pillow into ``uint8``. When every image is
  grayscale (Pillow modes ``1``, ``L``, ``LA``) the set is kept grayscale
  ``(N, H, W, 1)``; otherwise every image is converted to ``RGB``
  ``(N, H, W, 3)`` (palette images expanded, alpha dropped, grayscale
  replicated, as ``Image.convert("RGB")``). 16-bit, 32-bit and float images
  are refused.

The arrays then pass the checks of every other loader
(:func:`~bayesbinn_jax.data.validate_arrays`), as from an ``.npz``.

Decoded arrays are cached as an uncompressed ``.npz`` in a cache folder
(argument ``cache_dir``, else ``$BAYESBINN_JAX_CACHE_DIR``, else
``$XDG_CACHE_HOME/bayesbinn_jax`` or ``~/.cache/bayesbinn_jax``), named by
the source's fingerprint: the sha256 of an archive's bytes, or of a folder's
sorted ``(path, size, mtime)`` list of image files; the loader's format and
Pillow's version are part of it. A second load of an unchanged source reads
that file and decodes nothing. The cache file is written atomically; a cache
that cannot be written (read-only folder, full disk) only warns, and an
unreadable one is decoded again and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import tarfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bayesbinn_jax.atomic import OutputWriteError, write_atomic
from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.validation import validate_arrays

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
CACHE_DIR_ENV = "BAYESBINN_JAX_CACHE_DIR"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

_FORMAT = "bayesbinn_jax.image_folder/1"
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_COLOR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})


class ImageFolderError(DataError):
  """An image folder or archive that cannot be used: ``"<file or folder>: <problem>"``."""


class ImageCacheWarning(UserWarning):
  """The decoded arrays could not be cached; the next load decodes again."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolderDataset(ArrayDataset):
  """An :class:`ArrayDataset` that keeps its class names and where it came from.

  ``dataclasses.replace`` (validation split, subsets) keeps both.

  Attributes:
    classes: the class folder names; label ``i`` is ``classes[i]``.
    origin: :meth:`ImageFolderData.describe` of the load (source, format,
      classes, mode, fingerprint, cache file), e.g. for a run's config.json.
  """

  classes: tuple[str, ...] = ()
  origin: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolderData:
  """A loaded image folder.

  Attributes:
    dataset: the checked arrays, ``uint8`` images ``(N, H, W, C)``,
      ``int32`` labels, as an :class:`ImageFolderDataset`.
    classes: the class folder names, label ``i`` is ``classes[i]``.
    source: the folder or archive, as an absolute path.
    mode: ``"L"`` (grayscale, ``C = 1``) or ``"RGB"`` (``C = 3``).
    fingerprint: the sha256 (hex) naming the source's content.
    cache_file: the cache file, or None when caching is off.
    from_cache: True when the arrays were read from ``cache_file``, not decoded.
  """

  dataset: ArrayDataset
  classes: tuple[str, ...]
  source: str
  mode: str
  fingerprint: str
  cache_file: str | None
  from_cache: bool

  def describe(self) -> dict[str, Any]:
    """The facts of this load as plain JSON values."""
    return {"source": self.source, "format": "tar" if is_tar_source(self.source) else "folder",
            "classes": list(self.classes), "mode": self.mode, "fingerprint": self.fingerprint,
            "cache_file": self.cache_file, "from_cache": self.from_cache}


# A file to decode: its name in errors, its label, and how to get its bytes.
_Entry = tuple[str, int, Callable[[], bytes]]


def is_tar_source(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a file named like a tar archive (``.tar``, ``.tar.gz``, ...)."""
  name = os.fspath(path)
  return os.path.isfile(name) and name.lower().endswith(TAR_SUFFIXES)


def is_image_folder_source(path: str | os.PathLike) -> bool:
  """Whether ``path`` looks meant for :func:`load_image_folder`.

  True for a tar archive (by name) and for a folder holding a ``train/`` or a
  ``test/`` sub-folder (the load then reports whatever else is missing);
  False for anything else, e.g. a folder of MNIST IDX files or a tfds
  data_dir.
  """
  name = os.fspath(path)
  if is_tar_source(name):
    return True
  return os.path.isdir(name) and any(os.path.isdir(os.path.join(name, s)) for s in SPLITS)


def default_cache_dir() -> str:
  """``$BAYESBINN_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesbinn_jax``, else
  ``~/.cache/bayesbinn_jax``."""
  folder = os.environ.get(CACHE_DIR_ENV)
  if folder:
    return folder
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bayesbinn_jax")


def _visible(name: str) -> bool:
  return not name.startswith(".")


def _is_image_name(name: str) -> bool:
  return _visible(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _check_classes(
    root: str, found: Mapping[str, Mapping[str, list[str]]], where: Callable[[str, str], str]
) -> tuple[str, ...]:
  """Checks the class folders of both splits; returns the sorted classes."""
  for split in SPLITS:
    if not found[split]:
      raise ImageFolderError(where(split, ""), "no class folders (expected <class>/<image files>)")
  train, test = set(found["train"]), set(found["test"])
  if train != test:
    only = [f"only in {s}/: {', '.join(sorted(a - b))}"
            for s, a, b in (("train", train, test), ("test", test, train)) if a - b]
    raise ImageFolderError(root, "class folders differ between train/ and test/ (" +
                           "; ".join(only) + ")")
  classes = tuple(sorted(train))
  if len(classes) < 2:
    raise ImageFolderError(where("train", ""),
                           f"only 1 class folder ({classes[0]}); need at least 2 classes")
  for split in SPLITS:
    for name in classes:
      if not found[split][name]:
        raise ImageFolderError(
            where(split, name),
            f"empty class folder: no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return classes


def _list_folder(root: str) -> tuple[dict[str, list[_Entry]], tuple[str, ...], list[str]]:
  """Lists a folder: the files of each split in order, the classes, the fingerprint lines."""
  for split in SPLITS:
    if not os.path.isdir(os.path.join(root, split)):
      raise ImageFolderError(root, f"no {split}/ folder (expected {split}/<class>/<image files> "
                             "beside " + ("test/" if split == "train" else "train/") + ")")
  found: dict[str, dict[str, list[str]]] = {}
  for split in SPLITS:
    folder = os.path.join(root, split)
    try:
      with os.scandir(folder) as entries:
        class_dirs = [e.name for e in entries if _visible(e.name) and e.is_dir()]
      found[split] = {}
      for name in class_dirs:
        with os.scandir(os.path.join(folder, name)) as entries:
          found[split][name] = sorted(
              e.name for e in entries if _is_image_name(e.name) and e.is_file())
    except OSError as error:
      raise ImageFolderError(error.filename or folder,
                             f"cannot list folder ({error.strerror or error})") from error

  def where(split: str, name: str) -> str:
    return os.path.join(root, split, name) if name else os.path.join(root, split)

  classes = _check_classes(root, found, where)
  files: dict[str, list[_Entry]] = {}
  lines = []
  for split in SPLITS:
    files[split] = []
    for label, name in enumerate(classes):
      for file in found[split][name]:
        path = os.path.join(root, split, name, file)
        try:
          stat = os.stat(path)
        except OSError as error:
          raise ImageFolderError(path, f"cannot read file ({error.strerror or error})") from error
        lines.append(f"{split}/{name}/{file}\t{stat.st_size}\t{stat.st_mtime_ns}")
        files[split].append((path, label, _file_reader(path)))
  return files, classes, lines


def _file_reader(path: str) -> Callable[[], bytes]:
  def read() -> bytes:
    try:
      with open(path, "rb") as handle:
        return handle.read()
    except OSError as error:
      raise ImageFolderError(path, f"cannot read file ({error.strerror or error})") from error
  return read


def _member_parts(name: str) -> list[str] | None:
  """The normalized path parts of a tar member, or None for an unsafe name."""
  name = posixpath.normpath(name.replace("\\", "/"))
  parts = name.split("/")
  if name.startswith("/") or ".." in parts or name == ".":
    return None
  return parts


def _read_tar(archive: str) -> tuple[dict[str, list[_Entry]], tuple[str, ...]]:
  """Reads the image members of a tar archive (streamed, nothing extracted)."""
  images: dict[tuple[str, ...], bytes] = {}
  folders: set[tuple[str, ...]] = set()
  try:
    with tarfile.open(archive, "r|*") as stream:
      for member in stream:
        parts = _member_parts(member.name)
        if parts is None or len(parts) > 4 or not all(_visible(p) for p in parts):
          continue
        if member.isdir():
          folders.add(tuple(parts))
        elif member.isfile() and len(parts) >= 3 and _is_image_name(parts[-1]):
          handle = stream.extractfile(member)
          images[tuple(parts)] = handle.read() if handle is not None else b""
  except Exception as error:  # tarfile.ReadError, EOFError, OSError, zlib.error, lzma.LZMAError
    raise ImageFolderError(archive, "corrupt or truncated tar archive "
                           f"({type(error).__name__}: {error})") from error

  paths = folders | set(images)
  prefix: tuple[str, ...] = ()
  if not any(p[0] in SPLITS for p in paths):  # the layout under one top folder?
    tops = sorted({p[0] for p in paths if len(p) >= 2 and p[1] in SPLITS})
    if len(tops) > 1:
      raise ImageFolderError(archive, "no train/ and test/ at the top of the archive, and "
                             f"more than one top folder holds them ({', '.join(tops)})")
    prefix = tuple(tops)
  depth = len(prefix)
  for split in SPLITS:
    if not any(p[:depth] == prefix and len(p) > depth and p[depth] == split for p in paths):
      other = "test/" if split == "train" else "train/"
      raise ImageFolderError(archive, f"no {'/'.join(prefix + (split,))}/<class>/<image files> "
                             f"in the archive (beside {other})")
  found: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
  for path in sorted(paths):  # so each class lists its files sorted
    if path[:depth] != prefix or len(path) < depth + 2 or path[depth] not in SPLITS:
      continue
    split, name = path[depth], path[depth + 1]
    if path in images and len(path) == depth + 3:
      found[split].setdefault(name, []).append(path[-1])
    elif len(path) == depth + 2 and path in folders:
      found[split].setdefault(name, [])
    elif len(path) > depth + 2:  # a class folder known from a deeper member alone
      found[split].setdefault(name, [])

  def where(split: str, name: str) -> str:
    inner = "/".join(prefix + (split,) + ((name,) if name else ()))
    return f"{archive} member {inner}/"

  classes = _check_classes(archive, found, where)
  files: dict[str, list[_Entry]] = {}
  for split in SPLITS:
    files[split] = []
    for label, name in enumerate(classes):
      for file in found[split][name]:  # sorted: paths were walked in order
        data = images[prefix + (split, name, file)]
        shown = f"{archive} member {'/'.join(prefix + (split, name, file))}"
        files[split].append((shown, label, lambda data=data: data))  # type: ignore[misc]
  return files, classes


def _open_image(name: str, data: bytes):  # -> PIL.Image.Image
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    return Image.open(io.BytesIO(data))
  except Exception as error:  # UnidentifiedImageError, DecompressionBombError, OSError, ...
    raise ImageFolderError(name, f"broken or unreadable image ({type(error).__name__}: "
                           f"{(str(error).splitlines() or [''])[0]})") from error


def _decode(files: Mapping[str, list[_Entry]]) -> tuple[dict[str, np.ndarray], str]:
  """Decodes every file once, into RGB rows; a set of only grayscale images keeps one channel.

  A grayscale image (modes ``1``, ``L``, ``LA``) is decoded as ``L`` and
  replicated over the 3 channels, which is what ``convert("RGB")`` gives.
  """
  first: tuple[str, tuple[int, int]] | None = None
  gray = True
  rgb: dict[str, np.ndarray] = {}
  for split in SPLITS:
    for index, (name, _, read) in enumerate(files[split]):
      with _open_image(name, read()) as image:
        mode, size = image.mode, image.size
        if mode not in _GRAY_MODES and mode not in _COLOR_MODES:
          raise ImageFolderError(name, f"image mode {mode} (16-bit, 32-bit or float pixels) is "
                                 "not supported; save the images with 8-bit channels")
        if first is None:
          first = (name, size)
          for s in SPLITS:
            rgb[s] = np.empty((len(files[s]), size[1], size[0], 3), np.uint8)
        elif size != first[1]:
          raise ImageFolderError(
              name, f"image is {size[0]}x{size[1]} (width x height) but {first[0]} is "
              f"{first[1][0]}x{first[1][1]}; all images of a set must share one size")
        try:
          if mode in _GRAY_MODES:
            rgb[split][index] = np.asarray(image.convert("L"), np.uint8)[..., np.newaxis]
          else:
            gray = False
            rgb[split][index] = np.asarray(image.convert("RGB"), np.uint8)
        except Exception as error:  # truncated or corrupt pixel data
          raise ImageFolderError(name, f"broken image ({type(error).__name__}: "
                                 f"{(str(error).splitlines() or [''])[0]})") from error
  arrays: dict[str, np.ndarray] = {}
  for split in SPLITS:
    arrays[f"x_{split}"] = np.ascontiguousarray(rgb.pop(split)[..., 0]) if gray else rgb[split]
    arrays[f"y_{split}"] = np.asarray([label for _, label, _ in files[split]], np.int32)
  return arrays, "L" if gray else "RGB"


def _hash_file(path: str) -> str:
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as handle:
      for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
  except OSError as error:
    raise ImageFolderError(path, f"cannot read file ({error.strerror or error})") from error
  return digest.hexdigest()


def _pillow_version() -> str:
  import PIL  # pylint: disable=import-outside-toplevel
  return PIL.__version__


def _fingerprint(kind: str, content: str) -> str:
  key = f"{_FORMAT}\nPillow {_pillow_version()}\n{kind}\n{content}\n"
  return hashlib.sha256(key.encode("utf-8")).hexdigest()


def image_folder_fingerprint(path: str | os.PathLike) -> str:
  """The sha256 (hex) that names ``path``'s decoded arrays in the cache.

  An archive's bytes, or a folder's sorted ``(path, size, mtime)`` list of
  image files, with this loader's format version and Pillow's version.

  Raises:
    ImageFolderError: as :func:`load_image_folder`, for a folder that lacks
      ``train/``/``test/`` or whose class folders are wrong.
  """
  source = os.path.abspath(os.fspath(path))
  if is_tar_source(source):
    return _fingerprint("tar", _hash_file(source))
  _, _, lines = _list_folder(source)
  return _fingerprint("folder", "\n".join(lines))


def _read_cache(cache_file: str) -> tuple[dict[str, np.ndarray], tuple[str, ...], str] | None:
  if not os.path.isfile(cache_file):
    return None
  try:
    with np.load(cache_file, allow_pickle=False) as archive:
      arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
      classes = tuple(str(c) for c in archive["classes"])
      mode = str(archive["mode"])
      layout = str(archive["format"])
  except Exception:  # a damaged or foreign file: decode again and replace it
    return None
  if layout != _FORMAT or mode not in ("L", "RGB"):
    return None
  return arrays, classes, mode


def _write_cache(cache_file: str, arrays: Mapping[str, np.ndarray], classes: tuple[str, ...],
                 mode: str, source: str) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **dict[str, Any](arrays), classes=np.asarray(classes, dtype=str), mode=np.asarray(mode),
           format=np.asarray(_FORMAT), source=np.asarray(source))
  try:
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    write_atomic(cache_file, buffer.getbuffer().tobytes())
  except (OSError, OutputWriteError) as error:
    warnings.warn(f"{cache_file}: cannot cache the decoded images ({error}); the next load "
                  "decodes them again", ImageCacheWarning, stacklevel=3)


def load_image_folder(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ImageFolderData:
  """Loads ``ROOT/{train,test}/<class>/<images>`` (a folder or a tar of it).

  See the module's docstring for the layout, the rules and the cache.

  Args:
    path: the folder or archive.
    cache_dir: the cache folder; None uses :func:`default_cache_dir`.
    use_cache: False neither reads nor writes a cache file.

  Returns:
    :class:`ImageFolderData`: the checked :class:`ArrayDataset`, the classes
    and where the arrays came from.

  Raises:
    ImageFolderError: one line naming the folder, archive member or file,
      for a missing ``train/`` or ``test/``, class folders that differ
      between them, an empty class folder, a broken image, an unsupported
      mode or a size that differs from the first image's.
    DataError: when the decoded arrays break :func:`validate_arrays`' rules.
  """
  source = os.path.abspath(os.fspath(path))
  if not os.path.exists(source):
    raise ImageFolderError(source, "no such folder or archive")
  tar = is_tar_source(source)
  if not tar and not os.path.isdir(source):
    raise ImageFolderError(source, "neither a folder nor a tar archive (.tar, .tar.gz, .tgz, ...)")

  files: dict[str, list[_Entry]] | None = None
  if tar:
    fingerprint = _fingerprint("tar", _hash_file(source))
  else:
    files, classes, lines = _list_folder(source)
    fingerprint = _fingerprint("folder", "\n".join(lines))
  cache_file = None
  if use_cache:
    folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = os.path.join(os.path.abspath(folder), f"image-folder-{fingerprint}.npz")
    cached = _read_cache(cache_file)
    if cached is not None:
      arrays, classes, mode = cached
      dataset = validate_arrays(arrays, source=source, num_classes=len(classes))
      return _result(dataset, classes, source, mode, fingerprint, cache_file, True)

  if tar:
    files, classes = _read_tar(source)
  assert files is not None
  arrays, mode = _decode(files)
  dataset = validate_arrays(arrays, source=source, num_classes=len(classes))
  if cache_file is not None:
    _write_cache(cache_file, {k: getattr(dataset, k) for k in ("x_train", "y_train", "x_test",
                                                                "y_test")},
                 classes, mode, source)
  return _result(dataset, classes, source, mode, fingerprint, cache_file, False)


def _result(dataset: ArrayDataset, classes: tuple[str, ...], source: str, mode: str,
            fingerprint: str, cache_file: str | None, from_cache: bool) -> ImageFolderData:
  loaded = ImageFolderData(dataset, classes, source, mode, fingerprint, cache_file, from_cache)
  fields = {f.name: getattr(dataset, f.name) for f in dataclasses.fields(ArrayDataset)}
  named = ImageFolderDataset(**fields, classes=classes, origin=loaded.describe())
  return dataclasses.replace(loaded, dataset=named)
