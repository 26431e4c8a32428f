"""The per-epoch metrics of a run: ``metrics.jsonl`` and TensorBoard event files.

Each epoch's record (a JSON object with at least ``"epoch"``, 1-based) is
appended to ``metrics.jsonl`` as one line, flushed and fsynced, so a run
killed at any moment leaves every finished epoch on disk; a line cut short
(no newline) is ignored when the file is read back. The numbers of each record
are also written as TensorBoard scalars at step ``epoch`` with
``tensorboardX``'s event protobufs and record writer (an optional extra,
``pip install 'bayesbinn_jax[tensorboard]'``, which needs no TensorFlow), so a
long run can be watched in TensorBoard. Without it only ``metrics.jsonl`` is
written and :attr:`MetricWriter.note` says so once.

The events are written and fsynced in the caller's thread, one event per
epoch, not through ``tensorboardX.SummaryWriter``: its writer thread and exit
handler print tracebacks when the disk fills, where a failed write here raises
one :class:`~bayesbinn_jax.atomic.OutputWriteError` naming the file.

A resumed run rewrites ``metrics.jsonl`` to the epochs its checkpoint holds
and starts a new event file that begins with TensorBoard's restart marker (a
``SessionLog.START`` event at the next epoch, what ``SummaryWriter``'s
``purge_step`` writes): TensorBoard then hides the interrupted run's later events.
"""

from __future__ import annotations

import json
import numbers
import os
import socket
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
    events_path: the event file being written, or None.
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
    self.events_path: str | None = None
    self.note: str | None = None
    self._protos: tuple[Any, Any] | None = None
    self._record_writer_class: Any = None
    self._events: Any = None
    if tensorboard:
      try:
        # pylint: disable=import-outside-toplevel
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import RecordWriter
      except ImportError:
        self.note = ("tensorboardX is not installed: TensorBoard logging is off (metrics.jsonl "
                     "is written; pip install 'bayesbinn_jax[tensorboard]' to turn it on)")
      else:
        self._protos = (event_pb2, summary_pb2)
        self._record_writer_class = RecordWriter
        self.tensorboard_dir = os.path.join(directory, TENSORBOARD_DIR)

  def start(self, epochs_done: int = 0) -> list[dict]:
    """Readies the files for epoch ``epochs_done + 1`` and returns the records before it.

    ``metrics.jsonl`` is rewritten (atomically) to hold exactly the records of
    epochs 1 to ``epochs_done``: empty for a new run. A new event file is
    started; after ``epochs_done > 0`` it hides the events of later steps
    written by an interrupted run.

    Raises:
      MetricsFileError: when ``epochs_done > 0`` and the file does not hold
        those epochs (see :func:`read_records`).
      OutputWriteError: when a file cannot be written.
    """
    records = read_records(self.path, epochs_done) if epochs_done else []
    write_atomic(self.path, "".join(json.dumps(record) + "\n" for record in records))
    if self._protos is not None:
      self.close()
      event_pb2, _ = self._protos
      assert self.tensorboard_dir is not None  # set with _protos
      now = time.time_ns()
      # Whole seconds, as TensorBoard's own names, and the nanoseconds: a restart in
      # the same second must not overwrite the interrupted run's events.
      self.events_path = os.path.join(
          self.tensorboard_dir, f"events.out.tfevents.{now // 10**9}.{socket.gethostname()}.{now}")
      try:
        os.makedirs(self.tensorboard_dir, exist_ok=True)
        self._events = self._record_writer_class(self.events_path)
      except OSError as error:
        raise OutputWriteError(self.events_path, error) from error
      events = [event_pb2.Event(wall_time=now / 1e9, file_version="brain.Event:2")]
      if epochs_done:
        events.append(event_pb2.Event(
            wall_time=now / 1e9, step=epochs_done + 1,
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
      self._write_events(events)
    return records

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends ``record`` to ``metrics.jsonl`` and its numbers, as one event at step
    ``record["epoch"]``, to the event file; both flushed and fsynced.

    Raises:
      OutputWriteError: naming the file whose write failed (a full disk, a
        read-only folder); ``metrics.jsonl`` is cut back to its earlier records.
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
    if self._events is not None:
      assert self._protos is not None  # set before _events
      event_pb2, summary_pb2 = self._protos
      values = [summary_pb2.Summary.Value(tag=tag, simple_value=value)
                for tag, value in _scalars(record).items()]
      self._write_events([event_pb2.Event(
          wall_time=time.time(), step=int(record["epoch"]), summary=summary_pb2.Summary(value=values))])

  def _write_events(self, events: list[Any]) -> None:
    try:
      for event in events:
        self._events.write(event.SerializeToString())
      self._events.flush()  # flushes and fsyncs
    except OSError as error:
      self.close()
      assert self.events_path is not None  # set with _events
      raise OutputWriteError(self.events_path, error) from error

  def close(self) -> None:
    """Closes the event file. Every write was flushed, so nothing is lost when closing
    fails (a full disk); ``metrics.jsonl`` is never held open."""
    if self._events is not None:
      events, self._events = self._events, None
      try:
        events.close()
      except OSError:
        pass
