"""Orbax checkpoints of a training run, with metadata checked on restore.

Each checkpoint holds the train state's arrays (step, params, optimizer state,
batch statistics, dropout key) and JSON metadata: the library version, the
experiment, the optimizer, the full config and the progress (epoch, task).
Orbax writes a checkpoint into a temporary directory and renames it when
complete, so a crash during a save never leaves a partial checkpoint as the
latest one; :func:`restore_latest` skips anything not finalised.

Damage is found before Orbax reads an array (a damaged file can make Orbax
print tracebacks from its worker threads): once Orbax has finalised a
checkpoint, the CRC-32 of each of its files is written beside them
(:data:`FILE_CRCS`) and checked on restore; the paths, shapes and dtypes of the
arrays, saved in the metadata, are compared with the run's. The CRC-32 of the
arrays' bytes, saved in the metadata too, is checked after reading them: it
also covers a checkpoint whose save was killed before its file list was written.

A save that fails for want of space or permission (``ENOSPC``, ``EROFS``,
``EACCES``, ...) raises :class:`bayesbinn_jax.atomic.OutputWriteError` naming
the checkpoint, removes what it wrote and leaves the earlier checkpoints as
they were: :meth:`Checkpointer.latest` still names the last complete one.

Nothing the run did not write is deleted or overwritten: the numbers of the
checkpoints a run saves are listed in :data:`WRITTEN` (before each save), and
only those are replaced or pruned (the newest ``max_to_keep`` kept); Orbax's own
``max_to_keep``, which removes any folder named by a number, is not used. A
damaged newest checkpoint is skipped on restore, for the newest intact one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import glob
import io
import json
import logging
import os
import re
import shutil
import sys
import zlib
from collections.abc import Iterator
from typing import Any, Callable, Mapping, Sequence, cast

import jax
import numpy as np
import orbax.checkpoint as ocp

from bayesbinn_jax._version import __version__
from bayesbinn_jax.atomic import OutputWriteError, write_atomic
from bayesbinn_jax.train.engine import TrainState
from bayesbinn_jax.train.sharding import to_host

PyTree = Any
FILE_CRCS = "file_crcs.json"
"""The file, inside each checkpoint's folder, that maps every other file to its CRC-32."""
WRITTEN = "written.json"
"""The file, beside the checkpoints, that lists the numbers of those the run saved: the only
folders its cleanup may remove or replace."""
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
"""Orbax writes checkpoint ``i`` into ``i`` + this suffix (+ a timestamp in some versions)
and renames it when complete."""
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")
"""How TensorStore (Orbax's array writer) reports the errno of a failed write."""


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into the run asking for it."""


class SettingsMismatchError(CheckpointError):
  """A run's saved setting ``key`` (``saved``, read from ``where``) differs from the
  ``requested`` one."""

  def __init__(self, where: str, key: str, saved: Any, requested: Any):
    verb = "by" if key in ("experiment", "optimizer") else "with"
    super().__init__(f"{where} was written {verb} {key}={saved!r}, but this run has {key}={requested!r}.")
    self.where, self.key, self.saved, self.requested = where, key, saved, requested


class StateMismatchError(CheckpointError):
  """A checkpoint (``where``) whose arrays do not fit the train state asking for it:
  ``difference`` names the first array that differs; ``release`` is the version of
  bayesbinn_jax that wrote the checkpoint."""

  def __init__(self, where: str, difference: str, release: str | None):
    older = (f" (written by bayesbinn_jax {release}, whose train state differs from {__version__}'s)"
             if release != __version__ else "")
    super().__init__(f"{where}{older} does not fit this network and optimizer: {difference}.")
    self.where, self.difference, self.release = where, difference, release


class CorruptCheckpointError(CheckpointError):
  """A checkpoint whose files are damaged or unreadable: ``folder`` and ``problem``
  (e.g. "is corrupt: its file state/x differs from the CRC-32 saved with it")."""

  def __init__(self, folder: str, problem: str):
    super().__init__(f"checkpoint {folder} {problem}.")
    self.folder = folder
    self.problem = problem


class NotOurCheckpointError(CheckpointError):
  """A folder in the way of a save that the run did not write (``folder``): it is left as it is."""

  def __init__(self, folder: str):
    super().__init__(
        f"{folder} exists but was not written by this run (it is not listed in {WRITTEN}); it was left "
        "untouched: move it away.")
    self.folder = folder


def _arrays(state: TrainState) -> dict[str, PyTree]:
  """The arrays of ``state`` by field: every pytree field of the flax struct (step,
  params, opt_state, batch_stats, dropout_key); ``apply_fn`` and ``tx`` are not arrays."""
  return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)
          if field.metadata.get("pytree_node", True)}


class Checkpointer:
  """Saves and restores a run's checkpoints under ``directory``.

  Nothing is written before the first :meth:`save` (which creates ``directory``):
  a Checkpointer opened on a full or read-only folder can still tell :meth:`latest`.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self.skipped: list[CorruptCheckpointError] = []
    """The damaged checkpoints, newest first, that the last :meth:`restore_latest` skipped."""
    self.progress: dict = {}
    """The ``progress`` saved with the checkpoint the last :meth:`restore_latest` restored."""
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None, create=False, enable_async_checkpointing=False),
    )

  def save(self, index: int, state: TrainState, metadata: Mapping[str, Any]) -> None:
    """Saves ``state`` as checkpoint number ``index`` (e.g. the global epoch).

    The JSON metadata also lists every array's shape and dtype (``"arrays"``)
    and holds the CRC-32 of their bytes (``"crc32"``), both checked on restore.

    Raises:
      OutputWriteError: when a file of the checkpoint cannot be written (a full
        disk, a read-only or forbidden folder); ``.path`` is the checkpoint's
        folder (or its :data:`FILE_CRCS`). The unfinished checkpoint is removed
        where the folder allows it, and never counts: :meth:`latest` still
        returns the last complete checkpoint, which is left untouched.
    """
    arrays = _arrays(state)
    meta = {"version": __version__, **metadata,
            "arrays": _leaf_specs(arrays), "crc32": _crc32(arrays)}
    folder = os.path.join(self.directory, str(index))
    if jax.process_index() == 0:
      self._claim(index, folder)
    code = None
    with _quiet_on_failure():
      try:
        self._manager.save(
            index,
            args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()
      except Exception as error:  # noqa: BLE001 - Orbax and TensorStore wrap OS errors in their own types
        code = _os_error_code(error)
        if code is None:
          raise
      if code is not None:
        # Raised outside the except block: the failed save's exceptions, and the asyncio
        # tasks their tracebacks hold, are released and collected here, quietly.
        for unfinished in glob.glob(glob.escape(folder + _TMP_SUFFIX) + "*"):
          shutil.rmtree(unfinished, ignore_errors=True)
        self._manager.reload()
        gc.collect()
        raise OutputWriteError(folder, OSError(code, os.strerror(code)))
    if jax.process_index() == 0:
      write_atomic(os.path.join(folder, FILE_CRCS), json.dumps(_file_crcs(folder), sort_keys=True))
      self._prune(keep=index)

  def written(self) -> list[int]:
    """The numbers listed in :data:`WRITTEN`: the checkpoints this run saved (or began to)."""
    try:
      with open(os.path.join(self.directory, WRITTEN)) as handle:
        listed = json.load(handle)
    except FileNotFoundError:
      return []
    except (OSError, ValueError):
      return []  # unreadable: nothing is known to be ours, so nothing is removed
    return sorted({int(i) for i in listed if isinstance(i, int)}) if isinstance(listed, list) else []

  def _write_list(self, indices: list[int]) -> None:
    write_atomic(os.path.join(self.directory, WRITTEN), json.dumps(sorted(set(indices))))

  def _claim(self, index: int, folder: str) -> None:
    """Lists ``index`` in :data:`WRITTEN` before its save; a folder ``index`` already there
    is replaced only when it is listed (an unfinished or damaged save of this run)."""
    written = self.written()
    if os.path.lexists(folder):
      if index not in written:
        raise NotOurCheckpointError(folder)
      shutil.rmtree(folder)
      self._manager.reload()
    if index not in written:
      os.makedirs(self.directory, exist_ok=True)
      self._write_list([*written, index])

  def _prune(self, keep: int) -> None:
    """Removes the listed checkpoints but the newest :attr:`max_to_keep` complete ones (and
    ``keep``); folders not listed in :data:`WRITTEN` are never touched."""
    written = self.written()
    complete = set(self._manager.all_steps())
    kept = sorted(i for i in written if i in complete)[-self.max_to_keep:] if self.max_to_keep else []
    removed = [i for i in written if i not in kept and i != keep and i < keep]
    for index in removed:
      shutil.rmtree(os.path.join(self.directory, str(index)), ignore_errors=True)
    if removed:
      self._write_list([i for i in written if i not in removed])
      self._manager.reload()

  def latest(self) -> int | None:
    """The number of the latest complete checkpoint, or None; after a failed
    :meth:`save` the last one that completed (the one to resume from)."""
    return self._manager.latest_step()

  def restore_latest(self, template: TrainState, expected: Mapping[str, Any], *,
                     ignored: Sequence[str] = (),
                     migrate: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
                     ) -> tuple[TrainState, dict] | None:
    """Restores the latest checkpoint into ``template``'s structure.

    ``expected`` is the metadata the run would save (experiment, optimizer,
    config); any difference, other than progress and the config keys
    ``ignored``, raises :class:`SettingsMismatchError` naming the key. The saved
    metadata first goes through ``migrate`` (e.g. the settings of an earlier
    release under today's names), whose errors pass through. A state whose
    arrays do not fit the network and optimizer of ``template`` raises
    :class:`StateMismatchError` (naming the first array that differs, with both
    shapes, and the release that wrote the checkpoint). A damaged or unreadable checkpoint (naming the file whose CRC-32
    differs from the saved one) is skipped for the newest intact one before it,
    and listed in :attr:`skipped`; when every checkpoint is damaged, the newest
    one's :class:`CorruptCheckpointError` is raised. Returns None when there is
    no checkpoint.
    """
    self.skipped = []
    for index in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._restore(index, template, expected, ignored, migrate)
      except CorruptCheckpointError as error:
        self.skipped.append(error)
        continue
      self.progress = dict(restored[1].get("progress") or {})
      return restored
    if self.skipped:
      raise self.skipped[0]
    return None

  def _restore(self, index: int, template: TrainState, expected: Mapping[str, Any], ignored: Sequence[str],
               migrate: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None) -> tuple[TrainState, dict]:
    folder = os.path.join(self.directory, str(index))
    where = f"checkpoint {folder}"
    _check_files(folder, where)
    try:
      meta = self._manager.restore(index, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as error:  # noqa: BLE001 - any read failure is a corrupt checkpoint
      raise CorruptCheckpointError(folder, f"is unreadable: {_first_line(error)}") from error
    if not isinstance(meta, Mapping) or not isinstance(meta.get("arrays"), Mapping):
      release = meta.get("version") if isinstance(meta, Mapping) else None
      raise CorruptCheckpointError(
          folder, "lists no arrays in its metadata (a damaged file, or a checkpoint of bayesbinn_jax "
          f"{release or 'before 0.1.0'})")
    check_metadata(migrate(meta) if migrate else meta, expected, where, ignored=ignored)
    difference = _first_difference(meta["arrays"], _leaf_specs(_arrays(template)))
    if difference:
      raise StateMismatchError(where, difference, meta.get("version"))
    try:
      arrays = self._manager.restore(
          index, args=ocp.args.Composite(state=ocp.args.StandardRestore(_arrays(template)))).state
    except Exception as error:  # noqa: BLE001 - the arrays fit, so their files are damaged
      raise CorruptCheckpointError(
          folder, f"is corrupt: its arrays cannot be read ({type(error).__name__})") from error
    if _crc32(arrays) != meta.get("crc32"):
      raise CorruptCheckpointError(folder, "is corrupt: its arrays differ from the CRC-32 saved with them")
    return template.replace(**arrays), cast(dict, meta)

  def close(self) -> None:
    self._manager.close()


def check_metadata(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str, *,
                   ignored: Sequence[str] = ()) -> None:
  """Raises :class:`SettingsMismatchError` naming the first setting in which ``saved``
  (the experiment, optimizer and config a run was started with, read from ``where``)
  differs from ``expected``; the config keys ``ignored`` may differ."""
  for key in ("experiment", "optimizer"):
    if saved.get(key) != expected.get(key):
      raise SettingsMismatchError(where, key, saved.get(key), expected.get(key))
  saved_config, config = saved.get("config", {}), expected.get("config", {})
  if not isinstance(saved_config, Mapping):
    raise CheckpointError(f"{where} is unreadable: its config is not a mapping.")
  for key in sorted(set(saved_config) | set(config)):
    if key not in ignored and saved_config.get(key) != config.get(key):
      raise SettingsMismatchError(where, key, saved_config.get(key), config.get(key))


@contextlib.contextmanager
def _quiet_on_failure() -> Iterator[None]:
  """Holds back what Orbax and TensorStore print while a save runs. When a write
  fails, their worker threads log tracebacks (``absl`` logger), print more to
  ``sys.stderr`` (callbacks on a closed event loop), and leave asyncio tasks whose
  exceptions asyncio logs when they are collected (``asyncio`` logger): the failure
  reaches the caller as one exception instead. After a save that succeeds, what was
  printed is passed on."""
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels = [logger.level for logger in loggers]
  held = io.StringIO()
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    with contextlib.redirect_stderr(held):
      yield
    sys.stderr.write(held.getvalue())
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _os_error_code(error: BaseException) -> int | None:
  """The errno behind a failed save: that of an ``OSError`` in the chain of causes, or
  the ``os_error_code`` of a TensorStore error; None when the failure is not the system's."""
  seen: BaseException | None = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno is not None:
      return seen.errno
    match = _OS_ERROR_CODE.search(str(seen))
    if match:
      return int(match.group(1))
    seen = seen.__cause__ or seen.__context__
  return None


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def _file_crcs(folder: str) -> dict[str, int]:
  """``{relative path: CRC-32}`` of every file under ``folder`` except :data:`FILE_CRCS`."""
  crcs = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, folder)
      if relative == FILE_CRCS:
        continue
      crc = 0
      with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
          crc = zlib.crc32(chunk, crc)
      crcs[relative] = crc
  return crcs


def _check_files(folder: str, where: str) -> None:
  """Raises :class:`CorruptCheckpointError` naming the first file of ``folder`` that is missing
  or whose CRC-32 differs from :data:`FILE_CRCS` (when that list was written)."""
  listing = os.path.join(folder, FILE_CRCS)
  if not os.path.exists(listing):
    return
  try:
    with open(listing) as handle:
      saved = json.load(handle)
    found = _file_crcs(folder)
  except (OSError, ValueError) as error:
    raise CorruptCheckpointError(folder, f"is unreadable: {_first_line(error)}") from error
  if not isinstance(saved, dict):
    raise CorruptCheckpointError(folder, f"is unreadable: {FILE_CRCS} does not map files to CRC-32s")
  for name, crc in sorted(saved.items()):
    if name not in found:
      raise CorruptCheckpointError(folder, f"is corrupt: its file {name} is missing")
    if found[name] != crc:
      raise CorruptCheckpointError(folder, f"is corrupt: its file {name} differs from the CRC-32 saved with it")


def _host_value(leaf: Any) -> np.ndarray:
  """A leaf as a whole NumPy array, on every process (gathered when split over several)."""
  return np.asarray(to_host(leaf))


def _leaf_specs(arrays: PyTree) -> dict[str, list]:
  """``{"opt_state/lam/Dense_0/kernel": [shape, dtype]}`` for every array (JSON-ready)."""
  return {
      jax.tree_util.keystr(path, simple=True, separator="/"):
          [list(np.shape(leaf)), str(np.dtype(leaf.dtype))]
      for path, leaf in jax.tree_util.tree_leaves_with_path(arrays)
  }


def _crc32(arrays: PyTree) -> int:
  """The CRC-32 of the bytes of every array, in tree order."""
  crc = 0
  for leaf in jax.tree.leaves(arrays):
    crc = zlib.crc32(_host_value(leaf).tobytes(), crc)
  return crc


def _describe(spec: Any) -> str:
  """``(64, 100) float32`` for the spec ``[[64, 100], "float32"]``."""
  try:
    shape, dtype = spec
    return f"{tuple(shape)} {dtype}"
  except (TypeError, ValueError):
    return repr(spec)


def _first_difference(saved: Mapping[str, Any], wanted: Mapping[str, list]) -> str | None:
  """The first array on which the checkpoint (``saved``) and the run (``wanted``) disagree."""
  for path, spec in wanted.items():
    if path not in saved:
      return f"this run's array {path} {_describe(spec)} is not in the checkpoint"
    if saved[path] != spec:
      return f"array {path} is {_describe(saved[path])} in the checkpoint but {_describe(spec)} in this run"
  for path, spec in saved.items():
    if path not in wanted:
      return f"the checkpoint's array {path} {_describe(spec)} is not in this run's state"
  return None
