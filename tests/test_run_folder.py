"""The run folder: nothing lost, nothing mixed up (issue 26, items 1-4 and 10), at the library level.

- checkpoints: only what the run wrote is pruned or replaced; a damaged newest checkpoint is
  skipped for the newest intact one (``train/checkpoint.py``);
- paths: every folder name Orbax round-trips is accepted, the others refused before anything
  is written (``run_folder.check_path``);
- ownership and the lock (``run_folder.check_ours``, ``RunLock``, ``claimed``);
- data fingerprints (``data/fingerprint.py``, ``run_folder.check_data``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayesbinn_jax.data.fingerprint import array_fingerprint, dataset_fingerprint, first_difference, fingerprint
from bayesbinn_jax.data.dataset import ArrayDataset
from bayesbinn_jax.train import run_folder
from bayesbinn_jax.train.checkpoint import (FILE_CRCS, WRITTEN, Checkpointer, CheckpointError, CorruptCheckpointError,
                                            NotOurCheckpointError)
from bayesbinn_jax.train.engine import TrainState

META = {"experiment": "two-moons", "optimizer": "adam", "config": {"lr": 0.1}}


def _state(value: float = 0.0) -> TrainState:
  """A tiny train state: 6 params, a momentum, one batch statistic, a key."""
  return TrainState.create(apply_fn=None, params={"w": jnp.arange(6.0, dtype=jnp.float32) + value}, tx=optax.sgd(0.1, momentum=0.9),
                           batch_stats={"mean": jnp.full(2, value, jnp.float32)},
                           dropout_key=jax.random.PRNGKey(0)).replace(step=jnp.int32(value))


def _save(checkpointer: Checkpointer, *indices: int) -> None:
  for index in indices:
    checkpointer.save(index, _state(index), {**META, "progress": {"epoch": index}})


def _numbered(folder) -> list[str]:
  return sorted(name for name in os.listdir(folder) if name.isdigit())


# ------------------------------------------------------------------ item 1: nothing of the user's deleted
def test_pruning_removes_our_old_checkpoints_and_never_a_folder_of_the_user(tmp_path):
  # Orbax's max_to_keep removed any folder named by a number: here the user's "5" (and "0").
  for name in ("5", "0"):
    (tmp_path / "checkpoints" / name).mkdir(parents=True)
    (tmp_path / "checkpoints" / name / "weights.bin").write_bytes(b"the user's" + name.encode())
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2)
  _save(checkpointer, 1, 2, 3, 4)
  assert _numbered(tmp_path / "checkpoints") == ["0", "3", "4", "5"]  # ours pruned to the newest two
  for name in ("5", "0"):
    assert (tmp_path / "checkpoints" / name / "weights.bin").read_bytes() == b"the user's" + name.encode()
  assert json.loads((tmp_path / "checkpoints" / WRITTEN).read_text()) == [3, 4]


def test_a_save_onto_a_folder_of_the_user_is_refused_and_leaves_it(tmp_path):
  (tmp_path / "checkpoints" / "2").mkdir(parents=True)
  (tmp_path / "checkpoints" / "2" / "weights.bin").write_bytes(b"mine")
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  _save(checkpointer, 1)
  with pytest.raises(NotOurCheckpointError, match="was not written by this run"):
    _save(checkpointer, 2)
  assert (tmp_path / "checkpoints" / "2" / "weights.bin").read_bytes() == b"mine"


def test_a_checkpoint_of_the_run_is_replaced_when_saved_again(tmp_path):
  # A resumed run saves a number again (its checkpoint was damaged, or was a partial epoch).
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  _save(checkpointer, 1, 2)
  checkpointer.save(2, _state(7.0), {**META, "progress": {"epoch": 2}})
  restored, meta = Checkpointer(str(tmp_path / "checkpoints")).restore_latest(_state(), META)
  assert meta["progress"] == {"epoch": 2} and np.array_equal(restored.params["w"], np.arange(6.0) + 7)


def test_the_list_of_written_checkpoints_carries_over_a_resumption(tmp_path):
  _save(Checkpointer(str(tmp_path / "checkpoints")), 1, 2)
  _save(Checkpointer(str(tmp_path / "checkpoints")), 3)  # a new process, as after --resume
  assert _numbered(tmp_path / "checkpoints") == ["2", "3"]


# ------------------------------------------------------------------ item 10: a damaged newest checkpoint
def _flip_a_byte(folder) -> str:
  files = [os.path.join(root, n) for root, _, names in os.walk(folder) for n in names if n != FILE_CRCS]
  path = max(files, key=os.path.getsize)
  content = bytearray(open(path, "rb").read())
  content[len(content) // 2] ^= 0x01
  open(path, "wb").write(bytes(content))
  return os.path.relpath(path, folder)


def test_restore_skips_a_damaged_newest_checkpoint_for_the_newest_intact_one(tmp_path):
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=3)
  _save(checkpointer, 1, 2, 3)
  damaged = _flip_a_byte(tmp_path / "checkpoints" / "3")
  restored, meta = checkpointer.restore_latest(_state(), META)
  assert meta["progress"] == {"epoch": 2} and np.array_equal(restored.params["w"], np.arange(6.0) + 2)
  [skipped] = checkpointer.skipped
  assert skipped.folder == str(tmp_path / "checkpoints" / "3")
  assert skipped.problem == f"is corrupt: its file {damaged} differs from the CRC-32 saved with it"


def test_restore_skips_every_damaged_one_and_raises_the_newest_when_none_is_intact(tmp_path):
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=3)
  _save(checkpointer, 1, 2, 3)
  for index in (3, 2):
    _flip_a_byte(tmp_path / "checkpoints" / str(index))
  assert checkpointer.restore_latest(_state(), META)[1]["progress"] == {"epoch": 1}
  assert [e.folder[-1] for e in checkpointer.skipped] == ["3", "2"]
  _flip_a_byte(tmp_path / "checkpoints" / "1")
  with pytest.raises(CorruptCheckpointError, match=f"checkpoint {tmp_path}/checkpoints/3 is corrupt"):
    checkpointer.restore_latest(_state(), META)


def test_a_folder_of_the_user_is_skipped_too(tmp_path):
  (tmp_path / "checkpoints" / "9").mkdir(parents=True)
  (tmp_path / "checkpoints" / "9" / "weights.bin").write_bytes(b"mine")
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  _save(checkpointer, 1)
  assert checkpointer.restore_latest(_state(), META)[1]["progress"] == {"epoch": 1}
  assert checkpointer.skipped[0].folder.endswith("/9")


def test_a_checkpoint_of_other_settings_is_not_skipped_but_refused(tmp_path):
  # Only damage falls back: an intact checkpoint of other settings is an error, as before.
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  _save(checkpointer, 1, 2)
  with pytest.raises(CheckpointError, match="lr=0.1, but this run has lr=0.2") as error:
    checkpointer.restore_latest(_state(), {**META, "config": {"lr": 0.2}})
  assert not isinstance(error.value, CorruptCheckpointError) and "checkpoints/2" in str(error.value)


# ------------------------------------------------------------------ item 2: folder names
# Every name the OS accepts: spaces, unicode, shell and glob characters, a leading dash.
ACCEPTED_NAMES = ["with space", " leading space", "trailing space ", "ünïcødé", "日本語", "emoji😀",
                  "dollar$HOME", "quote'single", 'quote"double', "bang!", "amp&", "semi;colon", "pipe|x",
                  "lt<gt>", "paren(x)", "brace{a,b}", "tilde~", "hash#", "percent%s", "colon:x", "equals=x",
                  "comma,x", "plus+x", "at@x", "back`tick`", "-leading-dash", "--double-dash", "tab\tx",
                  "newline\nx", "a..b", "s3:", "gs:x", "...", "x" * 200]
REFUSED_NAMES = ["br[ack]et", "star*", "question?", "back\\slash", "only]", "gs:"]


@pytest.mark.parametrize("name", ACCEPTED_NAMES, ids=[ascii(n) for n in ACCEPTED_NAMES])
def test_checkpoints_round_trip_under_every_accepted_name(tmp_path, name):
  out = tmp_path / name / "run"
  run_folder.check_path(str(out))
  checkpointer = Checkpointer(str(out / "checkpoints"))
  _save(checkpointer, 1)
  restored, meta = Checkpointer(str(out / "checkpoints")).restore_latest(_state(), META)
  assert meta["progress"] == {"epoch": 1} and np.array_equal(restored.params["w"], np.arange(6.0) + 1)
  # Orbax merged the per-process pieces into one store (the merge is skipped, silently, when its
  # glob finds none: then the checkpoint reads back only through the per-process folders, or not at all).
  assert os.path.exists(out / "checkpoints" / "1" / "state" / "manifest.ocdbt")


@pytest.mark.parametrize("name", REFUSED_NAMES, ids=[ascii(n) for n in REFUSED_NAMES])
def test_names_orbax_mishandles_are_refused_before_anything_is_written(tmp_path, name):
  out = tmp_path / "parent" / name
  with pytest.raises(run_folder.UnsupportedPathError) as error:
    with run_folder.claimed(str(out)):
      pass
  assert str(out) in str(error.value) and "\n" not in str(error.value).replace(str(out), "")
  assert not os.path.exists(tmp_path / "parent")


def test_orbax_really_loses_checkpoints_under_a_bracketed_name(tmp_path):
  # Why "[" is refused: Orbax globs for the checkpoint's per-process pieces, "[ack]" is a
  # character class, the merge is skipped, and the arrays cannot be read back.
  checkpointer = Checkpointer(str(tmp_path / "br[ack]et" / "checkpoints"))
  with pytest.raises(Exception):  # noqa: B017 - whichever of Orbax's errors
    _save(checkpointer, 1)
    Checkpointer(str(tmp_path / "br[ack]et" / "checkpoints")).restore_latest(_state(), META)


# ------------------------------------------------------------------ item 1: a folder that is not a run of ours
def test_a_folder_of_the_users_own_files_is_refused_untouched(tmp_path):
  (tmp_path / "mine" / "checkpoints" / "5").mkdir(parents=True)
  (tmp_path / "mine" / "checkpoints" / "5" / "weights.bin").write_bytes(b"w")
  with pytest.raises(run_folder.ForeignFolderError, match=r"holds no run of bayesbinn_jax.*checkpoints"):
    with run_folder.claimed(str(tmp_path / "mine")):
      pass
  assert sorted(os.listdir(tmp_path / "mine")) == ["checkpoints"]


@pytest.mark.parametrize("entries", [[], ["config.json", "whatever"], [run_folder.LOCK],
                                     [run_folder.LOCK, run_folder.FINGERPRINT]])
def test_empty_folders_and_runs_of_ours_are_accepted(tmp_path, entries):
  for name in entries:
    (tmp_path / name).write_text("{}")
  with run_folder.claimed(str(tmp_path)) as note:
    assert os.path.exists(tmp_path / run_folder.LOCK)
  assert note is None or "stale lock" in note
  assert sorted(os.listdir(tmp_path)) == sorted(set(entries) - {run_folder.LOCK})


def test_a_refused_claim_removes_the_folders_it_created(tmp_path):
  blocker = run_folder.RunLock(str(tmp_path))
  blocker.acquire()
  try:
    # The same folder, through a path whose missing parents the claim creates and removes.
    with pytest.raises(run_folder.FolderInUseError):
      with run_folder.claimed(str(tmp_path)):
        pass
    assert os.path.exists(tmp_path / run_folder.LOCK)  # the holder's lock is not the refused one's to remove
  finally:
    blocker.release()
  with run_folder.claimed(str(tmp_path / "a" / "b" / "c")):
    assert (tmp_path / "a" / "b" / "c" / run_folder.LOCK).exists()
  assert not os.path.exists(tmp_path / "a")


# ------------------------------------------------------------------ item 3: the lock
def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
  first = run_folder.RunLock(str(tmp_path))
  assert first.acquire() is None
  holder = json.loads((tmp_path / run_folder.LOCK).read_text())
  assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
  with pytest.raises(run_folder.FolderInUseError, match=f"process {os.getpid()} on {socket.gethostname()}"):
    run_folder.RunLock(str(tmp_path)).acquire()
  first.release()
  assert not os.path.exists(tmp_path / run_folder.LOCK)
  second = run_folder.RunLock(str(tmp_path))
  assert second.acquire() is None
  second.release()


def _dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


@pytest.mark.parametrize("holder", ["dead-pid", "other-host", "other-boot", "garbage"])
def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, holder):
  content = {"pid": _dead_pid(), "host": socket.gethostname(), "boot_id": run_folder._boot_id(),
             "started": "then"}
  if holder == "other-host":
    content.update(pid=os.getppid(), host="elsewhere.example")
  if holder == "other-boot":
    content.update(pid=os.getppid(), boot_id="another-boot")
  (tmp_path / run_folder.LOCK).write_text("{not json" if holder == "garbage" else json.dumps(content))
  lock = run_folder.RunLock(str(tmp_path))
  note = lock.acquire()
  if holder == "garbage":
    assert note is None
  else:
    assert f"stale lock {tmp_path / run_folder.LOCK} of process {content['pid']} on {content['host']}" in note
  assert json.loads((tmp_path / run_folder.LOCK).read_text())["pid"] == os.getpid()
  lock.release()


def test_a_live_holder_is_found_even_where_flock_is_not_kept(tmp_path, monkeypatch):
  # A file system without flock: the pid, host, boot and start time in the file decide.
  (tmp_path / run_folder.LOCK).write_text(json.dumps({
      "pid": os.getppid(), "host": socket.gethostname(), "boot_id": run_folder._boot_id(),
      "start_ticks": run_folder._start_ticks(os.getppid()), "started": "then"}))
  monkeypatch.setattr(run_folder.RunLock, "_lock", staticmethod(lambda fd: True))
  with pytest.raises(run_folder.FolderInUseError, match=f"process {os.getppid()}"):
    run_folder.RunLock(str(tmp_path)).acquire()
  assert not run_folder._alive({"pid": os.getppid(), "host": socket.gethostname(),
                                "boot_id": run_folder._boot_id(), "start_ticks": -1})  # pid reused


# ------------------------------------------------------------------ item 4: the data fingerprint
def test_array_fingerprint_is_the_sha256_of_the_bytes():
  x = np.arange(12, dtype=np.uint8).reshape(3, 4)
  assert array_fingerprint(x) == {"shape": [3, 4], "dtype": "uint8", "sha256": hashlib.sha256(bytes(range(12))).hexdigest()}
  assert array_fingerprint(x.T)["sha256"] == hashlib.sha256(np.ascontiguousarray(x.T).tobytes()).hexdigest()
  assert array_fingerprint(np.arange(3, dtype=">i4")) == array_fingerprint(np.arange(3, dtype="<i4"))
  assert array_fingerprint(np.zeros((0, 3)))["sha256"] == hashlib.sha256(b"").hexdigest()


def _dataset(flip: bool = False) -> ArrayDataset:
  x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  if flip:
    x = x.copy()
    x[1, 2, 2] ^= 1
  return ArrayDataset(x_train=x, y_train=np.array([0, 1]), x_test=x[:1], y_test=np.array([1]), num_classes=2)


def test_one_changed_pixel_changes_the_fingerprint_and_is_named():
  same, other = dataset_fingerprint(_dataset()), dataset_fingerprint(_dataset(flip=True))
  assert sorted(same) == ["x_test", "x_train", "y_test", "y_train"]  # x_val, y_val None: left out
  assert same == dataset_fingerprint(_dataset()) and first_difference(same, same) is None
  difference = first_difference(same, other)
  assert difference.startswith("x_train: (2, 3, 3) uint8 sha256 ")
  assert same["x_train"]["sha256"][:12] in difference and other["x_train"]["sha256"][:12] in difference
  assert first_difference(same, fingerprint({"x_train": _dataset().x_train})) == \
      f"x_test: (1, 3, 3) uint8 sha256 {same['x_test']['sha256'][:12]} vs absent"


def test_check_data_names_both_files_and_notes_a_run_without_fingerprint(tmp_path):
  source = {"data_file": "old.npz", "data_dir": None}
  assert "is missing" in run_folder.check_data(str(tmp_path), dataset_fingerprint(_dataset()), source)
  run_folder.write_data_fingerprint(str(tmp_path), dataset_fingerprint(_dataset()), source)
  assert run_folder.check_data(str(tmp_path), dataset_fingerprint(_dataset()), {"data_file": "copy.npz"}) is None
  with pytest.raises(run_folder.DataMismatchError) as error:
    run_folder.check_data(str(tmp_path), dataset_fingerprint(_dataset(flip=True)), {"data_file": "new.npz"})
  message = str(error.value)
  assert "data_file old.npz then, data_file new.npz now (x_train: (2, 3, 3) uint8" in message
  assert "\n" not in message


def test_check_free_names_a_live_holder_and_takes_nothing(tmp_path):
  run_folder.check_free(str(tmp_path))  # no lock file
  lock = run_folder.RunLock(str(tmp_path))
  lock.acquire()
  with pytest.raises(run_folder.FolderInUseError, match=f"process {os.getpid()}"):
    run_folder.check_free(str(tmp_path))
  lock.release()
  (tmp_path / run_folder.LOCK).write_text(json.dumps({"pid": _dead_pid()}))  # stale: free
  run_folder.check_free(str(tmp_path))
  again = run_folder.RunLock(str(tmp_path))
  assert "stale lock" in again.acquire()
  again.release()
