"""A run's output folder: whose it is, who writes it now, and what data it was trained on.

- :func:`check_path`: a folder path Orbax can write checkpoints under (Orbax finds
  the pieces of a checkpoint with ``glob``, so ``[``, ``]``, ``*``, ``?`` and ``\\``
  in the path are refused before anything is written).
- :func:`check_ours`: a folder that exists and holds files is a run of ours (it
  holds ``config.json``, or only the files a run writes first), else it is refused:
  a run never deletes nor overwrites what it did not write.
- :class:`RunLock`: one run at a time in a folder. ``run.lock`` holds the process's
  id, host and boot, and an exclusive ``flock`` on it is held while the run lives;
  the kernel drops it when the process ends however it ends, so the lock of a killed
  run is stale and is taken over (with a note naming it).
- :func:`check_data` / :func:`write_data_fingerprint`: ``data_fingerprint.json``,
  the shapes and SHA-256 of the arrays a run trains on, compared on resume.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, Mapping

from bayesbinn_jax.atomic import write_json_atomic
from bayesbinn_jax.data.fingerprint import Fingerprint, first_difference

LOCK = "run.lock"
FINGERPRINT = "data_fingerprint.json"
FIRST_FILES = (LOCK, FINGERPRINT)
"""What a run writes in its folder before ``config.json``: a folder holding only these
(a run killed at its start) is a run of ours."""
GLOB_CHARACTERS = "[]*?\\"
"""Characters Orbax mishandles in a checkpoint path: it finds the per-process pieces of a
checkpoint with ``glob`` (``[`` ... ``]`` is a character class, so nothing is found and the
merge of the pieces is skipped: the checkpoint cannot be read back; ``*`` and ``?`` can match
other folders), and TensorStore reads ``\\`` as a path separator."""
URI_COMPONENTS = ("gs:",)
"""Folder names Orbax mishandles anywhere in a checkpoint path: ``/x/gs:/run`` is written as the
Cloud Storage address ``gs://run`` (TensorStore then refuses the path)."""


class RunFolderError(ValueError):
  """An output folder that a run cannot use; ``folder`` names it."""

  def __init__(self, message: str, folder: str):
    super().__init__(message)
    self.folder = folder


class UnsupportedPathError(RunFolderError):
  """A folder path holding characters (or a folder name) Orbax mishandles: ``characters``."""

  def __init__(self, folder: str, characters: str):
    super().__init__(
        f"{folder}: checkpoints cannot be written under a path holding {characters} (Orbax reads it as a "
        "glob pattern, a separator or a URI); choose an output folder without it. Nothing was written.",
        folder)
    self.characters = characters


class ForeignFolderError(RunFolderError):
  """A folder that holds files no run of ours wrote (``entries``, a few of them)."""

  def __init__(self, folder: str, entries: list[str]):
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    super().__init__(
        f"{folder} is not empty and holds no run of bayesbinn_jax (no config.json; it holds {shown}): "
        "nothing in it is written, deleted or overwritten; choose a new or empty output folder.", folder)
    self.entries = entries


class FolderInUseError(RunFolderError):
  """A folder another live run holds the lock of: ``pid``, ``host`` of that run."""

  def __init__(self, folder: str, pid: Any, host: Any, since: Any):
    started = f", since {since}" if since else ""
    super().__init__(
        f"{folder} is in use by another run: process {pid} on {host}{started} holds "
        f"{os.path.join(folder, LOCK)}; wait for it to end, or choose another output folder.", folder)
    self.pid = pid
    self.host = host


class DataMismatchError(RunFolderError):
  """Data other than those the run in ``folder`` was started with."""


# ----------------------------------------------------------------------------- paths and ownership
def check_path(folder: str) -> None:
  """Raises :class:`UnsupportedPathError` when the absolute path of ``folder`` holds a
  character of :data:`GLOB_CHARACTERS` or a folder named as in :data:`URI_COMPONENTS`."""
  path = os.path.abspath(folder)
  found = [repr(c) for c in GLOB_CHARACTERS if c in path]
  found += [f"a folder named {name!r}" for name in URI_COMPONENTS if name in path.split(os.sep)]
  if found:
    raise UnsupportedPathError(folder, ", ".join(found))


def check_ours(folder: str) -> None:
  """Raises :class:`ForeignFolderError` when ``folder`` exists, holds files, and is not a run
  of ours: no ``config.json``, and something else than :data:`FIRST_FILES`."""
  try:
    entries = sorted(os.listdir(folder))
  except (FileNotFoundError, NotADirectoryError):
    return
  if "config.json" in entries:
    return
  foreign = [name for name in entries if name not in FIRST_FILES]
  if foreign:
    raise ForeignFolderError(folder, foreign)


# ----------------------------------------------------------------------------- the lock
def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id") as handle:
      return handle.read().strip()
  except OSError:
    return None


def _start_ticks(pid: int) -> int | None:
  """When process ``pid`` started (clock ticks since boot, Linux), or None."""
  try:
    with open(f"/proc/{pid}/stat") as handle:
      return int(handle.read().rsplit(")", 1)[1].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def _alive(holder: Mapping[str, Any]) -> bool:
  """Whether the process a lock file names still runs: on this host and boot, with its pid
  alive and started when the lock says (a reused pid is another process)."""
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  if holder.get("host") != socket.gethostname() or holder.get("boot_id") != _boot_id():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  started = holder.get("start_ticks")
  return started is None or _start_ticks(pid) in (None, started)


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  content = b""
  while chunk := os.read(fd, 65536):
    content += chunk
  try:
    holder = json.loads(content.decode("utf-8", "replace"))
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


class RunLock:
  """The lock of one run on ``folder`` (``folder/run.lock``), held from :meth:`acquire` to
  :meth:`release` (or the end of the process)."""

  def __init__(self, folder: str):
    self.folder = folder
    self.path = os.path.join(folder, LOCK)
    self._fd: int | None = None

  def acquire(self) -> str | None:
    """Takes the lock; ``folder`` must exist. Returns a note when a stale lock (of a run
    that ended without releasing it) was taken over, else None.

    Raises:
      FolderInUseError: a live process holds the lock (named by its pid and host).
    """
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
      try:
        held = self._lock(fd)
        if not held:
          holder = _read(fd)
          raise FolderInUseError(self.folder, holder.get("pid", "?"), holder.get("host", "?"),
                                 holder.get("started"))
        try:
          same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
          same = False
        if not same:  # released and removed by its holder between our open and flock
          os.close(fd)
          continue
        previous = _read(fd)
        if previous and _alive(previous) and previous.get("pid") != os.getpid():
          # flock granted although the holder lives: a file system without working flock.
          raise FolderInUseError(self.folder, previous.get("pid"), previous.get("host"), previous.get("started"))
        self._write(fd)
      except BaseException:
        if self._fd != fd:
          with contextlib.suppress(OSError):
            os.close(fd)
        raise
      self._fd = fd
      if previous:
        return (f"took over the stale lock {self.path} of process {previous.get('pid', '?')} on "
                f"{previous.get('host', '?')} (started {previous.get('started', '?')}), which no longer runs")
      return None

  @staticmethod
  def _lock(fd: int) -> bool:
    """flock(LOCK_EX | LOCK_NB): True when taken, False when another holds it. Where the
    file system has no flock, True: the pid in the file then decides (see acquire)."""
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        return False
      if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
        return True
      raise
    return True

  @staticmethod
  def _write(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
              "start_ticks": _start_ticks(os.getpid()),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    os.fsync(fd)

  def release(self) -> None:
    """Removes ``run.lock`` and drops the lock (nothing when it is not held)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
        os.unlink(self.path)
    except OSError:
      pass
    finally:
      os.close(fd)

  @property
  def held(self) -> bool:
    return self._fd is not None


def check_free(folder: str) -> None:
  """Raises :class:`FolderInUseError` when a live run holds the lock of ``folder`` (to tell a
  second run so before any other objection to the folder); takes nothing."""
  try:
    fd = os.open(os.path.join(folder, LOCK), os.O_RDONLY | os.O_CLOEXEC)
  except OSError:
    return
  try:
    if not RunLock._lock(fd):
      holder = _read(fd)
      raise FolderInUseError(folder, holder.get("pid", "?"), holder.get("host", "?"), holder.get("started"))
  finally:
    os.close(fd)  # drops the flock when it was taken


@contextlib.contextmanager
def claimed(folder: str, *, create: bool = True) -> Iterator[str | None]:
  """``folder`` checked (:func:`check_path`, :func:`check_ours`), created when missing
  (``create``) and locked (:class:`RunLock`) for the ``with`` block, which gets the note of a
  stale lock taken over (or None). On leaving, the lock file is removed, and ``folder`` too
  when this call created it and it is empty again (a run refused at its start leaves nothing).

  Raises:
    UnsupportedPathError, ForeignFolderError, FolderInUseError: see those; nothing is written.
  """
  check_path(folder)
  check_ours(folder)
  created = []
  if create:
    missing = os.path.abspath(folder)
    while not os.path.exists(missing):
      created.append(missing)
      missing = os.path.dirname(missing)
    os.makedirs(folder, exist_ok=True)
  elif not os.path.isdir(folder):
    yield None
    return
  lock = RunLock(folder)
  try:
    note = lock.acquire()
    check_ours(folder)  # a run that ended between the first check and the lock
    yield note
  finally:
    lock.release()
    for path in created:  # innermost first
      try:
        os.rmdir(path)
      except OSError:
        break


# ----------------------------------------------------------------------------- data fingerprint
def read_data_fingerprint(folder: str) -> dict | None:
  """``folder/data_fingerprint.json`` (``{"data_file", "data_dir", "arrays"}``), or None when
  there is none (a run started before fingerprints) or it is unreadable."""
  try:
    with open(os.path.join(folder, FINGERPRINT)) as handle:
      saved = json.load(handle)
  except (OSError, ValueError):
    return None
  return saved if isinstance(saved, dict) and isinstance(saved.get("arrays"), dict) else None


def write_data_fingerprint(folder: str, arrays: Fingerprint, source: Mapping[str, Any]) -> None:
  """Writes ``folder/data_fingerprint.json``: ``source`` (e.g. data_file, data_dir) and ``arrays``."""
  write_json_atomic(os.path.join(folder, FINGERPRINT), {**source, "arrays": arrays})


def check_data(folder: str, arrays: Fingerprint, source: Mapping[str, Any]) -> str | None:
  """On resume: raises :class:`DataMismatchError` naming both sources and the first array that
  differs when ``arrays`` is not the fingerprint saved in ``folder``. Returns a note when the
  run has no fingerprint (a run started before they were written): its data are not checked."""
  saved = read_data_fingerprint(folder)
  if saved is None:
    return (f"{os.path.join(folder, FINGERPRINT)} is missing (a run started by an earlier version): the data "
            "cannot be compared with those it was started with; recording this run's now.")
  difference = first_difference(saved["arrays"], arrays)
  if difference is None:
    return None

  def name(found: Mapping[str, Any]) -> str:
    parts = [f"{key} {found[key]}" for key in sorted(found) if key != "arrays" and found[key] is not None]
    return ", ".join(parts) or "the built-in data"

  raise DataMismatchError(
      f"the run in {folder} was started with other data: {name(saved)} then, {name(source)} now "
      f"({difference}); resume with the data it was started with, or start a new run.", folder)
