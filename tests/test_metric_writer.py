"""metrics.jsonl appended per epoch and TensorBoard events read back from their bytes.

The event files are parsed here from the TFRecord framing (uint64 length,
masked CRC-32C of the length, data, masked CRC-32C of the data; CRC-32C
written out from its definition) and tensorboardX's Event protobuf.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import sys

import numpy as np
import pytest

from bayesbinn_jax.atomic import OutputWriteError
from bayesbinn_jax.train import metric_writer
from bayesbinn_jax.train.metric_writer import MetricsFileError, MetricWriter, read_records


def _crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path) -> list[bytes]:
  """The payloads of the TFRecord file ``path``, each CRC checked."""
  content, offset, payloads = open(path, "rb").read(), 0, []
  while offset < len(content):
    header = content[offset:offset + 8]
    (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", content[offset + 8:offset + 12])
    assert length_crc == _masked(_crc32c(header))
    payload = content[offset + 12:offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", content[offset + 12 + length:offset + 16 + length])
    assert payload_crc == _masked(_crc32c(payload))
    payloads.append(payload)
    offset += 16 + length
  return payloads


def _events(directory) -> list[list]:
  """The events of each event file in ``directory``, oldest file first."""
  from tensorboardX.proto.event_pb2 import Event  # pylint: disable=import-outside-toplevel
  files = sorted(n for n in os.listdir(directory) if n.startswith("events.out.tfevents"))
  return [[Event.FromString(p) for p in _records(os.path.join(directory, n))] for n in files]


def _scalars(events) -> dict[tuple[str, int], float]:
  return {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value}


RECORDS = [
    {"epoch": 1, "seconds": 0.5, "train_loss": 0.75, "lr": 1e-3},
    {"epoch": 2, "seconds": 0.25, "train_loss": 0.5, "lr": 5e-4, "test_accuracy": 0.875,
     "task": 1, "task_test_accuracies": [0.875, 0.5], "done": True, "name": "x"},
    {"epoch": 3, "seconds": 0.125, "train_loss": float("nan"), "lr": 0.0},
]


def _write(directory, records, epochs_done=0):
  writer = MetricWriter(directory)
  earlier = writer.start(epochs_done)
  for record in records:
    writer.write(record)
  writer.close()
  return writer, earlier


def test_records_are_appended_as_json_lines(tmp_path):
  writer = MetricWriter(tmp_path)
  assert writer.start() == [] and (tmp_path / "metrics.jsonl").read_text() == ""
  inode = os.stat(writer.path).st_ino
  writer.write(RECORDS[0])
  first = (tmp_path / "metrics.jsonl").read_bytes()
  writer.write(RECORDS[1])
  writer.close()
  content = (tmp_path / "metrics.jsonl").read_bytes()
  assert content.startswith(first) and os.stat(writer.path).st_ino == inode  # appended, not rewritten
  assert content.decode().split("\n") == [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), ""]
  assert read_records(writer.path, 2) == RECORDS[:2]


def test_tensorboard_events_hold_every_number_at_its_epoch(tmp_path):
  writer, _ = _write(tmp_path, RECORDS)
  assert writer.note is None and writer.tensorboard_dir == str(tmp_path / "tensorboard")
  assert os.path.dirname(writer.events_path) == writer.tensorboard_dir
  (events,) = _events(tmp_path / "tensorboard")
  assert events[0].file_version == "brain.Event:2"
  assert [e.step for e in events[1:]] == [1, 2, 3]  # one event per epoch
  scalars = _scalars(events)
  expected = {("epoch", 1): 1, ("seconds", 1): 0.5, ("train_loss", 1): 0.75, ("lr", 1): 1e-3,
              ("epoch", 2): 2, ("seconds", 2): 0.25, ("train_loss", 2): 0.5, ("lr", 2): 5e-4,
              ("test_accuracy", 2): 0.875, ("task", 2): 1, ("task_test_accuracies/1", 2): 0.875,
              ("task_test_accuracies/2", 2): 0.5,
              ("epoch", 3): 3, ("seconds", 3): 0.125, ("lr", 3): 0.0}
  assert math.isnan(scalars.pop(("train_loss", 3)))
  assert scalars == {k: float(np.float32(v)) for k, v in expected.items()}  # no bool, no string


def test_resume_keeps_the_checkpointed_epochs_and_hides_later_events(tmp_path):
  _write(tmp_path, RECORDS)
  with open(tmp_path / "metrics.jsonl", "a") as handle:
    handle.write('{"epoch": 4, "train_lo')  # a line cut short by a kill
  _, earlier = _write(tmp_path, [{"epoch": 2, "train_loss": 0.25}], epochs_done=1)
  assert earlier == RECORDS[:1]
  assert read_records(tmp_path / "metrics.jsonl", 2) == [RECORDS[0], {"epoch": 2, "train_loss": 0.25}]
  first, second = _events(tmp_path / "tensorboard")
  assert ("train_loss", 3) in _scalars(first)
  purge = [e for e in second if e.HasField("session_log")]
  assert len(purge) == 1 and purge[0].step == 2 and purge[0].session_log.status == 1  # START
  assert _scalars(second) == {("epoch", 2): 2.0, ("train_loss", 2): 0.25}


@pytest.mark.parametrize("content, words", [
    ("", ["does not hold epochs 1 to 2 once each"]),
    (json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[0]) + "\n", ["epochs 1 to 2"]),
    (json.dumps(RECORDS[1]) + "\n" + json.dumps(RECORDS[0]) + "\n", ["epochs 1 to 2"]),
    ("not json\n", ["is unreadable", "JSONDecodeError"]),
    ('{"loss": 1}\n', ["is unreadable", "KeyError"]),
    ("[1, 2]\n", ["is unreadable", "TypeError"]),
])
def test_a_file_without_the_checkpointed_epochs_is_refused(tmp_path, content, words):
  (tmp_path / "metrics.jsonl").write_text(content)
  with pytest.raises(MetricsFileError) as excinfo:
    MetricWriter(tmp_path, tensorboard=False).start(2)
  message = str(excinfo.value)
  assert message.startswith(str(tmp_path / "metrics.jsonl")) and "\n" not in message
  for word in words:
    assert word in message
  assert (tmp_path / "metrics.jsonl").read_text() == content  # nothing rewritten


def test_a_failed_append_names_the_file_and_leaves_no_half_line(tmp_path, monkeypatch):
  writer = MetricWriter(tmp_path, tensorboard=False)
  writer.start()
  writer.write(RECORDS[0])
  before = (tmp_path / "metrics.jsonl").read_bytes()
  real_write = os.write

  def half_then_full(handle, data):
    real_write(handle, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(metric_writer.os, "write", half_then_full)
  with pytest.raises(OutputWriteError) as excinfo:
    writer.write(RECORDS[1])
  monkeypatch.undo()
  assert excinfo.value.path == writer.path and excinfo.value.errno == errno.ENOSPC
  assert str(excinfo.value) == f"cannot write {writer.path}: No space left on device"
  assert (tmp_path / "metrics.jsonl").read_bytes() == before


def test_a_failed_event_write_names_the_event_file_and_prints_nothing(tmp_path, monkeypatch, capfd):
  from tensorboardX import record_writer  # the test extra's
  writer = MetricWriter(tmp_path)
  writer.start()
  writer.write(RECORDS[0])

  def no_space(self):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(record_writer.RecordWriter, "flush", no_space)
  with pytest.raises(OutputWriteError) as excinfo:
    writer.write(RECORDS[1])
  monkeypatch.undo()
  assert excinfo.value.path == writer.events_path and excinfo.value.errno == errno.ENOSPC
  writer.close()
  assert read_records(writer.path, 2) == RECORDS[:2]  # metrics.jsonl was written first
  (events,) = _events(tmp_path / "tensorboard")
  assert ("train_loss", 1) in _scalars(events)
  assert capfd.readouterr().err == ""


def test_without_tensorboardx_only_metrics_jsonl_is_written(tmp_path, monkeypatch):
  for name in ("tensorboardX", "tensorboardX.proto", "tensorboardX.record_writer"):
    monkeypatch.setitem(sys.modules, name, None)  # their import raises ImportError
  writer, _ = _write(tmp_path, RECORDS[:2])
  assert writer.tensorboard_dir is None
  assert writer.note.startswith("tensorboardX is not installed: TensorBoard logging is off")
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
  assert read_records(writer.path, 2) == RECORDS[:2]


def test_tensorboard_can_be_turned_off(tmp_path):
  writer = MetricWriter(tmp_path, tensorboard=False)
  writer.start()
  writer.write(RECORDS[0])
  writer.close()
  assert writer.tensorboard_dir is None and writer.note is None
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
