"""The experiment specs: complete, valid presets, and one spec is all a new experiment needs."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesbinn_jax import data
from bayesbinn_jax.experiments import report, specs
from bayesbinn_jax.experiments.options import RunOptions
from bayesbinn_jax.experiments.pipeline import run_experiment
from bayesbinn_jax.experiments.config import build_config
from bayesbinn_jax.experiments.presets import preset
from bayesbinn_jax.nn import ToyMLP
from bayesbinn_jax.train.methods import OPTIMIZERS


@pytest.mark.parametrize("name", specs.EXPERIMENTS)
def test_every_spec_has_valid_presets_and_known_figures(name):
  spec = specs.get_spec(name)
  assert set(spec.presets) == set(OPTIMIZERS)
  assert set(spec.presets_ours) <= set(OPTIMIZERS)
  assert all(figure in report.FIGURES for figure in spec.figures)
  for optimizer in OPTIMIZERS:
    assert not set(preset(name, optimizer)) & {"rng", "seed"}
    config = build_config(name, optimizer)  # every preset value checked by the typed config
    assert (config.run.num_tasks is not None) == spec.continual


@pytest.mark.parametrize("name, shape, outputs", [
    ("two-moons", (2,), 2), ("snelson", (1,), 1), ("mnist", (28, 28, 1), 10),
    ("permuted-mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)])
def test_every_spec_builds_its_network_for_its_inputs(name, shape, outputs):
  spec = specs.get_spec(name)
  model = spec.network(build_config(name, "bayesbinn").run, "none", outputs)
  x = jnp.zeros((2, *shape), jnp.float32)
  shapes = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x, train=False))
  assert shapes.shape == (2, outputs)


def test_the_cifar_specs_differ_only_in_name_and_presets():
  # Why one CIFAR run in test_cli serves both presets.
  cifar10, cifar100 = specs.get_spec("cifar10"), specs.get_spec("cifar100")
  differing = {field.name for field in dataclasses.fields(cifar10)
               if getattr(cifar10, field.name) != getattr(cifar100, field.name)}
  assert differing == {"name", "load", "network", "presets"}  # load: the tfds name; network: a lambda each
  config = build_config("cifar100", "bayesbinn")
  assert cifar10.network(config.run, "ste", 100) == cifar100.network(config.run, "ste", 100)  # flax modules compare by fields
  assert set(cifar10.presets["bayesbinn"]) == set(cifar100.presets["bayesbinn"])


def test_an_unknown_experiment_is_named():
  with pytest.raises(ValueError, match="experiment must be one of two-moons, .*got 'imagenet'"):
    specs.get_spec("imagenet")


def test_standardised_regression_maps_outputs_back_to_the_data_units():
  dataset = data.RegressionDataset(
      x_train=np.array([[1.0], [3.0]], np.float32), y_train=np.array([10.0, 20.0], np.float32),
      x_test=np.array([[2.0]], np.float32))
  prep = specs.preprocessing(specs.get_spec("snelson"), dataset)
  np.testing.assert_allclose(prep.inputs(dataset.x_train)[:, 0], [-1.0, 1.0])
  np.testing.assert_allclose(prep.targets, [-1.0, 1.0])
  np.testing.assert_allclose(prep.to_data_units(np.array([0.0, 2.0])), [15.0, 25.0])


def test_uint8_images_are_normalised_by_the_spec():
  images = np.array([[[0]], [[255]]], np.uint8)[..., None]
  dataset = data.ArrayDataset(images, np.array([0, 1]), images, np.array([0, 1]), num_classes=2)
  mnist = specs.preprocessing(specs.get_spec("mnist"), dataset).inputs(images)
  np.testing.assert_allclose(mnist.ravel(), [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)
  cifar = specs.preprocessing(specs.get_spec("cifar10"), dataset).inputs(images)
  np.testing.assert_allclose(cifar.ravel(), [-1.0, 1.0], rtol=1e-6)  # the channel's mean 0.5, std 0.5


def test_a_new_experiment_is_one_spec(tmp_path, monkeypatch):
  # XOR of two features: a spec added to the registry runs end to end, no branch anywhere else.
  def xor(source):
    rng = np.random.default_rng(source.seed)
    x = rng.uniform(-1, 1, (400, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int32)
    return data.ArrayDataset(x[:300], y[:300], x[300:], y[300:], num_classes=2)

  two_moons = specs.get_spec("two-moons")
  spec = dataclasses.replace(
      two_moons, name="xor", load=xor,
      network=lambda run, quantizer, outputs: ToyMLP(outputs=outputs, quantizer=quantizer),
      settings={**two_moons.settings, "batch_size": 100, "epochs": 200, "eval_every": 100},
      figures=("reliability",))
  monkeypatch.setitem(specs.SPECS, "xor", spec)
  config = build_config("xor", "adam", overrides=["lr_milestones=[]"])
  out = str(tmp_path / "xor")
  summary = run_experiment(RunOptions(config, out, quiet=True))
  assert summary["experiment"] == "xor" and summary["test_accuracy"] > 0.95
  assert sorted(os.listdir(out)) == sorted(
      ["checkpoints", "config.json", "data_fingerprint.json", "metrics.jsonl", "reliability.png", "summary.json",
       "tensorboard", "training_curves.png"])
  assert json.load(open(os.path.join(out, "config.json")))["data"]["num_train"] == 300
