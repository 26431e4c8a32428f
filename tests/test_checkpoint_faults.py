"""Checkpoints when the disk fills or refuses a write: one error naming the checkpoint,
no partial checkpoint left, the earlier ones restore bit for bit."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax import atomic
from bayesbinn_jax.atomic import OutputWriteError
from bayesbinn_jax.train.checkpoint import FILE_CRCS, Checkpointer
from bayesbinn_jax.train.engine import TrainState

TESTS = os.path.dirname(os.path.abspath(__file__))


def make_state(seed: int) -> TrainState:
  """A train state of 100,000 random weights (400 KB that do not compress)."""
  key = jax.random.PRNGKey(seed)
  return TrainState.create(
      apply_fn=None, params={"w": jax.random.normal(key, (100_000,))}, tx=optax.sgd(0.1),
      batch_stats={"mean": jnp.arange(3.0) + seed},
      dropout_key=key).replace(step=jnp.asarray(seed, jnp.int32))


def metadata(epoch: int) -> dict:
  return {"experiment": "test", "optimizer": "sgd", "config": {"lr": 0.1},
          "progress": {"epoch": epoch}}


def assert_restores(directory, seed: int) -> None:
  """The latest checkpoint in ``directory`` is ``make_state(seed)``, bit for bit."""
  checkpointer = Checkpointer(str(directory))
  restored, meta = checkpointer.restore_latest(make_state(99), metadata(0))
  checkpointer.close()
  assert meta["progress"] == {"epoch": seed}
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(make_state(seed))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.asarray(got).dtype == np.asarray(want).dtype


def test_a_file_size_limit_during_a_save_keeps_the_earlier_checkpoints(tmp_path):
  # RLIMIT_FSIZE makes the kernel refuse the array writes themselves (EFBIG), in TensorStore,
  # as a full disk would; it needs its own process.
  directory = tmp_path / "checkpoints"
  code = f"""
      import json, resource, signal, sys
      sys.path.insert(0, {TESTS!r})
      from test_checkpoint_faults import make_state, metadata
      from bayesbinn_jax.atomic import OutputWriteError
      from bayesbinn_jax.train.checkpoint import Checkpointer
      checkpointer = Checkpointer({str(directory)!r})
      checkpointer.save(1, make_state(1), metadata(1))
      checkpointer.save(2, make_state(2), metadata(2))
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
      try:
        checkpointer.save(3, make_state(3), metadata(3))
      except OutputWriteError as error:
        print(json.dumps(dict(path=error.path, errno=error.errno, line=str(error),
                              latest=checkpointer.latest())))
      """
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  path = str(directory / "3")
  assert report == dict(path=path, errno=errno.EFBIG, latest=2,
                        line=f"cannot write {path}: {os.strerror(errno.EFBIG)}")
  assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
  assert sorted(os.listdir(directory)) == ["1", "2", "written.json"]  # the unfinished checkpoint is gone
  assert_restores(directory, 2)


def test_no_space_while_orbax_writes_its_files(tmp_path, monkeypatch, capfd):
  directory = tmp_path / "checkpoints"
  checkpointer = Checkpointer(str(directory))
  checkpointer.save(4, make_state(4), metadata(4))
  opened = []
  real_open = builtins.open

  def full_disk(file, mode="r", *args, **kwargs):
    if ".orbax-checkpoint-tmp" in os.fspath(file) and any(c in mode for c in "wax"):
      opened.append(os.fspath(file))
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", full_disk)
  with pytest.raises(OutputWriteError) as excinfo:
    checkpointer.save(5, make_state(5), metadata(5))
  monkeypatch.setattr(builtins, "open", real_open)
  assert opened  # the failure came from inside Orbax's save
  path = str(directory / "5")
  assert excinfo.value.path == path and excinfo.value.errno == errno.ENOSPC
  assert str(excinfo.value) == f"cannot write {path}: No space left on device"
  assert checkpointer.latest() == 4
  checkpointer.close()
  assert sorted(os.listdir(directory)) == ["4", "written.json"]
  assert "Traceback" not in capfd.readouterr().err
  assert_restores(directory, 4)


def test_a_failed_crc_list_names_it_and_the_checkpoint_stays_complete(tmp_path, monkeypatch):
  directory = tmp_path / "checkpoints"
  checkpointer = Checkpointer(str(directory))
  checkpointer.save(1, make_state(1), metadata(1))
  (directory / "written.json").write_text("[1, 2]")  # 2 listed already: the write that fails is the CRC list

  def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(atomic.os, "fsync", no_space)
  with pytest.raises(OutputWriteError) as excinfo:
    checkpointer.save(2, make_state(2), metadata(2))
  monkeypatch.undo()
  assert excinfo.value.path == str(directory / "2" / FILE_CRCS)
  assert checkpointer.latest() == 2  # Orbax finalised it; only its CRC list is missing
  checkpointer.close()
  assert not (directory / "2" / FILE_CRCS).exists()
  assert [n for n in os.listdir(directory / "2") if n.endswith(".tmp")] == []
  assert_restores(directory, 2)


def test_other_failures_of_a_save_are_not_write_errors(tmp_path, monkeypatch):
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))

  def broken(*args, **kwargs):
    raise RuntimeError("not a disk problem")

  monkeypatch.setattr(checkpointer._manager, "save", broken)  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="not a disk problem"):
    checkpointer.save(1, make_state(1), metadata(1))
  assert checkpointer.latest() is None
