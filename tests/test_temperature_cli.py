"""The temperature recipe and the stalled-training note through the CLI (issue 30).

A small MNIST-shaped set (28x28, 10 classes, each class a fixed random template of bright
pixels plus noise) trains the MNIST MLP at tau = 1e-2: with the recipe it learns well above
chance (10%); with the paper's settings (train_set_scale 1) no weight changes sign, the loss
stays above ln 10 and the run prints the note naming the cause and the recipe.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.optim.temperature import recipe

NUM_TRAIN = 1000  # 900 after the 10% validation split: 9 steps of 100 per epoch


def _templates(path):
  rng = np.random.default_rng(0)
  templates = rng.random((10, 28, 28)) < 0.2

  def split(n):
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = np.where(templates[y], 200, 20) + rng.normal(0, 30, (n, 28, 28))
    return x.clip(0, 255).astype(np.uint8), y

  x_train, y_train = split(NUM_TRAIN)
  x_test, y_test = split(300)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return str(path)


def _summary(out):
  with open(os.path.join(out, "summary.json")) as handle:
    return json.load(handle)


@pytest.mark.slow
def test_recipe_learns_at_tau_1e_2_and_the_preset_gets_the_note(tmp_path, capsys):
  data = _templates(tmp_path / "templates.npz")
  good = recipe(1e-2, train_set_size=NUM_TRAIN * 9 // 10)
  common = ["mnist", "--data-file", data, "--no-figures", "--set", "temperature=1e-2"]
  out = str(tmp_path / "recipe")
  # One epoch, as the stalled run below: the recipe's run is at 100% test accuracy after it
  # (measured; 4 epochs were run before, all at 100%).
  assert main([*common, "--out", out, "--epochs", "1", "--set", f"lr={good['lr']}",
               "--set", f"train_set_scale={good['train_set_scale']}"]) == 0
  learned = _summary(out)
  assert learned["test_accuracy"] >= 0.5, learned  # chance: 0.1
  assert "has not started to learn" not in capsys.readouterr().out

  # The paper's settings at tau = 1e-2 (set explicitly: the recipe fills in only what is not set).
  out = str(tmp_path / "stalled")
  assert main([*common, "--out", out, "--epochs", "1", "--set", "lr=1e-4",
               "--set", "train_set_scale=1", "--set", "lambda_init=10"]) == 0
  printed = capsys.readouterr().out
  stalled = _summary(out)
  assert stalled["train_loss"] >= np.log(10), stalled
  notes = [line for line in printed.splitlines() if "has not started to learn" in line]
  assert len(notes) == 1, printed
  assert f"temperature 0.01 with train_set_scale=1 (recipe {good['train_set_scale']}):" in notes[0]
