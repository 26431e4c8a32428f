"""Reliability end to end: hostile input never touches results, checkpoints fit or say why,
a run killed at any moment resumes to the same summary, and the same seed trains bitwise
the same network.

Every refused call must end with exit status 2 and exactly one line on stderr naming the
argument or file at fault, and must leave an existing output directory byte for byte as
it was.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.experiments.config import build_config, method_of
from bayesbinn_jax.nn import ContinualMLP
from bayesbinn_jax.optim.bayesbinn import BayesBiNNState
from bayesbinn_jax.optim.nested import find_state
from bayesbinn_jax.train.checkpoint import FILE_CRCS, Checkpointer, CheckpointError
from bayesbinn_jax.train.engine import create_train_state, make_train_step
from bayesbinn_jax.train.keys import purpose_key
from cli_helpers import REPO, SMALL, cli_command, comparable, read_records, read_summary, write_images

NUM_TRAIN = 600  # 540 to train on after the 10% validation split: 10 batches of 50
EPOCHS = 4


def _args(data_file: str) -> list[str]:
  return [*SMALL, "--data-file", data_file, "--epochs", str(EPOCHS), "--quiet",
          "--set", "batch_size=50", "--set", "test_samples=2"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
  return write_images(tmp_path_factory.mktemp("data") / "d.npz", num_train=NUM_TRAIN)


def _timed_run(out: str, data_file: str) -> float:
  """The wall time of an uninterrupted run of ``python -m bayesbinn_jax`` into ``out``."""
  began = time.perf_counter()
  result = subprocess.run(cli_command(*_args(data_file), "--out", out), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return time.perf_counter() - began


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_file) -> str:
  """The output dir of an uninterrupted run of ``python -m bayesbinn_jax``."""
  out = str(tmp_path_factory.mktemp("straight") / "out")
  _timed_run(out, data_file)
  return out


@pytest.fixture(scope="module")
def run_seconds(tmp_path_factory, straight, data_file) -> float:
  """The wall time of a second uninterrupted run, the first (``straight``) having compiled the
  run's programs into the session's compilation cache (tests/conftest.py): the runs that
  :func:`test_sigkill_at_random_moments_then_resume_gives_the_same_summary` kills load them
  from there too, so its moments spread over a run as long as theirs."""
  return _timed_run(str(tmp_path_factory.mktemp("again") / "out"), data_file)


@pytest.fixture
def finished(tmp_path, straight) -> str:
  """A copy of the finished run (config, metrics, summary, checkpoints, figures)."""
  out = str(tmp_path / "finished")
  shutil.copytree(straight, out)
  return out


def snapshot(folder: str) -> dict[str, str]:
  """Every file's and folder's relative path with the SHA-256 of its bytes ("dir" for folders)."""
  listing = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs:
      listing[os.path.relpath(os.path.join(root, name), folder)] = "dir"
    for name in files:
      with open(os.path.join(root, name), "rb") as handle:
        listing[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(handle.read()).hexdigest()
  return listing


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
  """``main(argv)`` in this process: its exit status and the lines it wrote to stderr."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      code = main(argv)
    except SystemExit as exit_info:
      code = exit_info.code
  return code, err.getvalue().splitlines()


def assert_refused(argv: list[str], out: str, *words: str) -> str:
  """Runs ``argv --out out``: exit 2, one stderr line holding ``words``, ``out`` untouched."""
  before = snapshot(out) if os.path.exists(out) else None
  code, lines = run_cli([*argv, "--out", out])
  assert code == 2, (argv, code, lines)
  assert len(lines) == 1 and "Traceback" not in lines[0], (argv, lines)
  for word in words:
    assert word in lines[0], (argv, word, lines[0])
  if before is None:
    assert not os.path.exists(out), argv
  else:
    assert snapshot(out) == before, argv
  return lines[0]


# ----------------------------------------------------------------- hostile arguments

HOSTILE_ARGUMENTS = [
    (["--set", "epochs=-1"], "epochs"),
    (["--set", "epochs=0"], "epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--set", "epochs=2.5"], "epochs"),
    (["--set", "epochs=99999999999999999999"], "epochs"),
    (["--set", "batch_size=0"], "batch_size"),
    (["--set", f"batch_size={NUM_TRAIN}"], "batch_size"),  # larger than the 540 left to train on
    (["--set", "eval_batch_size=0"], "eval_batch_size"),
    (["--set", "val_fraction=1.0"], "val_fraction"),
    (["--set", "val_fraction=nan"], "val_fraction"),
    (["--set", "num_tasks=0"], "num_tasks"),
    (["--set", "train_subset=-1"], "train_subset"),
    (["--set", "train_subset=1"], "train_subset"),  # nothing left to split a validation set from
    (["--set", "lr=-0.1"], "lr"),
    (["--set", "lr=nan"], "lr"),
    (["--set", "lr=inf"], "lr"),
    (["--set", "lr="], "lr"),
    (["--set", "temperature=0"], "temperature"),
    (["--set", "temperature=-1e-3"], "temperature"),
    (["--set", "momentum=1"], "momentum"),
    (["--set", "test_samples=-2"], "test_samples"),
    (["--set", "augment=maybe"], "augment"),
    (["--set", "rng=mt19937"], "rng"),
    (["--set", "lr_milestones=[NaN]"], "lr_milestones"),
    (["--set", "lr_milestones=[-1]"], "lr_milestones"),
    (["--set", "lr_milestones=[true]"], "lr_milestones"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--set", ""], "--set"),
    (["--set", "=1"], "--set"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--cl-prior", "sometimes"], "--cl-prior"),
    (["--malloc", "sometimes"], "--malloc"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--data-dir", "DATA_FILE"], "--data-dir"),  # a file, not a directory
    (["--data-file", "/no/such/file.npz"], "--data-file"),
]


@pytest.mark.parametrize("resume", [False, True], ids=["fresh-out", "resume-finished-run"])
@pytest.mark.parametrize("extra, name", HOSTILE_ARGUMENTS, ids=[" ".join(a) for a, _ in HOSTILE_ARGUMENTS])
def test_hostile_arguments_end_in_one_line_and_touch_nothing(tmp_path, finished, data_file, extra, name,
                                                             resume):
  extra = [data_file if word == "DATA_FILE" else word for word in extra]
  if resume:
    assert_refused([*_args(data_file), *extra, "--resume"], finished, name)
  else:
    assert_refused([*_args(data_file), *extra], str(tmp_path / "fresh"), name)


_CONFIG = {k: v for k, v in build_config("permuted-mnist", "bayesbinn").as_dict().items() if k != "seed"}
_POSITIVE_INTS = ("epochs", "batch_size", "eval_batch_size", "train_samples", "num_tasks", "eval_every",
                  "checkpoint_every", "train_set_scale")
_POSITIVE_FLOATS = ("lr", "lr_end", "temperature", "lambda_init", "lr_decay")
_NON_NEGATIVE_INTS = ("test_samples", "train_subset", "max_nonfinite_steps")
_NON_NEGATIVE_FLOATS = ("kl_weight", "lambda_init_std", "momentum", "val_fraction")
_GARBAGE = ("", " ", "nan", "NaN", "inf", "-inf", "1e999", "abc", "1,2", "0x10", "[1]", "None")
_BAD_MILESTONES = ("[NaN]", "[Infinity]", "[true]", "[-1]", "[1.5]", "{}", "[1,", "x", "1e999", "[[1]]")


def _set(key: str, value: object) -> tuple[list[str], str]:
  return ["--set", f"{key}={value}"], key


_hostile = st.one_of(
    st.builds(_set, st.sampled_from(_POSITIVE_INTS),
              st.integers(max_value=0) | st.integers(min_value=2**31)),
    st.builds(_set, st.sampled_from(_POSITIVE_FLOATS), st.floats(max_value=0.0) | st.just(float("nan"))),
    st.builds(_set, st.sampled_from(_NON_NEGATIVE_INTS), st.integers(max_value=-1)),
    st.builds(_set, st.sampled_from(_NON_NEGATIVE_FLOATS),
              st.floats(max_value=-1e-300) | st.just(float("nan"))),
    st.builds(_set, st.sampled_from(("momentum", "val_fraction")), st.floats(min_value=1.0)),
    st.builds(_set, st.sampled_from(sorted(set(_CONFIG) - {"lr_milestones"})), st.sampled_from(_GARBAGE)),
    st.builds(_set, st.just("lr_milestones"), st.sampled_from(_BAD_MILESTONES)),
    st.builds(_set, st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in _CONFIG),
              st.just(1)),
    st.builds(_set, st.just("batch_size"), st.integers(NUM_TRAIN - 59, 2**31 - 1)),
    st.builds(lambda v: (["--epochs", str(v)], "--epochs"), st.integers(max_value=0)),
    st.builds(lambda v: (["--seed", str(v)], "--seed"),
              st.integers(max_value=-1) | st.integers(min_value=2**32)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_hostile, resume=st.booleans())
def test_fuzzed_arguments_end_in_one_line_and_touch_nothing(tmp_path, finished, data_file, case, resume):
  extra, name = case
  if resume:
    assert_refused([*_args(data_file), *extra, "--resume"], finished, name)
  else:
    assert_refused([*_args(data_file), *extra], str(tmp_path / "fresh"), name)


# -------------------------------------------------------------------- hostile data


def _npz_bytes(tmp_path, **replace) -> bytes:
  path = write_images(tmp_path / "valid.npz", num_train=NUM_TRAIN, **replace)
  with open(path, "rb") as handle:
    return handle.read()


HOSTILE_DATA = {
    "wrong-image-shape": (lambda t: _npz_bytes(t, x_test=np.zeros((100, 9, 9), np.uint8)), "shape"),
    "4-d-labels": (lambda t: _npz_bytes(t, y_train=np.zeros((NUM_TRAIN, 1, 1, 1), np.uint8)), "y_train"),
    "int32-images": (lambda t: _npz_bytes(t, x_train=np.zeros((NUM_TRAIN, 8, 8), np.int32)), "dtype"),
    "float-labels": (lambda t: _npz_bytes(t, y_train=np.zeros(NUM_TRAIN, np.float32)),
                     "labels must be integers"),
    "nan-images": (lambda t: _npz_bytes(t, x_train=np.full((NUM_TRAIN, 8, 8), np.nan, np.float32)), "NaN"),
    "negative-label": (lambda t: _npz_bytes(t, y_train=np.full(NUM_TRAIN, -1, np.int64)), "negative label"),
    "too-few-labels": (lambda t: _npz_bytes(t, y_test=np.zeros(99, np.uint8)), "labels"),
    "empty-images": (lambda t: _npz_bytes(t, x_train=np.zeros((0, 8, 8), np.uint8),
                                          y_train=np.zeros(0, np.uint8)), "empty"),
    "one-class": (lambda t: _npz_bytes(t, y_train=np.zeros(NUM_TRAIN, np.uint8),
                                       y_test=np.zeros(100, np.uint8)), "2 classes"),
    "missing-array": (lambda t: _npz_bytes(t, y_test=None), "y_test"),
    "pickled-objects": (lambda t: _pickled_npz(t), "pickled"),
    "truncated": (lambda t: _npz_bytes(t)[:3000], "truncated"),
    "not-an-npz": (lambda t: b"x_train,y_train\n1,2\n", "not an .npz archive"),
    "empty-file": (lambda t: b"", "not an .npz archive"),
}


def _pickled_npz(tmp_path) -> bytes:
  path = tmp_path / "objects.npz"
  objects = np.empty(NUM_TRAIN, dtype=object)
  objects[:] = [[i] for i in range(NUM_TRAIN)]
  np.savez(path, x_train=objects, y_train=objects, x_test=objects, y_test=objects)
  return path.read_bytes()


@pytest.mark.parametrize("kind", sorted(HOSTILE_DATA))
def test_hostile_data_files_end_in_one_line_and_touch_nothing(tmp_path, finished, data_file, kind):
  content, problem = HOSTILE_DATA[kind]
  bad = tmp_path / f"{kind}.npz"
  bad.write_bytes(content(tmp_path))
  args = [*_args(data_file), "--data-file", str(bad)]  # the last --data-file wins
  assert_refused(args, str(tmp_path / "fresh"), str(bad), problem)
  assert_refused([*args, "--resume"], finished, str(bad), problem)


def test_a_directory_as_data_file_is_refused(tmp_path, finished, data_file):
  args = [*_args(data_file), "--data-file", str(tmp_path)]
  assert_refused([*args, "--resume"], finished, str(tmp_path), "not a regular file")


def test_an_out_path_through_a_file_is_refused(tmp_path, data_file):
  blocker = tmp_path / "file"
  blocker.write_text("precious")
  for out in (blocker, blocker / "run"):
    assert_refused(_args(data_file), str(out), "--out", "is a file, not a directory")
  assert blocker.read_text() == "precious"


# ------------------------------------------------------ resuming with other settings


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--set", "temperature=0.5"], ["temperature=0.01", "temperature=0.5"]),
        (["--set", "lr=0.01"], ["lr=0.001", "lr=0.01"]),
        (["--set", "momentum=0.5"], ["momentum=0.0", "momentum=0.5"]),
        (["--epochs", "5"], ["epochs=4", "epochs=5"]),
        (["--cl-prior", "none"], ["cl_prior='posterior'", "cl_prior='none'"]),
        (["--seed", "1"], ["seed=0", "seed=1"]),
    ],
    ids=["temperature", "lr", "momentum", "epochs", "cl-prior", "seed"],
)
def test_resume_with_other_settings_names_the_setting(finished, data_file, extra, words):
  assert_refused([*_args(data_file), *extra, "--resume"], finished, *words)


@pytest.mark.parametrize(
    "shape, classes, words",
    [((10, 10), 4, ["(64, 100)", "(100, 100)"]), ((8, 8), 5, ["(4,)", "(5,)"])],
    ids=["other-input-size", "other-class-count"],
)
def test_resume_into_another_network_names_the_array(tmp_path, finished, data_file, shape, classes, words):
  # The same settings, but data that make another network: the checkpoint's arrays do not fit.
  other = write_images(tmp_path / "other.npz", num_train=NUM_TRAIN, shape=shape, classes=classes)
  os.remove(os.path.join(finished, "data_fingerprint.json"))  # else the other data are named first
  line = assert_refused([*_args(data_file), "--data-file", other, "--resume"], finished,
                        "does not fit this network", *words)
  assert "checkpoint" in line and "in this run" in line


def _latest_checkpoint(out: str) -> str:
  folder = os.path.join(out, "checkpoints")
  return os.path.join(folder, str(max(int(n) for n in os.listdir(folder) if n.isdigit())))


def _largest_file(folder: str) -> str:
  files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
  return max(files, key=os.path.getsize)


def _garble(path: str) -> None:
  content = bytearray(open(path, "rb").read())
  middle = len(content) // 2
  content[middle:middle + 64] = bytes(b ^ 0x5A for b in content[middle:middle + 64])
  open(path, "wb").write(bytes(content))


def _truncate(path: str) -> None:
  content = open(path, "rb").read()
  open(path, "wb").write(content[:len(content) // 2])


CORRUPTIONS = {
    # kind: (damage the checkpoint's folder, words of the message)
    "garbled-array-file": (lambda ckpt: _garble(_largest_file(os.path.join(ckpt, "state"))),
                           ["corrupt", "state/", "differs from the CRC-32"]),
    "truncated-array-file": (lambda ckpt: _truncate(_largest_file(os.path.join(ckpt, "state"))),
                             ["corrupt", "state/", "differs from the CRC-32"]),
    "truncated-manifest": (lambda ckpt: _truncate(os.path.join(ckpt, "state", "manifest.ocdbt")),
                           ["corrupt", "state/manifest.ocdbt"]),
    "garbled-metadata": (lambda ckpt: open(os.path.join(ckpt, "meta", "metadata"), "w").write("{"),
                         ["corrupt", "meta/metadata"]),
    "missing-state": (lambda ckpt: shutil.rmtree(os.path.join(ckpt, "state")),
                      ["corrupt", "state/", "missing"]),
    "garbled-file-list": (lambda ckpt: open(os.path.join(ckpt, FILE_CRCS), "w").write("{"),
                          ["unreadable"]),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_on_resume_ends_in_one_line(finished, data_file, kind):
  # Every checkpoint damaged (with one intact, resume falls back to it: test_run_folder_cli.py).
  damage, words = CORRUPTIONS[kind]
  checkpoint = _latest_checkpoint(finished)
  for name in os.listdir(os.path.dirname(checkpoint)):
    if name.isdigit():
      damage(os.path.join(os.path.dirname(checkpoint), name))
  assert_refused([*_args(data_file), "--resume"], finished, f"checkpoint {checkpoint}", *words)


def test_resume_needs_the_metrics_of_every_checkpointed_epoch(finished, data_file):
  path = os.path.join(finished, "metrics.jsonl")
  lines = open(path).read().splitlines(keepends=True)
  open(path, "w").write("".join(lines[:1] + lines[2:]))  # epoch 2 lost
  assert_refused([*_args(data_file), "--resume"], finished, "metrics.jsonl", f"epochs 1 to {EPOCHS}")
  open(path, "w").write("{not json\n")
  assert_refused([*_args(data_file), "--resume"], finished, "metrics.jsonl", "unreadable")


# ---------------------------------------------------------- partial starts and kills


def test_resume_of_a_partial_start_trains_from_scratch(tmp_path, straight, data_file):
  # Killed in epoch 1: config.json and an empty metrics.jsonl, and under checkpoints/ only
  # the temporary folder of a save that never finished.
  out = tmp_path / "partial"
  (out / "checkpoints" / "1.orbax-checkpoint-tmp-1").mkdir(parents=True)
  shutil.copy(os.path.join(straight, "config.json"), out / "config.json")
  (out / "metrics.jsonl").write_text("")
  assert_refused(_args(data_file), str(out), "already holds a run", "--resume")
  assert_refused([*_args(data_file), "--set", "temperature=0.5", "--resume"], str(out),
                 "config.json", "temperature=0.5")
  assert main([*_args(data_file), "--out", str(out), "--resume"]) == 0
  assert comparable(read_summary(out)) == comparable(read_summary(straight))
  assert [r["epoch"] for r in read_records(out)] == list(range(1, EPOCHS + 1))


def test_resume_of_a_missing_folder_starts_a_new_run_and_says_so(tmp_path, straight, data_file,
                                                                 capsys):
  # A run killed before it made its folder must still resume (the SIGKILL test below), so
  # --resume into a missing folder trains from scratch; a mistyped path is said, not silent.
  out = tmp_path / "no-such-run"
  assert main([*_args(data_file), "--out", str(out), "--resume"]) == 0
  said = capsys.readouterr().out
  assert f"--out {out} did not exist, so there was no run to resume: a new run starts there" in said
  assert comparable(read_summary(out)) == comparable(read_summary(straight))


def test_resume_refuses_a_finished_run_without_checkpoints(finished, data_file):
  shutil.rmtree(os.path.join(finished, "checkpoints"))
  assert_refused([*_args(data_file), "--resume"], finished, "summary.json", "no checkpoint")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_summary(tmp_path, straight, run_seconds,
                                                                    data_file):
  rng = np.random.default_rng(8)
  # One moment in each third of the uninterrupted run's time (start-up and data, training,
  # the last epochs and outputs), then one anywhere in the run of the --resume that follows.
  first_kills = (np.arange(3) + rng.uniform(size=3)) / 3 * run_seconds
  for trial, moments in enumerate(zip(first_kills, rng.uniform(0.0, run_seconds, size=3), strict=True)):
    out = str(tmp_path / f"killed{trial}")
    for attempt, moment in enumerate(moments):
      resume = ["--resume"] if attempt else []
      process = subprocess.Popen(cli_command(*_args(data_file), "--out", out, *resume), cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      time.sleep(moment)
      process.send_signal(signal.SIGKILL)
      _, err = process.communicate()
      assert process.returncode in (0, -signal.SIGKILL), (trial, moments, err)
    # Whatever the moments (before the output dir, before config.json, inside an epoch, during
    # a save, after the summary), --resume continues the run to the uninterrupted result.
    assert main([*_args(data_file), "--out", out, "--resume"]) == 0, (trial, moments)
    assert comparable(read_summary(out)) == comparable(read_summary(straight)), (trial, moments)
    assert [r["epoch"] for r in read_records(out)] == list(range(1, EPOCHS + 1)), (trial, moments)


# --------------------------------------------------------------------- determinism


def _checkpoint_lambda(out: str) -> list[np.ndarray]:
  """The lambda arrays of the latest checkpoint of the run in ``out``."""
  arrays = ocp.StandardCheckpointer().restore(os.path.join(_latest_checkpoint(out), "state"))
  return [np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(arrays["opt_state"])
          if "lam" in jax.tree_util.keystr(path, simple=True, separator="/").split("/")]


def test_same_seed_gives_bitwise_the_same_lambda_through_the_cli(tmp_path, straight, data_file):
  again, other = str(tmp_path / "again"), str(tmp_path / "other-seed")
  assert main([*_args(data_file), "--out", again]) == 0
  assert main([*_args(data_file), "--out", other, "--seed", "1"]) == 0
  reference = _checkpoint_lambda(straight)
  assert len(reference) == 3  # the three binary kernels of the MLP
  assert all(np.array_equal(a, b) for a, b in zip(reference, _checkpoint_lambda(again), strict=True))
  assert not any(np.array_equal(a, b) for a, b in zip(reference, _checkpoint_lambda(other), strict=True))
  assert comparable(read_summary(again)) == comparable(read_summary(straight))


def _state(optimizer: str = "bayesbinn", hidden: int = 100, seed: int = 0):
  config = build_config("permuted-mnist", optimizer, seed=seed, epochs=1)
  method = method_of(config, steps_per_epoch=20, train_set_size=640,
                        key=purpose_key(seed, "optimizer"))
  model = ContinualMLP(num_classes=4, hidden=hidden, quantizer=method.quantizer)
  return method, create_train_state(model, method, jnp.zeros((1, 8, 8, 1)), seed)


def _lambda_after_20_steps(seed: int) -> list[np.ndarray]:
  method, state = _state(seed=seed)
  step = make_train_step(method, "classification")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(20, 32, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 4, (20, 32))
  for i in range(20):
    state, _ = step(state, x[i], y[i])
  return [np.asarray(leaf) for leaf in jax.tree.leaves(find_state(state.opt_state, BayesBiNNState).lam)]


def test_same_seed_gives_bitwise_the_same_lambda_through_the_engine():
  first, second, other = _lambda_after_20_steps(0), _lambda_after_20_steps(0), _lambda_after_20_steps(1)
  assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
  assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


# ------------------------------------------------------------- Checkpointer directly

METADATA = {"experiment": "permuted-mnist", "optimizer": "any", "config": {"lr": 0.1}}


@functools.lru_cache(maxsize=None)
def _template(optimizer: str = "bayesbinn", hidden: int = 100, seed: int = 0):
  """A train state of ``_state`` (one compile per argument; restoring never changes it)."""
  return _state(optimizer, hidden, seed)[1]


def _saved(tmp_path, optimizer: str = "bayesbinn", hidden: int = 100) -> tuple[Checkpointer, object]:
  state = _template(optimizer, hidden)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  checkpointer.save(1, state, {**METADATA, "progress": {"epoch": 1}})
  return checkpointer, state


def test_checkpointer_writes_nothing_before_the_first_save(tmp_path):
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpointer.latest() is None and checkpointer.restore_latest(None, METADATA) is None
  assert not os.path.exists(tmp_path / "checkpoints")


def test_checkpointer_restores_the_state_bitwise(tmp_path):
  checkpointer, state = _saved(tmp_path)
  restored, meta = checkpointer.restore_latest(_template(seed=5), METADATA)
  assert meta["progress"] == {"epoch": 1}
  for a, b in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(state.opt_state), strict=True):
    assert np.array_equal(a, b)


def test_restore_into_another_network_names_the_array_and_both_shapes(tmp_path):
  checkpointer, _ = _saved(tmp_path, hidden=100)
  with pytest.raises(CheckpointError, match="does not fit this network") as error:
    checkpointer.restore_latest(_template(hidden=200), METADATA)
  message = str(error.value)
  assert "batch_stats/BatchNorm_0/mean" in message
  assert "(100,) float32 in the checkpoint but (200,) float32 in this run" in message


@pytest.mark.parametrize("saved, wanted",
                         [("bayesbinn", "ste"), ("bayesbinn", "adam"), ("adam", "bayesbinn")])
def test_restore_into_another_optimizer_names_the_state(tmp_path, saved, wanted):
  checkpointer, _ = _saved(tmp_path, optimizer=saved)
  with pytest.raises(CheckpointError, match="does not fit this network and optimizer") as error:
    checkpointer.restore_latest(_template(wanted), METADATA)
  assert "opt_state/" in str(error.value) and "\n" not in str(error.value)


def test_restore_with_other_metadata_names_the_key(tmp_path):
  checkpointer, state = _saved(tmp_path)
  with pytest.raises(CheckpointError, match=r"lr=0.1, but this run has lr=0.2"):
    checkpointer.restore_latest(state, {**METADATA, "config": {"lr": 0.2}})
  with pytest.raises(CheckpointError, match=r"optimizer='any', but this run has optimizer='ste'"):
    checkpointer.restore_latest(state, {**METADATA, "optimizer": "ste"})


def test_a_damaged_file_is_named_before_orbax_reads_it(tmp_path):
  checkpointer, state = _saved(tmp_path)
  _garble(_largest_file(str(tmp_path / "checkpoints" / "1" / "state")))
  with pytest.raises(CheckpointError, match=r"is corrupt: its file state/\S+ differs from the CRC-32"):
    checkpointer.restore_latest(state, METADATA)


def test_arrays_are_checked_when_the_save_was_killed_before_its_file_list(tmp_path):
  # Killed after Orbax finalised the checkpoint, before the file list was written: the
  # arrays' CRC-32 in the metadata still catches arrays that are not those saved.
  checkpointer, state = _saved(tmp_path)
  folder = tmp_path / "checkpoints" / "1"
  os.remove(folder / FILE_CRCS)
  meta = json.loads((folder / "meta" / "metadata").read_text())
  (folder / "meta" / "metadata").write_text(json.dumps({**meta, "crc32": meta["crc32"] ^ 1}))
  with pytest.raises(CheckpointError, match="its arrays differ from the CRC-32 saved with them"):
    checkpointer.restore_latest(state, METADATA)
