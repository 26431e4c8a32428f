"""Nothing lost around run folders, through ``bayesbinn-train`` (issue 26, items 1-4, 10, 11):
the user's own files, odd folder names, two runs into one folder, other data on resume, a
damaged newest checkpoint, and SIGINT/SIGTERM. The library pieces are tested in
test_run_folder.py and test_interrupt.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.train import run_folder
from cli_helpers import QUICK, REPO, cli_command, comparable, read_records, read_summary, write_images

EPOCHS = 3


def _args(data_file: str, *extra: str) -> list[str]:
  return [*QUICK, "--data-file", data_file, "--epochs", str(EPOCHS), "--quiet", "--set", "batch_size=50",
          "--set", "test_samples=2", *extra]


def run_cli(argv: list[str]) -> tuple[int, str, list[str]]:
  """``main(argv)`` in this process: its exit status, stdout and the lines of stderr."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    try:
      code = main(argv)
    except SystemExit as exit_info:
      code = exit_info.code
  return code, out.getvalue(), err.getvalue().splitlines()


def snapshot(folder) -> dict[str, bytes | None]:
  listing = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs:
      listing[os.path.relpath(os.path.join(root, name), folder)] = None
    for name in files:
      with open(os.path.join(root, name), "rb") as handle:
        listing[os.path.relpath(os.path.join(root, name), folder)] = handle.read()
  return listing


def _refused(argv: list[str], *words: str) -> str:
  code, _, lines = run_cli(argv)
  assert code == 2 and len(lines) == 1, (code, lines)
  for word in words:
    assert word in lines[0], (word, lines[0])
  return lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
  return write_images(tmp_path_factory.mktemp("data") / "d.npz", num_train=300)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_file) -> str:
  out = str(tmp_path_factory.mktemp("straight") / "out")
  assert run_cli([*_args(data_file), "--out", out])[0] == 0
  return out


@pytest.fixture
def finished(tmp_path, straight) -> str:
  out = str(tmp_path / "finished")
  shutil.copytree(straight, out)
  return out


# ------------------------------------------------------------------ item 1: the user's own files
def test_an_out_folder_of_the_users_files_is_refused_and_left_as_it_was(tmp_path, data_file):
  out = tmp_path / "mine"
  (out / "checkpoints" / "5").mkdir(parents=True)
  (out / "checkpoints" / "5" / "weights.bin").write_bytes(b"precious")
  (out / "notes.txt").write_text("mine")
  before = snapshot(out)
  for resume in ([], ["--resume"]):
    _refused([*_args(data_file), "--out", str(out), *resume], str(out), "holds no run of bayesbinn_jax")
    assert snapshot(out) == before


def test_files_of_the_user_inside_a_run_are_not_removed_when_it_resumes(finished, data_file):
  # A folder named like an old checkpoint, put into a run's checkpoints/: the resumed run saves
  # epoch 3 again and prunes its own old ones (Orbax's max_to_keep removed this "1" too).
  mine = os.path.join(finished, "checkpoints", "1")
  os.makedirs(mine)
  open(os.path.join(mine, "weights.bin"), "wb").write(b"precious")
  shutil.rmtree(os.path.join(finished, "checkpoints", str(EPOCHS)))
  os.remove(os.path.join(finished, "summary.json"))
  code, out, lines = run_cli([*_args(data_file), "--out", finished, "--resume"])
  assert code == 0, lines
  assert f"after epoch {EPOCHS - 1} of {EPOCHS}" in out
  assert open(os.path.join(mine, "weights.bin"), "rb").read() == b"precious"
  assert sorted(os.listdir(os.path.join(finished, "checkpoints"))) == ["1", "2", "3", "written.json"]


# ------------------------------------------------------------------ item 2: folder and file names
ODD = "a b ü $HOME 'q' \"d\" ;&!|{x,y}<>()#%~=,+@`-"


def test_odd_names_round_trip_through_training_resume_and_evaluate(tmp_path, straight, data_file):
  folder = tmp_path / ODD
  folder.mkdir()
  odd_data = str(folder / "-data ü;$'.npz")
  shutil.copy(data_file, odd_data)
  out = str(folder / "-run ü$'\"&")
  assert run_cli([*_args(odd_data), f"--out={out}"])[0] == 0
  assert comparable(read_summary(out)) == comparable(read_summary(straight))
  os.remove(os.path.join(out, "summary.json"))
  code, _, lines = run_cli([*_args(odd_data), f"--out={out}", "--resume"])
  assert code == 0, lines
  assert comparable(read_summary(out)) == comparable(read_summary(straight))
  code, _, lines = run_cli(["--evaluate", f"--out={out}", "--no-figures", "--quiet"])
  assert code == 0, lines
  evaluated = json.load(open(os.path.join(out, "evaluation", "summary.json")))
  assert evaluated["evaluated_epoch"] == EPOCHS and evaluated["test_accuracy"] == read_summary(straight)["test_accuracy"]


@pytest.mark.parametrize("name", ["x[1]", "star*", "gs:"])
def test_names_orbax_mishandles_are_refused_in_one_line_before_training(tmp_path, data_file, name):
  out = tmp_path / name / "run"
  _refused([*_args(data_file), "--out", str(out)], str(out), "checkpoints cannot be written")
  assert not os.path.exists(tmp_path / name)


def test_evaluate_is_refused_while_a_run_holds_the_folder(finished):
  lock = run_folder.RunLock(finished)
  lock.acquire()
  try:
    _refused(["--evaluate", "--out", finished, "--no-figures"], f"in use by another run: process {os.getpid()}")
  finally:
    lock.release()
  assert not os.path.exists(os.path.join(finished, "evaluation"))


# ------------------------------------------------------------------ item 4: other data on resume
def test_resume_with_other_data_is_refused_naming_both(tmp_path, finished, data_file):
  other = write_images(tmp_path / "other.npz", num_train=300, seed=5)  # same shapes, other pixels
  os.remove(os.path.join(finished, "summary.json"))
  before = snapshot(finished)
  line = _refused([*_args(other), "--out", finished, "--resume"], f"data_file {data_file} then",
                  f"data_file {other} now", "x_test: (100, 8, 8, 1) uint8 sha256")
  assert "\n" not in line and snapshot(finished) == before


def test_a_run_without_fingerprint_resumes_with_a_note(finished, straight, data_file):
  os.remove(os.path.join(finished, "data_fingerprint.json"))
  os.remove(os.path.join(finished, "summary.json"))
  code, out, lines = run_cli([*_args(data_file), "--out", finished, "--resume"])
  assert code == 0, lines
  assert "data_fingerprint.json is missing (a run started by an earlier version)" in out
  assert os.path.exists(os.path.join(finished, "data_fingerprint.json"))
  assert comparable(read_summary(finished)) == comparable(read_summary(straight))


# ------------------------------------------------------------------ item 10: a damaged newest checkpoint
def test_resume_falls_back_to_the_newest_intact_checkpoint(finished, straight, data_file):
  newest = os.path.join(finished, "checkpoints", str(EPOCHS))
  files = [os.path.join(root, n) for root, _, names in os.walk(os.path.join(newest, "state")) for n in names]
  path = max(files, key=os.path.getsize)
  content = bytearray(open(path, "rb").read())
  content[len(content) // 2] ^= 0x01  # one flipped bit
  open(path, "wb").write(bytes(content))
  os.remove(os.path.join(finished, "summary.json"))
  code, out, lines = run_cli([*_args(data_file), "--out", finished, "--resume"])
  assert code == 0, lines
  assert f"note: skipped the damaged checkpoint {newest} (it is corrupt: its file " \
         f"{os.path.relpath(path, newest)} differs from the CRC-32 saved with it)" in out
  assert f"after epoch {EPOCHS - 1} of {EPOCHS}" in out
  assert comparable(read_summary(finished)) == comparable(read_summary(straight))
  assert [r["epoch"] for r in read_records(finished)] == list(range(1, EPOCHS + 1))


# ------------------------------------------------------------------ items 3 and 11: real processes
# 1620 steps an epoch (18,000 images, 10% validation, batch 10): seconds of training to interrupt
# (an epoch of 540 steps took 0.7 s on a 2-core AVX-512 Xeon, less than the 0.5 s of CPU time
# the signal test waits after a checkpoint, so the run had finished before the signal)
LONG = ["--set", "batch_size=10"]
LONG_STEPS = 1620


@pytest.fixture(scope="module")
def long_data(tmp_path_factory) -> str:
  return write_images(tmp_path_factory.mktemp("long") / "long.npz", num_train=18000)


@pytest.fixture(scope="module")
def long_straight(tmp_path_factory, long_data) -> str:
  out = str(tmp_path_factory.mktemp("long_straight") / "out")
  assert run_cli([*_args(long_data, *LONG), "--out", out])[0] == 0
  return out


def _cpu_seconds(pid: int) -> float:
  """The CPU time (user + system) process ``pid`` has used so far, from /proc."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(condition, process, timeout=240.0) -> None:
  began = time.monotonic()
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() - began < timeout
    time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_a_step_saves_there_and_resume_gives_the_same_summary(
    tmp_path, long_data, long_straight, signum, status):
  out = str(tmp_path / "out")
  argv = [*_args(long_data, *LONG), "--out", out]
  first = subprocess.Popen(cli_command(*argv), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  # The lock is taken (flock) before its holder's pid is written into it: wait for the pid.
  lock = os.path.join(out, "run.lock")
  _wait_for(lambda: os.path.exists(lock) and os.path.getsize(lock) > 0, first)
  if signum == signal.SIGTERM:
    # Item 3: a second run into the same folder, while the first holds it (held still by SIGSTOP
    # while the second starts), is refused naming it, with and without --resume. The second run
    # is main() in this process: another process than the first all the same (the lock is the
    # first's flock and pid), without a second interpreter's start (~5 s of CPU each).
    first.send_signal(signal.SIGSTOP)
    try:
      for resume in ([], ["--resume"]):
        code, _, lines = run_cli([*argv, *resume])
        assert code == 2 and len(lines) == 1, (code, lines)
        assert f"is in use by another run: process {first.pid} on " in lines[0]
    finally:
      first.send_signal(signal.SIGCONT)
  # Epoch 1 done and saved, then 0.5 s more of the run's own CPU time: the run is past the
  # checkpoint's last writes and inside epoch 2's 1620 steps (whatever the machine's load: wall time
  # after the checkpoint is no measure of that under load), and the signal is delivered on SIGCONT.
  _wait_for(lambda: os.path.exists(os.path.join(out, "checkpoints", "1", "file_crcs.json")), first)
  cpu_at_checkpoint = _cpu_seconds(first.pid)
  _wait_for(lambda: _cpu_seconds(first.pid) > cpu_at_checkpoint + 0.5, first)
  first.send_signal(signal.SIGSTOP)
  first.send_signal(signum)
  first.send_signal(signal.SIGCONT)
  _, err = first.communicate(timeout=300)
  lines = [line for line in err.splitlines() if line.strip()]
  assert first.returncode == status and len(lines) == 1, (first.returncode, err)
  assert lines[0].startswith(f"bayesbinn-train: stopped by {signal.Signals(signum).name} after epoch 1, step ")
  assert f" of {LONG_STEPS} of epoch 2: checkpoint " in lines[0]
  checkpoint = lines[0].split(": checkpoint ")[1].split("; resume: ")[0]
  assert os.path.isdir(checkpoint) and os.path.dirname(checkpoint) == os.path.join(out, "checkpoints")
  assert lines[0].endswith("; resume: bayesbinn-train " + " ".join(argv) + " --resume")
  assert not os.path.exists(os.path.join(out, "run.lock"))
  # The seconds epoch 2 trained before the signal are saved with its steps, and its record
  # after the resume counts them (the summary's train_seconds sums the records).
  with open(os.path.join(checkpoint, "meta", "metadata"), encoding="utf-8") as f:
    saved = json.load(f)["progress"]
  assert saved["epoch"] == 1 and saved["step"] > 0 and saved["seconds"] > 0
  began = time.perf_counter()
  code, said, _ = run_cli([*argv, "--resume"])
  resume_seconds = time.perf_counter() - began
  assert code == 0 and "resuming permuted-mnist / bayesbinn " in said
  assert comparable(read_summary(out)) == comparable(read_summary(long_straight))
  assert read_records(out)[-1]["train_loss"] == read_records(long_straight)[-1]["train_loss"]
  assert [r["epoch"] for r in read_records(out)] == list(range(1, EPOCHS + 1))
  epoch2 = read_records(out)[1]["seconds"]
  assert saved["seconds"] < epoch2 < saved["seconds"] + resume_seconds


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, data_file, straight):
  out = str(tmp_path / "out")
  argv = [*_args(data_file), "--out", out]
  killed = subprocess.Popen(cli_command(*argv), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for(lambda: os.path.exists(os.path.join(out, "config.json")), killed)
  holder = json.load(open(os.path.join(out, "run.lock")))
  assert holder["pid"] == killed.pid
  killed.kill()
  killed.wait()
  code, said, lines = run_cli([*argv, "--resume"])
  assert code == 0, lines
  assert f"note: took over the stale lock {os.path.join(out, 'run.lock')} of process {killed.pid}" in said
  assert comparable(read_summary(out)) == comparable(read_summary(straight))
