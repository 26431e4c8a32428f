"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
  """Writes ``content`` to ``path`` through a temporary file in the same folder and
  ``os.replace``; on any error the temporary file is removed and ``path`` is untouched."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
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
    if os.path.exists(handle.name):
      os.remove(handle.name)
    raise
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
  """Writes ``payload`` as indented JSON with sorted keys to ``path``, atomically."""
  write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
