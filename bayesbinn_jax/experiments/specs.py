"""One declarative spec per experiment of the paper, registered in :data:`SPECS`.

A spec says everything that differs between experiments: where the data come
from and how they become network inputs, the network, the task (which fixes
the loss and the metrics), the figures, and the paper's settings for every
optimizer (algorithm.md, Table 9). The run (:mod:`bayesbinn_jax.experiments.pipeline`)
is the same for all of them. Adding an experiment means adding one spec here.
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from typing import Any, Callable, Mapping, Protocol

import flax.linen as nn
import numpy as np

from bayesbinn_jax import data
from bayesbinn_jax.nn import ContinualMLP, MnistMLP, ToyMLP, VGGBinaryConnect
from bayesbinn_jax.train.engine import TASKS

Dataset = data.ArrayDataset | data.RegressionDataset
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The usual MNIST pixel statistics (as the authors' code)."""


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where the user's data are: ``--data-file`` and ``--data-dir`` (None when not given),
  whether test labels the training split lacks are accepted (``--allow-unseen-labels``),
  and the run's seed (that of generated data, e.g. two moons)."""

  data_file: str | None = None
  data_dir: str | None = None
  allow_unseen_labels: bool = False
  seed: int = 0


class NetworkSettings(Protocol):
  """The run settings a spec's network is built from (the fields of these names of
  :class:`~bayesbinn_jax.experiments.config.RunSettings`, which ``config.run`` is)."""

  @property
  def activations(self) -> str: ...
  @property
  def activation_quantizer(self) -> str: ...
  @property
  def param_dtype(self) -> str: ...
  @property
  def output_scale(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """What defines one experiment.

  Attributes:
    name: the CLI name.
    task: "classification" (softmax cross-entropy; accuracy, NLL, ECE, ...) or
      "regression" (mean squared error on standardised targets; RMSE, NLL).
    load: ``source -> dataset``: the raw data, before the generic ``train_subset`` and
      ``val_fraction`` steps.
    normalisation: how uint8 images become inputs: "mnist" (mean 0.1307, std
      0.3081), "per-channel" (the training images' channel statistics), or
      "standardise" (features and targets to zero mean, unit variance: the
      output BatchNorm has no gain, so regression outputs are standardised).
    network: ``(settings, quantizer, num_outputs) -> flax module``, ``settings`` the
      run's :class:`NetworkSettings` (``config.run``).
    image_shape: the per-example shape the network needs (None for a free size),
      for a one-line error or a channels-first transpose before training
      (:func:`bayesbinn_jax.data.fit_input_shape`); None when any shape fits.
    settings: the experiment's own settings (epochs, batch sizes, evaluation...):
      values of :class:`~bayesbinn_jax.experiments.config.RunSettings`' fields.
    presets: the paper's settings per optimizer: values of the fields of its
      hyperparameters (:mod:`bayesbinn_jax.train.hyperparams`).
    presets_ours: optimizers whose presets the paper does not give.
    figures: names of the experiment's own figures
      (:data:`bayesbinn_jax.experiments.report.FIGURES`).
    continual: tasks are pixel permutations of the data, ``num_tasks`` of them.
  """

  name: str
  task: str
  load: Callable[[DataSource], Dataset]
  normalisation: str
  network: Callable[[NetworkSettings, str, int], nn.Module]
  settings: Mapping[str, Any]
  presets: Mapping[str, Mapping[str, Any]]
  image_shape: tuple[int | None, ...] | None = None
  presets_ours: tuple[str, ...] = ()
  figures: tuple[str, ...] = ()
  continual: bool = False

  def __post_init__(self) -> None:
    if self.task not in TASKS:
      raise ValueError(f"{self.name}: task must be one of {TASKS}; got {self.task!r}.")


# ------------------------------------------------------------------- data sources
def embedded_snelson_path() -> str:
  """The Snelson data shipped with the package (the authors' 200 points and test grid)."""
  return str(resources.files("bayesbinn_jax.experiments") / "resources" / "snelson.npz")


def _has_idx_files(directory: str) -> bool:
  return any(
      os.path.exists(os.path.join(directory, data.MNIST_IDX_FILES["x_train"] + suffix))
      for suffix in ("", ".gz"))


def _images(tfds_name: str) -> Callable[[DataSource], data.ArrayDataset]:
  """An image set: ``--data-file`` (.npz), else ``--data-dir`` as class folders of image files
  (``train/<class>/``, ``test/<class>/``) or a tar of them (decoded once, then cached:
  :func:`bayesbinn_jax.data.load_image_folder`), else MNIST IDX files in ``--data-dir``, else
  tensorflow-datasets (``--data-dir`` as its data_dir; downloads when online)."""

  def load(source: DataSource) -> data.ArrayDataset:
    allow = source.allow_unseen_labels
    if source.data_file is not None:
      return data.load_npz(source.data_file, allow_unseen_labels=allow)
    if source.data_dir is not None and data.is_image_folder_source(source.data_dir):
      return data.load_image_folder(source.data_dir).dataset
    if source.data_dir is not None and _has_idx_files(source.data_dir):
      return data.load_idx_dir(source.data_dir, allow_unseen_labels=allow)
    return data.load_tfds(tfds_name, source.data_dir, allow_unseen_labels=allow)

  return load


def _no_data_dir(name: str, source: DataSource, where: str) -> None:
  """Refuses a ``--data-dir`` that the experiment ``name`` would otherwise ignore."""
  if source.data_dir is not None:
    raise data.DataError(source.data_dir, f"{name} reads no --data-dir ({where}); drop --data-dir")


def _two_moons(source: DataSource) -> data.ArrayDataset:
  """Generated (100 points per class, noise 0.1, a held-out test set), or an .npz of 2-D features."""
  _no_data_dir("two-moons", source, "its data are generated; an .npz of features goes in --data-file")
  if source.data_file is not None:
    return data.load_npz(source.data_file, allow_unseen_labels=source.allow_unseen_labels)
  return data.two_moons(100, 0.1, source.seed)


def _snelson(source: DataSource) -> data.RegressionDataset:
  """``--data-file`` (x_train, y_train, x_test), or the embedded copy."""
  _no_data_dir("snelson", source, "it ships with the package; an .npz goes in --data-file")
  return data.load_snelson(source.data_file or embedded_snelson_path())


# ------------------------------------------------------------------- settings
_SCHEDULE = dict(lr_schedule="cosine", lr_end=1e-16, lr_milestones=[], lr_decay=0.1)
_BAYESBINN = dict(_SCHEDULE, temperature=1e-10, momentum=0.0, train_samples=1, test_samples=0,
                  lambda_init=10.0, lambda_init_std=0.0, kl_weight=1.0, train_set_scale=1,
                  generator="counter", mc_loop="vmap")


def _settings(epochs: int, batch_size: int, eval_batch_size: int, *, val_fraction: float = 0.0,
              augment: bool = False, eval_every: int = 1, checkpoint_every: int = 1,
              **more: Any) -> dict[str, Any]:
  return dict(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size,
              val_fraction=val_fraction, augment=augment, train_subset=0, eval_every=eval_every,
              checkpoint_every=checkpoint_every, **more)  # the network's settings: RunSettings' defaults


def _network_options(run: NetworkSettings) -> dict[str, Any]:
  """The network's activations ("real" or "binary": binary inputs into every binary layer
  but the first, through ``activation_quantizer``) and precision (``param_dtype``: the
  params' and the computation's dtype; BatchNorm and the loss stay float32) and output
  scale (``output_scale``: "none", the paper's gainless last BatchNorm, or "learned": a
  gain per output trained by Adam at ``output_scale_lr``, see ``train/methods.py``)."""
  return dict(activations=run.activations, activation_quantizer=run.activation_quantizer,
              dtype=run.param_dtype, param_dtype=run.param_dtype,
              learned_output_scale=run.output_scale == "learned")


_MNIST_PRESETS: dict[str, dict[str, Any]] = {
    "bayesbinn": dict(_BAYESBINN, lr=1e-4, temperature=1e-10),
    "ste": dict(_SCHEDULE, lr=1e-2),
    "adam": dict(_SCHEDULE, lr=3e-4),
    "bop": dict(threshold=1e-8, gamma=1e-5, gamma_decay=10 ** (-3 / 500), gamma_decay_every=1),
    "pmf": dict(lr=1e-3, lr_decay=0.2, lr_decay_steps=7000, rho=1.2, weight_decay=0.0),
}


def _cifar(name: str, tfds_name: str, presets: Mapping[str, Mapping[str, Any]]) -> ExperimentSpec:
  return ExperimentSpec(
      name=name, task="classification", load=_images(tfds_name), normalisation="per-channel",
      network=lambda run, quantizer, outputs: VGGBinaryConnect(
          num_classes=outputs, quantizer=quantizer, **_network_options(run)),
      image_shape=(32, 32, 3),
      settings=_settings(500, 50, 500, val_fraction=0.1, augment=True),
      presets=presets, figures=("reliability",))


SPECS: dict[str, ExperimentSpec] = {spec.name: spec for spec in (
    ExperimentSpec(
        name="two-moons", task="classification", load=_two_moons, normalisation="mnist",
        network=lambda run, quantizer, outputs: ToyMLP(
            outputs=outputs, quantizer=quantizer, **_network_options(run)),
        settings=_settings(3000, 200, 1000, eval_every=100, checkpoint_every=500),
        presets={
            "bayesbinn": dict(_BAYESBINN, lr=1e-3, lr_schedule="steps", lr_milestones=[1500, 2500],
                              lr_decay=0.1, temperature=1.0, momentum=0.99, train_samples=5,
                              test_samples=100, lambda_init=15.0),
            # The paper gives STE's learning rate on the toy problems but no schedule; the presets
            # decay it as BayesBiNN's: at a constant 0.1 the last step can flip a trained network.
            "ste": dict(_SCHEDULE, lr=1e-1, lr_schedule="steps", lr_milestones=[1500, 2500]),
            "adam": dict(_SCHEDULE, lr=1e-2, lr_schedule="steps", lr_milestones=[1500, 2500]),
            "bop": dict(threshold=1e-6, gamma=1e-2, gamma_decay=1.0, gamma_decay_every=1),
            "pmf": dict(lr=1e-2, lr_decay=0.2, lr_decay_steps=1000, rho=1.01, weight_decay=0.0),
        },
        presets_ours=("adam", "bop", "pmf"), figures=("two_moons", "reliability")),
    ExperimentSpec(
        name="snelson", task="regression", load=_snelson, normalisation="standardise",
        network=lambda run, quantizer, outputs: ToyMLP(
            outputs=1, output_batchnorm=True, quantizer=quantizer, **_network_options(run)),
        settings=_settings(5000, 200, 1000, eval_every=100, checkpoint_every=500),
        presets={
            "bayesbinn": dict(_BAYESBINN, lr=1e-4, lr_schedule="geometric", lr_end=1e-5,
                              temperature=1.0, momentum=0.99, train_samples=1, test_samples=100,
                              lambda_init=10.0),
            "ste": dict(_SCHEDULE, lr=1e-1, lr_schedule="geometric", lr_end=1e-2),
            "adam": dict(_SCHEDULE, lr=1e-2, lr_schedule="geometric", lr_end=1e-3),
            "bop": dict(threshold=1e-6, gamma=1e-2, gamma_decay=1.0, gamma_decay_every=1),
            "pmf": dict(lr=1e-2, lr_decay=0.2, lr_decay_steps=2000, rho=1.01, weight_decay=0.0),
        },
        presets_ours=("adam", "bop", "pmf"), figures=("snelson",)),
    ExperimentSpec(
        name="mnist", task="classification", load=_images("mnist"), normalisation="mnist",
        image_shape=(None, None, 1),
        network=lambda run, quantizer, outputs: MnistMLP(
            num_classes=outputs, quantizer=quantizer, **_network_options(run)),
        settings=_settings(500, 100, 1000, val_fraction=0.1),
        presets=_MNIST_PRESETS, figures=("reliability",)),
    _cifar("cifar10", "cifar10", {
        "bayesbinn": dict(_BAYESBINN, lr=3e-4, temperature=1e-10, train_set_scale=10, mc_loop="unroll"),
        "ste": dict(_SCHEDULE, lr=1e-2),
        "adam": dict(_SCHEDULE, lr=1e-2),
        "bop": dict(threshold=1e-8, gamma=1e-4, gamma_decay=0.1, gamma_decay_every=100),
        "pmf": dict(lr=1e-2, lr_decay=0.2, lr_decay_steps=30000, rho=1.05, weight_decay=1e-4),
    }),
    _cifar("cifar100", "cifar100", {
        "bayesbinn": dict(_BAYESBINN, lr=3e-4, temperature=1e-8, train_set_scale=10, mc_loop="unroll"),
        "ste": dict(_SCHEDULE, lr=1e-2),
        "adam": dict(_SCHEDULE, lr=3e-3),
        "bop": dict(threshold=1e-9, gamma=1e-4, gamma_decay=0.1, gamma_decay_every=100),
        "pmf": dict(lr=1e-2, lr_decay=0.2, lr_decay_steps=30000, rho=1.05, weight_decay=1e-4),
    }),
    ExperimentSpec(
        name="permuted-mnist", task="classification", load=_images("mnist"), normalisation="mnist",
        image_shape=(None, None, 1),
        network=lambda run, quantizer, outputs: ContinualMLP(
            num_classes=outputs, quantizer=quantizer, **_network_options(run)),
        settings=_settings(100, 100, 1000, num_tasks=5),
        presets={
            "bayesbinn": dict(_BAYESBINN, lr=1e-3, temperature=1e-2, test_samples=100),
            "ste": dict(_SCHEDULE, lr=1e-2),
            "adam": dict(_SCHEDULE, lr=1e-3),
            "bop": dict(threshold=1e-8, gamma=1e-5, gamma_decay=1.0, gamma_decay_every=1),
            "pmf": dict(lr=1e-3, lr_decay=0.2, lr_decay_steps=7000, rho=1.2, weight_decay=0.0),
        },
        presets_ours=("ste", "adam", "bop", "pmf"), figures=("continual", "reliability"),
        continual=True),
)}
"""Every experiment, by CLI name."""

EXPERIMENTS = tuple(SPECS)


def get_spec(name: str) -> ExperimentSpec:
  """The spec of experiment ``name``; ValueError listing the known ones otherwise."""
  if name not in SPECS:
    raise ValueError(f"experiment must be one of {', '.join(EXPERIMENTS)}; got {name!r}.")
  return SPECS[name]


# ------------------------------------------------------------------- preprocessing
@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How stored arrays become network inputs and training targets, and outputs data units.

  ``inputs(x)`` maps stored examples to float32 inputs; ``targets`` are the
  training targets the loss sees; ``to_data_units(out)`` maps regression
  outputs back to the targets' units (identity for classification).
  """

  inputs: Callable[[np.ndarray], np.ndarray]
  targets: np.ndarray
  to_data_units: Callable[[np.ndarray], np.ndarray]


def preprocessing(spec: ExperimentSpec, dataset: Dataset) -> Preprocessing:
  """The :class:`Preprocessing` of ``dataset`` under ``spec.normalisation``.

  Float features (two moons) are only cast to float32; uint8 images go to
  [0, 1] and are normalised ("mnist" or "per-channel"); "standardise" uses the
  training split's mean and standard deviation of inputs and targets.
  """
  identity = lambda out: out  # noqa: E731
  if spec.normalisation == "standardise":
    x_mean, x_std = float(np.mean(dataset.x_train)), float(np.std(dataset.x_train))
    y_mean, y_std = float(np.mean(dataset.y_train)), float(np.std(dataset.y_train))
    return Preprocessing(
        inputs=lambda x: ((np.asarray(x, np.float32) - x_mean) / x_std).astype(np.float32),
        targets=((dataset.y_train - y_mean) / y_std).astype(np.float32),
        to_data_units=lambda out: out * y_std + y_mean)
  if dataset.x_train.dtype != np.uint8:
    return Preprocessing(lambda x: np.asarray(x, np.float32), dataset.y_train, identity)
  mean: Any
  std: Any
  if spec.normalisation == "per-channel":
    mean, std = data.channel_mean_std(dataset.x_train)
  else:
    mean, std = MNIST_MEAN, MNIST_STD
  return Preprocessing(lambda x: data.images_to_float(x, mean, std), dataset.y_train, identity)
