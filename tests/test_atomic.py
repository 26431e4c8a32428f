"""Atomic writes: the old file or the new one, never half of one, and no debris."""

from __future__ import annotations

import os
import stat

import pytest

from bayesbinn_jax import atomic
from bayesbinn_jax.atomic import write_atomic


def test_writes_text_and_bytes_with_normal_permissions(tmp_path):
  write_atomic(tmp_path / "a.json", "{}\n")
  write_atomic(tmp_path / "b.bin", b"\x00\x01")
  assert (tmp_path / "a.json").read_text() == "{}\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
  assert mode & 0o044 or os.umask(0o022) & 0o044  # readable by others unless the umask forbids it


def test_a_failure_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "summary.json"
  write_atomic(path, "old")

  def fail(*args):
    raise OSError("disk full")

  monkeypatch.setattr(atomic.os, "replace", fail)
  with pytest.raises(OSError, match="disk full"):
    write_atomic(path, "new")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["summary.json"]
