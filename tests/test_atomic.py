"""Atomic writes: the old file or the new one, never half of one, and no debris."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from bayesbinn_jax import atomic
from bayesbinn_jax.atomic import OutputWriteError, write_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


# bayesbinn_jax.atomic imports only the standard library; the package's __init__ imports JAX,
# optax and flax (~3 s of CPU a process). The fresh Python gets the package as an empty module
# whose path is the package folder, so ``from bayesbinn_jax.atomic import ...`` loads atomic.py
# alone (the same file, under the same name).
_BARE_PACKAGE = f"""\
import sys, types
_package = types.ModuleType("bayesbinn_jax")
_package.__path__ = [{os.path.join(REPO, "bayesbinn_jax")!r}]
sys.modules["bayesbinn_jax"] = _package
"""


def _run(code: str, umask: int = 0o022) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh Python with ``umask``, leaving this process's umask alone."""
  code = _BARE_PACKAGE + textwrap.dedent(code) + "\nassert 'jax' not in sys.modules\n"
  return subprocess.run(
      [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
      preexec_fn=lambda: os.umask(umask), timeout=120, check=False)


def test_writes_text_and_bytes_with_the_mode_open_gives(tmp_path):
  write_atomic(tmp_path / "a.json", "{}\n")
  write_atomic(tmp_path / "b.bin", b"\x00\x01")
  with open(tmp_path / "plain", "w"):
    pass
  assert (tmp_path / "a.json").read_text() == "{}\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == _mode(tmp_path / "plain")


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_the_mode_follows_the_umask_of_the_writing_process(tmp_path, umask, mode):
  # A temporary file is created 0600; without the chmod the file would keep that mode.
  result = _run(f"""
      from bayesbinn_jax.atomic import write_atomic
      write_atomic({str(tmp_path / 'out.txt')!r}, 'x')
      open({str(tmp_path / 'plain.txt')!r}, 'w').close()
      """, umask)
  assert result.returncode == 0, result.stderr
  assert _mode(tmp_path / "out.txt") == mode == _mode(tmp_path / "plain.txt")


@pytest.mark.parametrize("call", ["fsync", "chmod", "replace"])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, call):
  path = tmp_path / "summary.json"
  write_atomic(path, "old")
  real = getattr(os, call)
  seen = []

  def fail(*args, **kwargs):
    seen.append(sorted(os.listdir(tmp_path)))  # the temporary file exists when the call fails
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(atomic.os, call, fail)
  with pytest.raises(OutputWriteError) as excinfo:
    write_atomic(path, "new" * 1000)
  monkeypatch.setattr(atomic.os, call, real)
  assert len(seen[0]) == 2 and seen[0][1].endswith(".tmp")
  assert excinfo.value.path == str(path) and excinfo.value.errno == errno.ENOSPC
  assert str(excinfo.value) == f"cannot write {path}: No space left on device"
  assert isinstance(excinfo.value, OSError)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["summary.json"]


def test_a_file_size_limit_stops_the_real_write_and_leaves_the_old_file(tmp_path):
  # RLIMIT_FSIZE makes the kernel refuse the write itself (EFBIG), as a full disk would.
  path = tmp_path / "metrics.json"
  path.write_text("old")
  result = _run(f"""
      import resource, signal
      from bayesbinn_jax.atomic import OutputWriteError, write_atomic
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
      try:
        write_atomic({str(path)!r}, 'x' * 100_000)
      except OutputWriteError as error:
        print(error.errno, error.path)
        print(error)
      """)
  assert result.returncode == 0, result.stderr
  code, line = result.stdout.splitlines()
  assert code == f"{errno.EFBIG} {path}"
  assert line == f"cannot write {path}: {os.strerror(errno.EFBIG)}"
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_missing_folder_names_the_file(tmp_path):
  path = tmp_path / "gone" / "summary.json"
  with pytest.raises(OutputWriteError, match=f"cannot write {path}: No such file or directory"):
    write_atomic(path, "x")
  assert os.listdir(tmp_path) == []
