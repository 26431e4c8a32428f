"""Issue 26 items 5, 6, 8, 9 and 13 through the CLI (in-process ``main``): values that do not
suit the normalisation, test labels the training split lacks and images too small for the
network end in one line (exit 2, nothing written) or a note; the data line says what an
epoch leaves out; without a validation split no temperature is fitted."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bayesbinn_jax.experiments import report
from bayesbinn_jax.experiments.cli import main
from cli_helpers import QUICK, read_summary, write_images


def _refused(tmp_path, capsys, argv):
  out = tmp_path / "out"
  assert main([*argv, "--out", str(out), "--quiet"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert not out.exists()
  return err[0]


def _pixels(n, high, seed=0):
  return np.random.default_rng(seed).integers(0, high + 1, (n, 8, 8)).astype(np.uint8)


def test_values_the_normalisation_cannot_use_stop_before_training(tmp_path, capsys):
  # uint8 0/1 images under 'mnist' (permuted-mnist): MNIST so stored trains to chance (10.7%)
  path = write_images(tmp_path / "bad.npz", x_train=_pixels(300, 1), x_test=_pixels(100, 1))
  line = _refused(tmp_path, capsys, [*QUICK, "--data-file", path])
  assert line.startswith(f"bayesbinn-train: error: {path}: x_train is uint8 with values in [0, 1]")
  assert "0..255" in line


def test_shifted_test_labels_stop_before_training_naming_the_opt_in(tmp_path, capsys):
  path = write_images(tmp_path / "shifted.npz", classes=4)
  with np.load(path) as arrays:
    shifted = dict(arrays, y_test=arrays["y_test"] + 1)
  np.savez(path, **shifted)
  line = _refused(tmp_path, capsys, [*QUICK, "--data-file", path])
  assert line == (f"bayesbinn-train: error: {path}: y_test has label 4 that y_train lacks (y_train has 0-3): "
                  "no network trained on y_train predicts them; unseen labels are refused unless allowed: "
                  "pass --allow-unseen-labels to train anyway.")


def test_images_too_small_for_the_vgg_stop_before_training(tmp_path, capsys):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "tiny.npz")
  np.savez(path, x_train=rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8), y_train=np.arange(20) % 10,
           x_test=rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8), y_test=np.arange(10))
  line = _refused(tmp_path, capsys, ["cifar10", "--data-file", path])
  assert line.startswith(f"bayesbinn-train: error: {path}: x_train examples are (4, 4, 3), but the network "
                         "takes (32, 32, 3)")


def test_a_run_notes_the_data_and_fits_no_temperature_without_a_validation_split(tmp_path, capsys):
  # 250 float images in [0, 1] (a note), test labels 1..4 where training has 0..3 (allowed:
  # a note), no validation split, batches of 100: 2 steps, 50 examples left out of each epoch.
  path = write_images(tmp_path / "d.npz", num_train=250, classes=4)
  with np.load(path) as arrays:
    changed = dict(arrays, x_train=arrays["x_train"] / np.float32(255), x_test=arrays["x_test"] / np.float32(255),
                   y_test=arrays["y_test"] + 1)
  np.savez(path, **changed)
  out = str(tmp_path / "run")
  assert main([*QUICK, "--set", "val_fraction=0", "--data-file", path, "--allow-unseen-labels",
               "--out", out, "--epochs", "1", "--quiet"]) == 0
  printed = capsys.readouterr().out.splitlines()
  assert ("data: 250 train, 100 test; inputs 8x8x1 float32; 5 classes; 2 steps per epoch (50 of the 250 "
          "training examples left out of each epoch: the last partial batch is dropped)") in printed
  notes = [line for line in printed if line.startswith("note: ")]
  assert f"note: {path}: x_train, x_test are float32 with values in [0, 1] (images already scaled" in " ".join(notes)
  assert (f"note: {path}: y_test has label 4 that y_train lacks (y_train has 0-3): no network trained on "
          "y_train predicts them") in notes
  assert [n for n in notes if n.startswith("note: no validation split: no temperature fitted")]
  summary = read_summary(out)
  assert summary["temperature_fit_split"] is None
  assert not [key for key in summary if "temperature" in key and key != "temperature_fit_split"]
  assert not [key for key in summary if "calibrated" in key]
  assert "test_brier" in summary and "test_misclassification_auroc" in summary
  assert os.path.exists(os.path.join(out, "summary.json"))


def test_calibration_notes():
  assert report.calibration_notes({}) == []  # a regression run: nothing measured
  assert report.calibration_notes({"temperature_fit_split": "val", "temperature": 1.3,
                                   "temperature_at_bound": False}) == []
  (note,) = report.calibration_notes({"temperature_fit_split": "val", "temperature": 1.3,
                                      "temperature_at_bound": False, "mc_temperature": 0.01,
                                      "mc_temperature_at_bound": True})
  assert note == ("the temperature fit on the validation split stopped at a bound of its search [0.01, 100] "
                  "(mc_temperature = 0.01): the NLL still falls beyond it, so the calibrated numbers are that "
                  "bound's, not a calibration (temperature_at_bound in summary.json)")
  (note,) = report.calibration_notes({"temperature_fit_split": None})
  assert note.startswith("no validation split: no temperature fitted and no calibrated numbers")


@pytest.mark.parametrize("experiment", ["two-moons", "snelson"])
def test_a_data_dir_the_experiment_would_ignore_is_refused(tmp_path, capsys, experiment):
  # Before: snelson and two-moons trained on their own data, --data-dir silently unused.
  folder = tmp_path / "images"
  (folder / "train" / "cat").mkdir(parents=True)
  line = _refused(tmp_path, capsys, [experiment, "--data-dir", str(folder), "--epochs", "1"])
  assert line.startswith(f"bayesbinn-train: error: {folder}: {experiment} reads no --data-dir"), line
  assert line.endswith("drop --data-dir."), line
