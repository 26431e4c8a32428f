"""The temperature recipe (optim/temperature.py) and the stalled-training note (train/stall.py).

Expected values are computed by hand in the comments (issue 30, docs/temperature.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayesbinn_jax.optim import temperature as tmod
from bayesbinn_jax.optim.temperature import recipe, recipe_lr
from bayesbinn_jax.train.stall import stalled_training_note


def test_constants_by_hand():
  # TAU_PAPER = lr_0 N |g| / (2 * 7.9) = 1e-4 * 54000 * 2.1e-7 / 15.8 = 1.134e-6 / 15.8
  assert tmod.TAU_PAPER == pytest.approx(7.1772e-8, rel=1e-4)
  # TAU_BAYES = 1e-2 / 7.9
  assert tmod.TAU_BAYES == pytest.approx(1.26582e-3, rel=1e-5)


@pytest.mark.parametrize("tau, scale", [
    (1e-10, 1),                   # the paper's settings: tau < TAU_PAPER
    (1e-8, 1),
    (1e-7, 2),                    # 1e-7 / 7.1772e-8 = 1.393: ceil 2
    (1e-4, 1394),                 # 1393.3
    (1e-2, 139330),               # 139329.8
    (1e-1, 1393299),              # 1393298.2
    (1.0, 13932981),              # 13932980.6
])
def test_recipe_by_hand(tau, scale):
  got = recipe(tau)
  assert got == {"lambda_init": 10.0, "lr": 1e-4, "lr_scale": 1.0, "train_set_scale": scale}
  assert isinstance(got["train_set_scale"], int)
  # The preset's lr is kept, and train_set_scale carries the rest: lr 1e-3 needs 10x less.
  assert recipe(tau, lr=1e-3)["train_set_scale"] == max(1, math.ceil(scale / 10 - 1e-9))


def test_recipe_scales_with_the_training_set():
  # lr * train_set_scale * N is what the recipe keeps: N = 900 is 60x smaller than 54,000.
  assert recipe(1e-2, train_set_size=900)["train_set_scale"] == math.ceil(1e-2 / 7.1772152e-8 * 60)
  with pytest.raises(ValueError, match="train_set_size"):
    recipe(1e-2, train_set_size=0)


def test_recipe_guard_steps_jump_the_trap():
  # The defining inequality: lr * train_set_scale * N * |g| / tau >= 2 * 7.9 at |g| = GRADIENT,
  # with no more train_set_scale than needed.
  for tau in np.logspace(-10, 0, 41):
    r = recipe(tau)
    if tau > tmod.TAU_PAPER:
      assert r["lr"] * r["train_set_scale"] * 54_000 * 2.1e-7 / tau >= 2 * 7.9 * (1 - 1e-9)
    if r["train_set_scale"] > 1:
      assert r["lr"] * (r["train_set_scale"] - 1) * 54_000 * 2.1e-7 / tau < 2 * 7.9


@pytest.mark.parametrize("tau, lambda_init", [
    # 1 - mu^2 = 1e-2 / (7.9 * 1e-2) = 0.126582; mu = sqrt(0.873418) = 0.934568;
    # atanh = 0.5 ln(1.934568 / 0.065432) = 0.5 ln(29.5661) = 1.69331
    (1e-2, 1.69331),
    # 1 - mu^2 = 0.0126582; mu = 0.993650; 0.5 ln(1.993650 / 0.006350) = 0.5 ln(313.96) = 2.87463
    (1e-1, 2.87463),
    # 1 - mu^2 = 0.00126582; mu = 0.999367; 0.5 ln(1.999367 / 0.000633) = 4.02885
    (1.0, 4.02885),
])
def test_bayes_regime_by_hand(tau, lambda_init):
  got = tmod.bayes_regime(tau)
  assert got["lambda_init"] == pytest.approx(lambda_init, rel=2e-4)
  assert got["lr"] == 1e-2 and got["train_set_scale"] == 1


def test_bayes_lambda_init_gives_an_unsaturated_share_equal_to_lr():
  # The defining property, checked in NumPy: 7.9 tau (1 - tanh^2 lambda_init) = lr.
  for tau in (2e-3, 1e-2, 3e-2, 1e-1, 1.0):
    r = tmod.bayes_regime(tau)
    assert 7.9 * tau * (1 - np.tanh(r["lambda_init"]) ** 2) == pytest.approx(r["lr"], rel=1e-9)
  # Just above TAU_BAYES the required 1 - mu^2 is close to 1: lambda_init close to 0.
  assert tmod.bayes_lambda_init(tmod.TAU_BAYES * 1.0001) < 0.01
  with pytest.raises(ValueError, match="Bayes regime"):
    tmod.bayes_regime(1e-4)


def test_apply_recipe_fills_in_what_the_user_did_not_set():
  preset = {"temperature": 1e-10, "lr": 1e-4, "lambda_init": 10.0, "train_set_scale": 1, "epochs": 2}
  # temperature alone: the recipe's train_set_scale (lambda_init and lr are the paper's).
  got = tmod.apply_recipe(dict(preset, temperature=1e-2), ["temperature"])
  assert got == dict(preset, temperature=1e-2, train_set_scale=139330)
  # temperature and lr: train_set_scale for that lr (10x larger lr, 10x smaller scale).
  got = tmod.apply_recipe(dict(preset, temperature=1e-2, lr=1e-3), ["temperature", "lr"])
  assert got["lr"] == 1e-3 and got["train_set_scale"] == 13933
  # a train_set_scale set by the user is kept; no temperature set: nothing changes.
  got = tmod.apply_recipe(dict(preset, temperature=1e-2, train_set_scale=7), ["temperature", "train_set_scale"])
  assert got["train_set_scale"] == 7
  assert tmod.apply_recipe(dict(preset, train_set_scale=3), ["train_set_scale"]) == dict(preset, train_set_scale=3)
  assert tmod.apply_recipe(preset, []) is not preset


@pytest.mark.parametrize("bad", [0.0, -1e-2, math.nan, math.inf, "1e-2"])
def test_recipe_rejects_bad_temperatures(bad):
  with pytest.raises(ValueError, match="temperature"):
    recipe(bad)


def test_recipe_rejects_bad_lr():
  with pytest.raises(ValueError, match="lr"):
    recipe(1e-2, lr=0.0)


# ------------------------------------------------------------------ the stalled-training note
PRESET = {"temperature": 1e-10, "lambda_init": 10.0, "lr": 1e-4, "train_set_scale": 1}


def test_no_note_below_ln_classes():
  # ln 10 = 2.302585
  assert stalled_training_note(2.30, 10, "bayesbinn", dict(PRESET, temperature=1e-2)) is None
  assert stalled_training_note(math.nan, 10, "bayesbinn", PRESET) is None
  assert stalled_training_note(5.0, 1, "bayesbinn", PRESET) is None
  # A first epoch of 4 steps (two moons has 1) says little yet; 5 are enough.
  assert stalled_training_note(5.0, 10, "bayesbinn", PRESET, steps=4) is None
  assert stalled_training_note(5.0, 10, "bayesbinn", PRESET, steps=5) is not None


def test_note_at_ln_classes_names_temperature_lr_scale_and_the_recipe():
  note = stalled_training_note(math.log(10), 10, "bayesbinn", dict(PRESET, temperature=1e-1))
  assert note is not None
  assert "2.303" in note and "ln(10)" in note
  assert "temperature 0.1 with train_set_scale=1 (recipe 1393299):" in note
  assert "lambda_init=10 (" not in note and "lr=0.0001 (" not in note  # the paper's are the recipe's
  assert "lambda_init=10, lr=0.0001, train_set_scale=1393299." in note
  assert "--set" not in note  # the library speaks of settings, not of flags


def test_note_names_only_what_differs_from_the_recipe():
  # lambda_init inside the band |lambda| < 7.9 and a smaller lr than the preset's: both named.
  note = stalled_training_note(2.4, 10, "bayesbinn",
                               dict(PRESET, temperature=1e-4, lambda_init=1.0, lr=1e-5, train_set_scale=1394))
  assert "with lambda_init=1 (recipe 10), lr=1e-05 (recipe 0.0001):" in note
  # Everything as the recipe: the settings are not the cause.
  note = stalled_training_note(2.4, 10, "bayesbinn", dict(PRESET, temperature=1e-2, train_set_scale=139330))
  assert "follow the recipe" in note
  # With N = 900 the recipe's train_set_scale is 60x larger: ceil(139329.81 x 60 = 8359788.4).
  note = stalled_training_note(2.4, 10, "bayesbinn", dict(PRESET, temperature=1e-2), train_set_size=900)
  assert "train_set_scale=1 (recipe 8359789)" in note


def test_note_for_other_optimizers_names_the_learning_rate():
  note = stalled_training_note(1.5, 4, "ste", {"lr": 1e-2})  # ln 4 = 1.386
  assert note is not None and "learning rate (lr=0.01)" in note and "recipe" not in note
  assert stalled_training_note(1.3, 4, "ste", {"lr": 1e-2}) is None


# ------------------------------------------------------------------ the presets use the recipe
def test_mnist_preset_takes_the_recipe_for_a_temperature_set_alone():
  from bayesbinn_jax.experiments.config import build_config, help_text

  def settings(experiment, *overrides):
    values = build_config(experiment, "bayesbinn", overrides=list(overrides)).as_dict()
    return values["temperature"], values["lr"], values["lambda_init"], values["train_set_scale"]

  assert settings("mnist") == (1e-10, 1e-4, 10.0, 1)                    # the paper's, untouched
  assert settings("mnist", "temperature=1e-10") == (1e-10, 1e-4, 10.0, 1)
  assert settings("mnist", "temperature=1e-2") == (1e-2, 1e-4, 10.0, 139330)
  assert settings("mnist", "temperature=1e-2", "lr=1e-3") == (1e-2, 1e-3, 10.0, 13933)
  assert settings("mnist", "temperature=1e-2", "train_set_scale=3") == (1e-2, 1e-4, 10.0, 3)
  # A subset: N = 1000 less its 10% validation split = 900, 60x less than 54,000.
  values = build_config("mnist", "bayesbinn", overrides=["temperature=1e-2", "train_subset=1000"]).as_dict()
  assert values["train_set_scale"] == 8359789
  # Other experiments keep their presets (the recipe is calibrated on the MNIST MLP).
  assert settings("permuted-mnist", "temperature=0.5")[3] == 1
  assert "ceil(tau / 7.2e-8)" in " ".join(help_text().split())
