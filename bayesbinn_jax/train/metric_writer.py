"""The per-epoch metrics of a run: ``metrics.jsonl`` and TensorBoard event files.

Each epoch's record (a JSON object with at least ``"epoch"``, 1-based) is
appended to ``metrics.jsonl`` as one line, flushed and fsynced, so a run
killed at any moment leaves every finished epoch on disk; a line cut short
(no newline) is ignored when the file is read back. The numbers of each record
are also written as TensorBoard scalars at step ``epoch`` through
``tensorboardX`` (an optional extra, ``pip install 'bayesbinn_jax[tensorboard]'``,
which needs no TensorFlow), so a long run can be watched in TensorBoard.
Without it only ``metrics.jsonl`` is written and :attr:`MetricWriter.note`
says so once.

A resumed run rewrites ``metrics.jsonl`` to the epochs its checkpoint holds
and starts a new event file whose ``purge_step`` hides the later events of
the interrupted run, as TensorBoard expects of a restarted run.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

from bayesbinn_jax._checks import check_integer
from bayesbinn_jax.atomic import OutputWriteError, write_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsFileError(ValueError):
  """A ``metrics.jsonl`` that cannot be read back for a resumption, with a one-line reason."""


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """The TensorBoard scalars of ``record``: every real number (not bool) by its key, and
  every list of numbers as ``key/1``, ``key/2``, ... (e.g. the accuracy of each task)."""
  scalars = {}
  for key, value in record.items():
    values = value if isinstance(value, (list, tuple)) else None
    if values is None:
      if isinstance(value, numbers.Real) and not isinstance(value, bool):
        scalars[key] = float(value)
      continue
    for index, item in enumerate(values, start=1):
      if isinstance(item, numbers.Real) and not isinstance(item, bool):
        scalars[f"{key}/{index}"] = float(item)
  return scalars


def read_records(path: str | os.PathLike, num_epochs: int) -> list[dict]:
  """The records of epochs 1 to ``num_epochs`` in the ``metrics.jsonl`` at ``path``.

  Records of later epochs and a last line without its newline (a write cut
  short) are left out.

  Raises:
    MetricsFileError: naming ``path`` when it is unreadable or does not hold
      each of epochs 1 to ``num_epochs`` once, in order (a summary computed
      from fewer records would be silently wrong).
  """
  path = os.fspath(path)
  check_integer("num_epochs", num_epochs, low=0)
  records = []
  try:
    if os.path.exists(path):
      with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")[:-1]  # the text after the last newline is unfinished
      records = [json.loads(line) for line in lines if line.strip()]
    records = [r for r in records if r["epoch"] <= num_epochs]
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise MetricsFileError(f"{path} is unreadable ({type(error).__name__}: {error})") from error
  if [r["epoch"] for r in records] != list(range(1, num_epochs + 1)):
    raise MetricsFileError(f"{path} does not hold epochs 1 to {num_epochs} once each")
  return records


class MetricWriter:
  """Writes a run's per-epoch records to ``directory``: ``metrics.jsonl`` and TensorBoard.

  Call :meth:`start` once (0 epochs done for a new run, the checkpoint's
  epoch for a resumed one), then :meth:`write` after every epoch, then
  :meth:`close`.

  Attributes:
    path: the ``metrics.jsonl`` file.
    tensorboard_dir: the folder of the event files, or None when TensorBoard
      logging is off.
    note: None, or the one line to print when TensorBoard logging is off
      because ``tensorboardX`` is not installed.
  """

  def __init__(self, directory: str | os.PathLike, *, tensorboard: bool = True):
    """Nothing is written before :meth:`start`.

    Args:
      directory: the run's output folder (it must exist when :meth:`start` runs).
      tensorboard: write TensorBoard event files under ``directory/tensorboard``
        when ``tensorboardX`` is installed.
    """
    directory = os.fspath(directory)
    self.path = os.path.join(directory, METRICS_FILE)
    self.tensorboard_dir: str | None = None
    self.note: str | None = None
    self._summary_writer_class = None
    self._summary_writer = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      except ImportError:
        self.note = ("tensorboardX is not installed: TensorBoard logging is off (metrics.jsonl "
                     "is written; pip install 'bayesbinn_jax[tensorboard]' to turn it on)")
      else:
        # A NaN loss is a metric like any other: no warning on the console for each one.
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
        self._summary_writer_class = SummaryWriter
        self.tensorboard_dir = os.path.join(directory, TENSORBOARD_DIR)

  def start(self, epochs_done: int = 0) -> list[dict]:
    """Readies the files for epoch ``epochs_done + 1`` and returns the records before it.

    ``metrics.jsonl`` is rewritten (atomically) to hold exactly the records of
    epochs 1 to ``epochs_done``: empty for a new run. TensorBoard events of
    steps after ``epochs_done`` written by an interrupted run are hidden
    (``purge_step``).

    Raises:
      MetricsFileError: when ``epochs_done > 0`` and the file does not hold
        those epochs (see :func:`read_records`).
      OutputWriteError: when the file cannot be written.
    """
    records = read_records(self.path, epochs_done) if epochs_done else []
    write_atomic(self.path, "".join(json.dumps(record) + "\n" for record in records))
    if self._summary_writer_class is not None:
      self.close()
      try:
        # The default file name has whole seconds: a restart within the same
        # second would overwrite the interrupted run's events.
        self._summary_writer = self._summary_writer_class(
            logdir=self.tensorboard_dir, purge_step=epochs_done + 1 if epochs_done else None,
            filename_suffix=f".{time.time_ns()}")
      except OSError as error:
        raise OutputWriteError(self.tensorboard_dir, error) from error
    return records

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends ``record`` to ``metrics.jsonl`` (flushed and fsynced) and its numbers to
    TensorBoard at step ``record["epoch"]``.

    Raises:
      OutputWriteError: naming ``metrics.jsonl`` when the append fails (a full
        disk, a read-only folder); the file is cut back to its earlier records.
    """
    line = (json.dumps(dict(record)) + "\n").encode("utf-8")
    try:
      handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
      raise OutputWriteError(self.path, error) from error
    try:
      size = os.fstat(handle).st_size
      try:
        written = 0
        while written < len(line):
          written += os.write(handle, line[written:])
        os.fsync(handle)
      except OSError as error:
        try:
          os.ftruncate(handle, size)  # no half line: the file keeps its complete records
        except OSError:
          pass
        raise OutputWriteError(self.path, error) from error
    finally:
      os.close(handle)
    if self._summary_writer is not None:
      step = int(record["epoch"])
      for tag, value in _scalars(record).items():
        self._summary_writer.add_scalar(tag, value, global_step=step)
      self._summary_writer.flush()

  def close(self) -> None:
    """Flushes and closes the TensorBoard event file (``metrics.jsonl`` is always closed)."""
    if self._summary_writer is not None:
      self._summary_writer.close()
      self._summary_writer = None
