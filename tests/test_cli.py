"""End-to-end tests of the CLI and training engine on small generated data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.experiments.specs import EXPERIMENTS
from bayesbinn_jax.train.methods import OPTIMIZERS
from cli_helpers import QUICK, REPO, SMALL, cli_command, comparable, read_records, read_summary, write_images


def test_help_is_complete(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  for word in (*EXPERIMENTS, *OPTIMIZERS, "--set", "--resume", "--cl-prior", "--data-file",
               "--data-dir", "--out", "--seed", "--epochs", "--quiet", "--no-figures", "test_samples", "temperature"):
    assert word in text, word


@pytest.mark.parametrize(
    "argv, message",
    [
        (["mnist", "--set", "no_such_key=1"], "unknown key"),
        (["mnist", "--set", "lr=abc"], "--set lr='abc': expected a number"),
        (["mnist", "--set", "epochs=1.5"], "--set epochs='1.5': expected an integer"),   # was "a int"
        (["mnist", "--set", "lr_milestones=abc"], "expected numbers separated by commas"),  # "a tuple"
        (["mnist", "--set", "momentum=1.5"], "error: --set momentum=1.5: momentum must be in [0, 1)"),
        (["mnist", "--set", "temperature=-1"], "error: --set temperature=-1: temperature must be a finite"),
        (["two-moons", "--set", "temperature=-1"], "error: --set temperature=-1: temperature must be > 0"),
        (["mnist", "--set", "lr"], "--set takes key=value"),
        (["mnist", "--set", "rng=threefry"], "--set rng: renamed; use --set generator=threefry"),
        (["mnist", "--set", "param_dtype=float64"], "param_dtype must be one of float32, bfloat16, float16"),
        (["mnist", "--set", "activations=ternary"], "activations must be one of real, binary"),
        (["mnist", "--epochs", "-3"], "--epochs must be >= 1"),
        (["mnist", "--optimizer", "sgd"], "invalid choice"),
        (["mnist", "--data-file", "/no/such/file.npz"], "no such file"),
        (["imagenet"], "invalid choice"),
    ],
)
def test_bad_arguments_end_in_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert message in err[-1]


@pytest.mark.parametrize(
    "replace, problem",
    [
        (dict(y_test=None), "y_test"),
        (dict(y_train=np.full(300, -1, np.int64)), "label"),
        (dict(x_train=np.full((300, 8, 8), np.nan, np.float32)), "NaN"),
        (dict(x_test=np.zeros((100, 9, 9), np.uint8)), "shape"),
    ],
)
def test_invalid_data_stops_before_training(tmp_path, replace, problem, capsys):
  path = write_images(tmp_path / "bad.npz", **replace)
  out = tmp_path / "out"
  assert main([*SMALL, "--data-file", path, "--out", str(out), "--quiet"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "bad.npz" in err[0] and problem in err[0]
  assert not out.exists()


def test_existing_results_are_never_touched(tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "summary.json").write_text("precious")
  path = write_images(tmp_path / "d.npz")
  assert main([*SMALL, "--data-file", path, "--out", str(out)]) == 2
  assert "already holds a run" in capsys.readouterr().err
  assert (out / "summary.json").read_text() == "precious"
  assert sorted(os.listdir(out)) == ["summary.json"]


@pytest.mark.slow  # a whole run of the CLI (15-27 s on 2 cores)
def test_mnist_run_writes_every_output(tmp_path):
  path = write_images(tmp_path / "d.npz")
  out = str(tmp_path / "out")
  code = main(["mnist", "--data-file", path, "--out", out, "--epochs", "2", "--quiet",
               "--set", "batch_size=50", "--set", "test_samples=3"])
  assert code == 0
  summary = read_summary(out)
  for key in ("experiment", "optimizer", "epochs", "seed", "test_accuracy", "best_val_accuracy",
              "test_accuracy_at_best_val", "test_nll", "test_ece", "mc_test_accuracy", "train_seconds"):
    assert key in summary, key
  assert summary["experiment"] == "mnist" and summary["epochs"] == 2
  records = read_records(out)
  assert [r["epoch"] for r in records] == [1, 2]
  assert all("val_accuracy" in r and "test_ece" in r and "lr" in r for r in records)
  # The validation split holds 10% of the 300 training examples.
  assert summary["test_accuracy"] > 0.5
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["config"]["lr"] == 1e-4 and config["config"]["temperature"] == 1e-10
  for figure in ("training_curves.png", "reliability.png"):
    assert open(os.path.join(out, figure), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_two_moons(tmp_path, optimizer):
  out = str(tmp_path / optimizer)
  assert main(["two-moons", "--optimizer", optimizer, "--epochs", "300", "--out", out, "--quiet"]) == 0
  summary = read_summary(out)
  assert summary["train_accuracy"] >= 0.85, summary
  assert os.path.exists(os.path.join(out, "two_moons.png"))
  grid = np.load(os.path.join(out, "two_moons_grid.npz"))
  assert grid["mode_prob"].shape == (100, 100)
  assert ("mc_prob" in grid) == (optimizer == "bayesbinn")


def test_snelson_runs_on_the_embedded_data(tmp_path):
  out = str(tmp_path / "snelson")
  assert main(["snelson", "--epochs", "200", "--out", out, "--quiet", "--set", "test_samples=5"]) == 0
  summary = read_summary(out)
  assert {"train_rmse", "mc_train_rmse", "mc_train_nll"} <= set(summary)
  predictions = np.load(os.path.join(out, "snelson_predictions.npz"))
  assert predictions["mc_std"].shape == (301,)
  assert os.path.exists(os.path.join(out, "snelson.png"))


@pytest.mark.slow  # a whole run of the CLI (15-27 s on 2 cores)
def test_permuted_mnist_with_and_without_prior(tmp_path):
  path = write_images(tmp_path / "d.npz", num_train=200)
  summaries = {}
  for prior in ("posterior", "none"):
    out = str(tmp_path / prior)
    assert main(["permuted-mnist", "--data-file", path, "--out", out, "--epochs", "2", "--quiet",
                 "--cl-prior", prior, "--set", "num_tasks=3", "--set", "test_samples=4",
                 "--set", "lr=0.1"]) == 0
    summaries[prior] = read_summary(out)
    assert [len(row) for row in summaries[prior]["test_accuracy_matrix"]] == [1, 2, 3]
    assert len(summaries[prior]["avg_test_accuracy_after_task"]) == 3
    assert len(read_records(out)) == 6
    assert os.path.exists(os.path.join(out, "continual.png"))
  # Task 1 is the same either way; from task 2 on, the prior pulls lambda back towards the
  # previous posterior instead of towards zero.
  assert summaries["posterior"]["test_accuracy_matrix"][0] == summaries["none"]["test_accuracy_matrix"][0]
  assert summaries["posterior"]["mc_test_nll"] != summaries["none"]["mc_test_nll"]


def test_idx_directory_is_read(tmp_path):
  import gzip
  import struct

  rng = np.random.default_rng(0)
  folder = tmp_path / "idx"
  folder.mkdir()
  for prefix, n in (("train", 200), ("t10k", 50)):
    y = rng.integers(0, 3, n).astype(np.uint8)
    x = (y[:, None, None] * 80 + rng.integers(0, 20, (n, 6, 6))).astype(np.uint8)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
      handle.write(struct.pack(">IIII", 0x803, n, 6, 6) + x.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
      handle.write(struct.pack(">II", 0x801, n) + y.tobytes())
  out = str(tmp_path / "out")
  assert main(["permuted-mnist", "--data-dir", str(folder), "--out", out, "--epochs", "1",
               "--quiet", "--set", "num_tasks=1", "--set", "test_samples=0"]) == 0
  assert 0.0 <= read_summary(out)["test_accuracy_matrix"][0][0] <= 1.0
  assert json.load(open(os.path.join(out, "config.json")))["data_dir"] == str(folder)


def test_tfds_path_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # a declared dependency
  out = str(tmp_path / "out")
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=120):
    assert main(["permuted-mnist", "--out", out, "--epochs", "1", "--quiet",
                 "--set", "num_tasks=1", "--set", "test_samples=0"]) == 0
  assert "test_accuracy_matrix" in read_summary(out)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_summary(tmp_path):
  path = write_images(tmp_path / "d.npz", num_train=3000)
  args = [*QUICK, "--data-file", path, "--epochs", "5", "--quiet", "--set", "batch_size=50",
          "--set", "test_samples=2"]
  straight = str(tmp_path / "straight")
  assert main([*args, "--out", straight]) == 0

  killed = str(tmp_path / "killed")
  process = subprocess.Popen(cli_command(*args, "--out", killed), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(killed, "checkpoints", "2")) and time.time() < deadline:
    if process.poll() is not None:
      break
    time.sleep(0.05)
  time.sleep(0.3)  # land somewhere inside epoch 3
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  assert main([*args, "--out", killed, "--resume"]) == 0
  assert comparable(read_summary(killed)) == comparable(read_summary(straight))
  assert [r["epoch"] for r in read_records(killed)] == [1, 2, 3, 4, 5]


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
  path = write_images(tmp_path / "d.npz")
  out = str(tmp_path / "out")
  assert main([*QUICK, "--data-file", path, "--out", out, "--epochs", "1", "--quiet",
               "--set", "batch_size=50"]) == 0
  assert main([*QUICK, "--data-file", path, "--out", out, "--epochs", "1", "--quiet",
               "--set", "batch_size=50", "--set", "lr=1e-2", "--resume"]) == 2
  assert "lr=0.001" in capsys.readouterr().err
  assert main([*QUICK, "--optimizer", "ste", "--data-file", path, "--out", out, "--epochs", "1",
               "--quiet", "--set", "batch_size=50", "--resume"]) == 2
  assert "optimizer='bayesbinn'" in capsys.readouterr().err


@pytest.mark.slow
def test_four_simulated_devices_match_one(tmp_path):
  # This process's devices (one, unless XLA_FLAGS says otherwise) against 4 in a subprocess.
  if jax.device_count() == 4:
    pytest.skip("this process already has 4 devices")
  path = write_images(tmp_path / "d.npz")
  args = [*QUICK, "--data-file", path, "--epochs", "2", "--quiet", "--set", "batch_size=40",
          "--set", "eval_batch_size=40", "--set", "test_samples=2"]
  here, four = str(tmp_path / "here"), str(tmp_path / "four")
  assert main([*args, "--out", here]) == 0
  result = subprocess.run(cli_command(*args, "--out", four), cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert result.returncode == 0, result.stderr
  summaries = [read_summary(here), read_summary(four)]
  assert summaries[0]["devices"] == jax.device_count() and summaries[1]["devices"] == 4
  for key in ("train_loss", "test_nll", "test_accuracy", "mc_test_accuracy", "best_val_accuracy"):
    assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-3, abs=1e-3), key


def test_diverging_run_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, capsys):
  path = write_images(tmp_path / "d.npz", num_train=1000)
  out = str(tmp_path / "out")
  # Epoch 1 at lr 1e-3 trains and is checkpointed; from epoch 2 the step schedule multiplies
  # the learning rate by 1e41, the weights overflow and every step is skipped.
  args = [*QUICK, "--optimizer", "adam", "--data-file", path, "--out", out, "--epochs", "3",
          "--quiet", "--set", "lr_schedule=steps", "--set", "lr_milestones=1",
          "--set", "lr_decay=1e41", "--set", "max_nonfinite_steps=2"]
  assert main(args) == 3
  err = capsys.readouterr().err
  assert "stopped: the loss was NaN or Inf for 3 consecutive steps (epoch 2" in err
  assert "last good checkpoint" in err
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1", "written.json"]
  assert [r["epoch"] for r in read_records(out)] == [1]
  assert not os.path.exists(os.path.join(out, "summary.json"))


def test_show_config_prints_the_preset_and_flags_presets_that_are_ours(capsys):
  assert main(["two-moons", "--optimizer", "bop", "--show-config", "--set", "gamma=0.5"]) == 0
  first, note = capsys.readouterr().out.strip().splitlines()
  assert json.loads(first)["gamma"] == 0.5
  assert note.startswith("note: the paper gives no bop settings for two-moons")
  assert main(["mnist", "--show-config"]) == 0
  assert len(capsys.readouterr().out.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_host_allocator_setting_does_not_change_the_run(tmp_path):
  # --malloc changes where the host keeps freed memory, never what is computed. The setting
  # is process-wide: "retain" (the default, asked for by every main() of these tests) runs
  # here, "default" in a process of its own.
  path = write_images(tmp_path / "d.npz")
  args = [*QUICK, "--data-file", path, "--epochs", "2", "--quiet"]
  assert main([*args, "--malloc", "retain", "--out", str(tmp_path / "retain")]) == 0
  subprocess.run(cli_command(*args, "--malloc", "default", "--out", str(tmp_path / "default")), cwd=REPO,
                 check=True, capture_output=True)
  assert comparable(read_summary(str(tmp_path / "retain"))) == comparable(read_summary(str(tmp_path / "default")))


def test_a_full_disk_ends_in_one_line_naming_the_file_the_checkpoint_and_the_resume_command(
    tmp_path, capsys, monkeypatch):
  import errno

  from bayesbinn_jax.atomic import OutputWriteError
  from bayesbinn_jax.train.checkpoint import Checkpointer

  path = write_images(tmp_path / "d.npz")
  args = [*QUICK, "--data-file", path, "--epochs", "3", "--quiet", "--set", "batch_size=50"]
  straight = str(tmp_path / "straight")
  assert main([*args, "--out", straight]) == 0
  capsys.readouterr()

  save = Checkpointer.save

  def full_disk_at_epoch_2(self, index, state, metadata):
    if index == 2:
      raise OutputWriteError(os.path.join(self.directory, "2"), OSError(errno.ENOSPC, "No space left on device"))
    return save(self, index, state, metadata)

  out = str(tmp_path / "out")
  monkeypatch.setattr(Checkpointer, "save", full_disk_at_epoch_2)
  assert main([*args, "--out", out]) == 4
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith(f"bayesbinn-train: stopped: cannot write {out}/checkpoints/2: No space left on device.")
  assert f"The last complete checkpoint is epoch 1 ({out}/checkpoints/1)" in line
  assert line.endswith(f"--out {out} --resume")
  assert not os.path.exists(os.path.join(out, "summary.json"))
  monkeypatch.setattr(Checkpointer, "save", save)
  assert main([*args, "--out", out, "--resume"]) == 0
  assert comparable(read_summary(out)) == comparable(read_summary(straight))
  assert [r["epoch"] for r in read_records(out)] == [1, 2, 3]


@pytest.mark.slow  # a whole run of the CLI (15-27 s on 2 cores)
def test_channels_first_images_are_transposed_with_a_note_and_other_layouts_refused(tmp_path, capsys):
  # The BinaryConnect VGG with augmentation (pad 4, crop, flip) on tiny 32x32x3 images given
  # channels-first; the class count comes from the file (every label of 0..9 in the test set).
  # One VGG run serves both CIFAR presets: cifar100 is the same spec but for its name, its tfds
  # name and its presets (test_specs.test_the_cifar_specs_differ_only_in_name_and_presets), which
  # test_specs checks, as it builds its 100-logit VGG.
  rng = np.random.default_rng(0)
  first = str(tmp_path / "first.npz")
  np.savez(first, x_train=rng.integers(0, 256, (110, 3, 32, 32), dtype=np.uint8),
           y_train=rng.integers(0, 10, 110).astype(np.uint8),
           x_test=rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8), y_test=np.arange(10, dtype=np.uint8))
  out = str(tmp_path / "out")
  assert main(["cifar10", "--data-file", first, "--out", out, "--epochs", "1", "--quiet",
               "--set", "eval_batch_size=50"]) == 0
  printed = capsys.readouterr().out
  assert f"note: {first}: images are channels-first (3, 32, 32); transposed to channels-last (32, 32, 3)" in printed
  assert json.load(open(os.path.join(out, "config.json")))["data"]["input_shape"] == [32, 32, 3]
  config = json.load(open(os.path.join(out, "config.json")))["config"]
  assert config["augment"] is True and config["batch_size"] == 50 and config["train_set_scale"] == 10
  summary = read_summary(out)
  assert 0.0 <= summary["test_accuracy"] <= 1.0 and "best_val_accuracy" in summary

  wrong = str(tmp_path / "wrong.npz")
  np.savez(wrong, x_train=rng.integers(0, 256, (60, 3, 30, 30), dtype=np.uint8),
           y_train=(np.arange(60) % 10).astype(np.uint8),
           x_test=rng.integers(0, 256, (10, 3, 30, 30), dtype=np.uint8), y_test=np.arange(10, dtype=np.uint8))
  assert main(["cifar10", "--data-file", wrong, "--out", str(tmp_path / "no"), "--epochs", "1"]) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith(f"bayesbinn-train: error: {wrong}") and "(3, 30, 30)" in line and "(32, 32, 3)" in line
  assert not os.path.exists(tmp_path / "no")


def test_ood_data_file_reports_auroc_and_figures_and_a_bad_one_stops_before_training(tmp_path, capsys):
  path = write_images(tmp_path / "d.npz")
  rng = np.random.default_rng(1)
  ood = str(tmp_path / "ood.npz")
  np.savez(ood, x=rng.integers(0, 256, (50, 8, 8), dtype=np.uint8))  # noise images, no labels
  out = str(tmp_path / "out")
  assert main([*SMALL, "--data-file", path, "--ood-data-file", ood, "--out", out, "--epochs", "2", "--quiet",
               "--set", "test_samples=3"]) == 0
  summary = read_summary(out)
  for key in ("ood_auroc", "mc_ood_auroc", "test_brier", "test_misclassification_auroc", "temperature",
              "test_ece_calibrated", "mc_temperature", "mc_test_nll_calibrated"):
    assert 0.0 <= summary[key] <= 100.0, key
  assert 0.0 <= summary["ood_auroc"] <= 1.0 and summary["temperature_fit_split"] == "val"
  assert os.path.exists(os.path.join(out, "ood_entropy.png"))
  capsys.readouterr()

  wrong = str(tmp_path / "wrong.npz")
  np.savez(wrong, x_test=np.zeros((5, 9, 9), np.uint8))
  assert main([*SMALL, "--data-file", path, "--ood-data-file", wrong, "--out", str(tmp_path / "no")]) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert wrong in line and "(9, 9, 1)" in line and "(8, 8, 1)" in line
  assert not os.path.exists(tmp_path / "no")
