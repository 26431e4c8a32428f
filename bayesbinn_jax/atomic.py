"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A write that fails (a full disk, a folder turned read-only) raises
:class:`OutputWriteError` naming the file that was being written, and leaves
no temporary file and the previous content of that file behind.
"""

from __future__ import annotations

import errno as errno_codes
import json
import os
import tempfile
from typing import Any


class OutputWriteError(OSError):
  """An output file that could not be written: ``ENOSPC``, ``EROFS``, ``EACCES``, ...

  Attributes:
    path: the file (or checkpoint folder) that was being written.
    errno: the error number of the failure (``errno.ENOSPC`` for a full disk).
    strerror: its text, e.g. ``"No space left on device"``.

  ``str(error)`` is the one line ``"cannot write <path>: <strerror>"``.
  """

  def __init__(self, path: str | os.PathLike, error: OSError):
    code = error.errno if error.errno is not None else errno_codes.EIO
    text = error.strerror or str(error) or os.strerror(code)
    super().__init__(code, text, os.fspath(path))
    self.path = os.fspath(path)

  def __str__(self) -> str:
    return f"cannot write {self.path}: {self.strerror}"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_replace(path: str, directory: str, content: str | bytes) -> None:
  mode = "wb" if isinstance(content, bytes) else "w"
  handle = tempfile.NamedTemporaryFile(mode, dir=directory, delete=False, suffix=".tmp")
  try:
    with handle:
      handle.write(content)
      handle.flush()
      os.fsync(handle.fileno())
    os.chmod(handle.name, 0o666 & ~_umask())  # as open() would create it, not 0600
    os.replace(handle.name, path)
  except BaseException:
    try:
      os.remove(handle.name)
    except OSError:  # already renamed, or the folder refuses even that
      pass
    raise


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
  """Writes ``content`` to ``path`` through a temporary file in the same folder and
  ``os.replace``.

  Raises:
    OutputWriteError: when the write fails (``OSError``, e.g. ``ENOSPC``,
      ``EROFS``, ``EACCES``); the temporary file is removed and ``path``
      keeps its previous content (or stays absent).
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    _write_replace(path, directory, content)
  except OSError as error:
    raise OutputWriteError(path, error) from error
  try:  # make the rename itself durable where the platform allows it
    folder = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(folder)
  except OSError:
    pass
  finally:
    os.close(folder)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
  """Writes ``payload`` as indented JSON with sorted keys to ``path``, atomically.

  Raises:
    OutputWriteError: as :func:`write_atomic`.
  """
  write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
