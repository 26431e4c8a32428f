"""The data and network of each experiment, loaded and checked before training."""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from bayesbinn_jax import data
from bayesbinn_jax.nn import ContinualMLP, MnistMLP, ToyMLP, VGGBinaryConnect

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TFDS_NAMES = {"mnist": "mnist", "permuted-mnist": "mnist", "cifar10": "cifar10", "cifar100": "cifar100"}


def embedded_snelson_path() -> str:
  """The Snelson data shipped with the package (the authors' 200 points and test grid)."""
  return str(resources.files("bayesbinn_jax.experiments") / "resources" / "snelson.npz")


def _has_idx_files(directory: str) -> bool:
  return any(
      os.path.exists(os.path.join(directory, data.MNIST_IDX_FILES["x_train"] + suffix))
      for suffix in ("", ".gz")
  )


def load_dataset(
    experiment: str,
    config: Mapping[str, Any],
    *,
    data_file: str | None = None,
    data_dir: str | None = None,
) -> data.ArrayDataset | data.RegressionDataset:
  """Loads, checks and splits the data of ``experiment``.

  - two-moons: generated (100 points per class, noise 0.1) with a held-out
    test set; ``data_file`` may name an .npz of 2-D features instead.
  - snelson: ``data_file`` (x_train, y_train, x_test) or the embedded copy.
  - image sets: ``data_file`` (.npz with x_train, y_train, x_test, y_test),
    else ``data_dir`` holding the official MNIST IDX files, else tensorflow-
    datasets (``data_dir`` as its data_dir; downloads when online).

  ``train_subset > 0`` keeps the first that many training examples;
  ``val_fraction > 0`` holds out a seeded validation part.
  """
  seed = config["seed"]
  if experiment == "snelson":
    return data.load_snelson(data_file or embedded_snelson_path())
  if experiment == "two-moons" and data_file is None:
    dataset = data.two_moons(100, 0.1, seed)
  elif data_file is not None:
    dataset = data.load_npz(data_file)
  elif data_dir is not None and _has_idx_files(data_dir):
    dataset = data.load_idx_dir(data_dir)
  else:
    dataset = data.load_tfds(TFDS_NAMES[experiment], data_dir)
  if config["train_subset"]:
    keep = min(int(config["train_subset"]), dataset.num_train)
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[:keep], y_train=dataset.y_train[:keep])
  if config["val_fraction"] > 0:
    if dataset.num_train < 2:
      raise ValueError(
          f"val_fraction={config['val_fraction']} needs at least 2 training examples to split; the "
          f"training set has {dataset.num_train} (train_subset={config['train_subset']}).")
    dataset = data.split_validation(dataset, config["val_fraction"], seed)
  return dataset


def input_transform(experiment: str, dataset: data.ArrayDataset) -> Any:
  """``inputs(images) -> float32 network inputs``: [0, 1] scaling and normalisation.

  MNIST uses the usual mean 0.1307 and std 0.3081 (as the authors' code);
  CIFAR the per-channel statistics of its training images; features that are
  already float (two moons) pass through.
  """
  if dataset.x_train.dtype != np.uint8:
    return lambda x: np.asarray(x, np.float32)
  if experiment.startswith("cifar"):
    mean, std = data.channel_mean_std(dataset.x_train)
  else:
    mean, std = MNIST_MEAN, MNIST_STD
  return lambda x: data.images_to_float(x, mean, std)


def make_model(experiment: str, quantizer: str, num_outputs: int) -> nn.Module:
  """The paper's network of ``experiment`` with ``num_outputs`` outputs."""
  if experiment == "two-moons":
    return ToyMLP(outputs=num_outputs, quantizer=quantizer)
  if experiment == "snelson":
    return ToyMLP(outputs=1, output_batchnorm=True, quantizer=quantizer)
  if experiment == "mnist":
    return MnistMLP(num_classes=num_outputs, quantizer=quantizer)
  if experiment == "permuted-mnist":
    return ContinualMLP(num_classes=num_outputs, quantizer=quantizer)
  return VGGBinaryConnect(num_classes=num_outputs, quantizer=quantizer)
