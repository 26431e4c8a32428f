"""``bayesbinn-train --evaluate``: a saved run evaluated again from its last checkpoint,
against new OOD data and with more Monte Carlo networks (issue 16)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from cli_helpers import QUICK, read_summary, write_images

from bayesbinn_jax.experiments.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 2-epoch BayesBiNN run (mode and MC predictive, C = 4) on small images, without figures."""
  root = tmp_path_factory.mktemp("evaluate")
  data = write_images(root / "d.npz", classes=4)
  out = str(root / "run")
  assert main([*QUICK, "--data-file", data, "--out", out, "--epochs", "2", "--quiet",
               "--set", "test_samples=4"]) == 0
  return root, data, out


def _status(argv):
  """main's exit status, also when argparse ends the program (SystemExit)."""
  try:
    return main(argv)
  except SystemExit as stop:
    return stop.code


def _noise(path, shape=(8, 8)):
  np.savez(path, x=np.random.default_rng(1).integers(0, 256, (40, *shape), dtype=np.uint8))
  return str(path)


def test_evaluation_repeats_the_final_metrics_and_adds_ood(trained):
  root, _, out = trained
  with open(os.path.join(out, "summary.json"), "rb") as handle:
    before = handle.read()
  ood = _noise(root / "ood.npz")
  assert main(["--evaluate", "--out", out, "--ood-data-file", ood, "--quiet"]) == 0
  run, evaluation = read_summary(out), read_summary(os.path.join(out, "evaluation"))
  assert evaluation["evaluated_epoch"] == 2 and evaluation["optimizer"] == "bayesbinn"
  # The same state, data and keys: the run's own final numbers, to the last digit.
  for key in ("test_accuracy", "test_nll", "test_ece", "mc_test_accuracy", "mc_test_nll", "temperature",
              "test_ece_calibrated", "mc_temperature", "test_misclassification_auroc"):
    assert evaluation[key] == run[key], key
  assert 0.0 <= evaluation["ood_auroc"] <= 1.0 and 0.0 <= evaluation["mc_ood_auroc"] <= 1.0
  assert "ood_auroc" not in run
  files = set(os.listdir(os.path.join(out, "evaluation")))
  assert {"summary.json", "reliability.png", "ood_entropy.png"} <= files
  assert not [name for name in os.listdir(out) if name.endswith(".png")]  # the run's --no-figures
  with open(os.path.join(out, "summary.json"), "rb") as handle:
    assert handle.read() == before  # the run itself is untouched


def test_more_monte_carlo_networks(trained):
  _, _, out = trained
  shutil.rmtree(os.path.join(out, "evaluation"), ignore_errors=True)
  assert main(["--evaluate", "--out", out, "--set", "test_samples=9", "--quiet", "--no-figures"]) == 0
  evaluation = read_summary(os.path.join(out, "evaluation"))
  assert evaluation["test_samples"] == 9 and "mc_test_accuracy" in evaluation
  assert os.listdir(os.path.join(out, "evaluation")) == ["summary.json"]


@pytest.mark.parametrize("args, message", [
    (["--set", "lr=0.1"], "--set lr=0.1 changes the trained run; only test_samples, eval_batch_size"),
    (["--epochs", "3"], "drop --epochs"),
    (["--resume"], "cannot be combined with --resume"),
])
def test_changes_to_the_trained_run_are_refused(trained, capsys, args, message):
  _, _, out = trained
  assert _status(["--evaluate", "--out", out, *args]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and message in err[0]


def test_a_folder_without_a_run_or_checkpoint_is_one_line(tmp_path, trained, capsys):
  assert _status(["--evaluate"]) == 2
  assert "--evaluate needs --out" in capsys.readouterr().err
  assert _status(["--evaluate", "--out", str(tmp_path)]) == 2
  assert "no config.json" in capsys.readouterr().err
  _, _, out = trained
  empty = tmp_path / "copy"
  empty.mkdir()
  with open(os.path.join(out, "config.json")) as handle:
    (empty / "config.json").write_text(json.dumps(json.load(handle)))
  assert _status(["--evaluate", "--out", str(empty)]) == 2
  assert "no checkpoint to evaluate" in capsys.readouterr().err
  assert not (empty / "evaluation").exists()


def test_a_wrong_ood_shape_stops_before_writing(tmp_path, trained, capsys):
  _, _, out = trained
  wrong = _noise(tmp_path / "wrong.npz", shape=(9, 9))
  evaluation = os.path.join(out, "evaluation", "summary.json")
  before = os.path.getmtime(evaluation) if os.path.exists(evaluation) else None
  assert _status(["--evaluate", "--out", out, "--ood-data-file", wrong]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "wrong.npz" in err[0]
  after = os.path.getmtime(evaluation) if os.path.exists(evaluation) else None
  assert after == before
