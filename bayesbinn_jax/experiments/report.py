"""The end of a run: uncertainty, summary and figures.

The summary takes the last epoch's metrics, the best validation epoch and, in
continual learning, the accuracy, NLL and ECE matrices. A classification run
then gets its uncertainty measured (:func:`measure_uncertainty`: temperature
scaling, Brier score, entropy, misclassification and OOD AUROC). The figures
are the training curves for every run plus the spec's own (:data:`FIGURES`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bayesbinn_jax._version import __version__
from bayesbinn_jax.experiments import plots
from bayesbinn_jax.experiments.options import RunOptions
from bayesbinn_jax.experiments.prepare import Evaluator
from bayesbinn_jax.experiments.specs import ExperimentSpec
from bayesbinn_jax.train.calibration import DEFAULT_BOUNDS, apply_temperature, log_probabilities, temperature_fit
from bayesbinn_jax.train.engine import TrainState
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.methods import output_scale_labels
from bayesbinn_jax.train.metrics import (classification_metrics, ood_auroc, predictive_entropy,
                                         reliability_bins, uncertainty_metrics)


Records = Sequence[Mapping[str, Any]]


def summarize(spec: ExperimentSpec, options: RunOptions, records: Records, *, devices: int) -> dict:
  """The run's summary.json: settings, the last epoch's metrics, the best validation
  epoch (classification with a validation split) and the continual-learning matrix."""
  config = options.config
  last = records[-1] if records else {}
  summary = {
      "experiment": spec.name, "optimizer": options.optimizer,
      "epochs": config.run.epochs, "seed": config.seed,
      "train_seconds": float(sum(r["seconds"] for r in records)),
      "devices": devices, "version": __version__,
  }
  summary.update({k: v for k, v in last.items() if k.startswith(("test_", "mc_test_", "train_", "mc_train_"))})
  validated = [r for r in records if "val_accuracy" in r]
  if spec.task == "classification" and validated:
    best = max(validated, key=lambda r: r["val_accuracy"])
    summary.update(best_val_accuracy=best["val_accuracy"], best_val_epoch=best["epoch"],
                   test_accuracy_at_best_val=best["test_accuracy"])
    if "mc_test_accuracy" in best:
      summary["mc_test_accuracy_at_best_val"] = best["mc_test_accuracy"]
  if spec.continual:
    rows = [r["task_test_accuracies"] for r in records if "task_test_accuracies" in r]
    summary["test_accuracy_matrix"] = rows
    summary["avg_test_accuracy_after_task"] = [float(np.mean(row)) for row in rows]
    for metric in ("nll", "ece"):
      summary[f"test_{metric}_matrix"] = [r[f"task_test_{metric}s"] for r in records
                                          if f"task_test_{metric}s" in r]
    summary["cl_prior"] = options.cl_prior
  return summary


# ----------------------------------------------------------------------------- uncertainty
FIT_EXAMPLES = 10_000
"""At most this many examples (the first of the split) fit the temperature."""


@dataclasses.dataclass(frozen=True)
class Predictive:
  """Test (and OOD) predictions of one predictive, raw and temperature-scaled."""

  name: str          # "mode" or "mean, C=..."
  prefix: str        # "" or "mc_"
  test: np.ndarray
  calibrated: np.ndarray | None  # None: no validation split, no temperature fitted
  temperature: float | None
  ood: np.ndarray | None


def measure_uncertainty(options: RunOptions, state: TrainState, evaluator: Evaluator,
                        ood_images: np.ndarray | None = None) -> tuple[dict, list[Predictive]]:
  """Temperature scaling and uncertainty metrics of the mode and the MC predictive.

  T (Guo et al. 2017) is fitted on the validation split (``temperature_fit_split``
  "val") for the mode network and for the Monte Carlo predictive (on the log of
  its averaged probabilities, algorithm.md). Without a validation split nothing
  is fitted (``temperature_fit_split`` None, no calibrated numbers): on the
  training split, which the network has learned, the fit runs to the search's
  lower bound (two moons: T = 0.01, a "calibrated" NLL twice the raw one). A fit
  at a bound of the search is flagged (``temperature_at_bound``; see
  :func:`calibration_notes`). Returns the summary entries (``temperature``,
  ``temperature_at_bound``, ``test_nll_calibrated``, ``test_ece_calibrated``, ``test_brier``,
  ``test_entropy``, ``test_misclassification_auroc``, ``ood_auroc`` when
  ``ood_images`` are given, and their ``mc_`` twins; ``output_scale``, the
  learned gain per class, with ``output_scale=learned``) and the predictions.
  """
  ds = evaluator.run_data.dataset
  task = 0 if evaluator.run_data.permutations is None else len(evaluator.run_data.permutations) - 1
  split = "val" if ds.has_validation else None
  summary: dict[str, Any] = {"temperature_fit_split": split}
  labels = jax.tree_util.tree_leaves(output_scale_labels(state.params))
  gains = [leaf for label, leaf in zip(labels, jax.tree_util.tree_leaves(state.params))
           if label == "output_scale"]
  if gains:
    summary["output_scale"] = [float(g) for g in np.ravel(jax.device_get(gains[-1]))]
  keys: list[tuple[str, str, jax.Array | None]] = [("mode", "", None)]
  if evaluator.training.predict_mc is not None:
    keys.append((f"mean, C={options.config.test_samples}", "mc_", purpose_key(evaluator.seed, "calibration")))
  predictives = []
  for name, prefix, key in keys:
    fold = (lambda i: None) if key is None else (lambda i, key=key: jax.random.fold_in(key, i))  # noqa: E731
    test = evaluator.predictions(state, ds.x_test, task, key=fold(1))
    temperature = calibrated = None
    if ds.has_validation:
      fit = evaluator.predictions(state, ds.x_val[:FIT_EXAMPLES], task, key=fold(0))
      fitted = temperature_fit(log_probabilities(fit), ds.y_val[:FIT_EXAMPLES])
      temperature = fitted.temperature
      calibrated = apply_temperature(log_probabilities(test), temperature)
      metrics = classification_metrics(calibrated, ds.y_test)
      summary.update({f"{prefix}temperature": temperature,
                      f"{prefix}temperature_at_bound": fitted.at_bound is not None,
                      f"{prefix}test_nll_calibrated": metrics["nll"], f"{prefix}test_ece_calibrated": metrics["ece"]})
    summary.update({f"{prefix}test_{k}": v for k, v in uncertainty_metrics(test, ds.y_test).items()})
    ood = None
    if ood_images is not None:
      ood = evaluator.predictions(state, ood_images, task, key=fold(2))
      summary[f"{prefix}ood_auroc"] = ood_auroc(test, ood)
    predictives.append(Predictive(name, prefix, test, calibrated, temperature, ood))
  return summary, predictives


def calibration_notes(summary: Mapping[str, Any]) -> list[str]:
  """What the console says about the temperature fit of :func:`measure_uncertainty`:
  that none was made (no validation split), or which fits stopped at a bound of the
  search (their "calibrated" numbers are that bound's, not a calibration)."""
  if "temperature_fit_split" not in summary:
    return []
  if summary["temperature_fit_split"] is None:
    return ["no validation split: no temperature fitted and no calibrated numbers (fitted on the "
            "training split, which the network has learned, T runs to the search's lower bound); "
            "val_fraction > 0 holds out a validation split for the fit"]
  at_bound = [f"{prefix}temperature = {summary[prefix + 'temperature']:g}" for prefix in ("", "mc_")
              if summary.get(f"{prefix}temperature_at_bound")]
  if not at_bound:
    return []
  low, high = DEFAULT_BOUNDS
  return [f"the temperature fit on the validation split stopped at a bound of its search [{low:g}, {high:g}] "
          f"({', '.join(at_bound)}): the NLL still falls beyond it, so the calibrated numbers are that "
          "bound's, not a calibration (temperature_at_bound in summary.json)"]


# ----------------------------------------------------------------------------- figures
@dataclasses.dataclass(frozen=True)
class FigureInputs:
  """What a figure may draw from: the run, its final state and its measurements."""

  out_dir: str
  options: RunOptions
  summary: Mapping[str, Any]
  state: TrainState
  evaluator: Evaluator
  predictives: Sequence[Predictive]

  def path(self, name: str) -> str:
    return os.path.join(self.out_dir, name)
def _label(inputs: FigureInputs, what: str) -> str:
  optimizer = inputs.options.optimizer
  return optimizer if inputs.evaluator.training.method.posterior is None else f"{optimizer} ({what})"


def _two_moons(inputs: FigureInputs) -> None:
  """Decision map of the mode network (and of the MC predictive) on a grid around the moons."""
  evaluator, state = inputs.evaluator, inputs.state
  gx, gy = np.meshgrid(np.linspace(-2.0, 3.0, 100), np.linspace(-1.5, 2.0, 100))
  grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
  mode = evaluator.predictions(state, grid)[:, 1].reshape(gx.shape)
  panels = {_label(inputs, "mode"): (gx, gy, mode)}
  arrays: dict[str, Any] = {"grid_x": gx, "grid_y": gy, "mode_prob": mode}
  if evaluator.training.predict_mc is not None:
    key = purpose_key(evaluator.seed, "figures")
    mc = evaluator.predictions(state, grid, key=key)[:, 1].reshape(gx.shape)
    panels[f"{inputs.options.optimizer} (mean, C={inputs.options.config.test_samples})"] = (gx, gy, mc)
    arrays["mc_prob"] = mc
  np.savez_compressed(inputs.path("two_moons_grid.npz"), **arrays)
  ds = evaluator.run_data.dataset
  plots.plot_two_moons(inputs.path("two_moons.png"), ds.x_train, ds.y_train, panels)


def _snelson(inputs: FigureInputs) -> None:
  """Predictive mean +- 2 std on Snelson's test grid, in the data's units."""
  evaluator, state, optimizer = inputs.evaluator, inputs.state, inputs.options.optimizer
  ds = evaluator.run_data.dataset
  mode = evaluator.predictions(state, ds.x_test).reshape(-1)
  curves = {_label(inputs, "mode"): (mode, np.zeros_like(mode))}
  arrays: dict[str, Any] = {"x_test": ds.x_test.reshape(-1), "mode_mean": mode}
  if evaluator.training.predict_mc is not None:
    outs = evaluator.predictions(state, ds.x_test, key=purpose_key(evaluator.seed, "figures"))
    curves[f"{optimizer} (MC, C={inputs.options.config.test_samples})"] = (outs.mean(0), outs.std(0))
    arrays.update(mc_mean=outs.mean(0), mc_std=outs.std(0))
  np.savez_compressed(inputs.path("snelson_predictions.npz"), **arrays)
  plots.plot_snelson(inputs.path("snelson.png"), ds.x_train.reshape(-1), ds.y_train,
                     ds.x_test.reshape(-1), curves)


def _continual(inputs: FigureInputs) -> None:
  """Average test accuracy over the tasks seen, after each task."""
  options = inputs.options
  plots.plot_continual(inputs.path("continual.png"), {
      f"{options.optimizer} (prior: {options.cl_prior})": inputs.summary["avg_test_accuracy_after_task"]})


def _reliability(inputs: FigureInputs) -> None:
  """Reliability diagrams on the test split, before and after temperature scaling."""
  labels = inputs.evaluator.run_data.dataset.y_test
  curves = {}
  for predictive in inputs.predictives:
    curves[f"{inputs.options.optimizer} ({predictive.name})"] = reliability_bins(predictive.test, labels)
    if predictive.calibrated is not None:
      curves[f"{inputs.options.optimizer} ({predictive.name}, T={predictive.temperature:.2f})"] = (
          reliability_bins(predictive.calibrated, labels))
  plots.plot_reliability(inputs.path("reliability.png"), curves)


def _ood_entropy(inputs: FigureInputs) -> None:
  """Predictive entropy of in-distribution test vs OOD inputs, per predictive (with ``--ood-data-file``)."""
  panels = {
      f"{inputs.options.optimizer} ({p.name}), OOD AUROC {inputs.summary[p.prefix + 'ood_auroc']:.3f}": {
          "test": predictive_entropy(p.test), "OOD": predictive_entropy(p.ood)}
      for p in inputs.predictives if p.ood is not None}
  if panels:
    plots.plot_entropy_histograms(inputs.path("ood_entropy.png"), panels,
                                  num_classes=inputs.evaluator.run_data.num_outputs)


FIGURES: dict[str, Callable[..., None]] = {
    "two_moons": _two_moons,
    "snelson": _snelson,
    "continual": _continual,
    "reliability": _reliability,
}
"""A spec's own figures by name."""


FROM_THE_STATE = ("two_moons", "snelson", "reliability")
"""The figures drawn from the final state alone (not from the run's history)."""


def figures(spec: ExperimentSpec, records: Records, inputs: FigureInputs) -> None:
  """Writes the training curves, the spec's figures and, for classification runs,
  the OOD entropy histograms (when OOD data were given) into ``inputs.out_dir``."""
  if not records:
    return
  plots.plot_training_curves(inputs.path("training_curves.png"), records)
  for name in spec.figures:
    if name not in FROM_THE_STATE:
      FIGURES[name](inputs)
  prediction_figures(spec, inputs)


def prediction_figures(spec: ExperimentSpec, inputs: FigureInputs) -> None:
  """The figures of an evaluation: the spec's figures of :data:`FROM_THE_STATE` and,
  for classification, the OOD entropy histograms (when OOD data were given)."""
  for name in spec.figures:
    if name in FROM_THE_STATE:
      FIGURES[name](inputs)
  if spec.task == "classification":
    _ood_entropy(inputs)

