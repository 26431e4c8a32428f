"""The end of a run: its summary and its figures.

The summary takes the last epoch's metrics, the best validation epoch and, in
continual learning, the accuracy matrix. The figures are the training curves
for every run plus the spec's own (:data:`FIGURES`, by name).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from bayesbinn_jax._version import __version__
from bayesbinn_jax.experiments import plots
from bayesbinn_jax.experiments.specs import ExperimentSpec
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.metrics import reliability_bins

if TYPE_CHECKING:
  from bayesbinn_jax.experiments.pipeline import Evaluator, RunOptions
  from bayesbinn_jax.train.engine import TrainState

Records = Sequence[Mapping[str, Any]]


def summarize(spec: ExperimentSpec, options: RunOptions, records: Records, *, devices: int) -> dict:
  """The run's summary.json: settings, the last epoch's metrics, the best validation
  epoch (classification with a validation split) and the continual-learning matrix."""
  config = options.config
  last = records[-1] if records else {}
  summary = {
      "experiment": spec.name, "optimizer": options.optimizer,
      "epochs": int(config["epochs"]), "seed": int(config["seed"]),
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
    summary["cl_prior"] = options.cl_prior
  return summary


# ----------------------------------------------------------------------------- figures
def _label(options: RunOptions, evaluator: Evaluator, what: str) -> str:
  return options.optimizer if evaluator.training.method.posterior is None else f"{options.optimizer} ({what})"


def _two_moons(path: Callable[[str], str], options: RunOptions, summary: Mapping[str, Any],
               state: TrainState, evaluator: Evaluator) -> None:
  """Decision map of the mode network (and of the MC predictive) on a grid around the moons."""
  gx, gy = np.meshgrid(np.linspace(-2.0, 3.0, 100), np.linspace(-1.5, 2.0, 100))
  grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
  mode = evaluator.predictions(state, grid)[:, 1].reshape(gx.shape)
  panels = {_label(options, evaluator, "mode"): (gx, gy, mode)}
  arrays = {"grid_x": gx, "grid_y": gy, "mode_prob": mode}
  if evaluator.training.predict_mc is not None:
    key = purpose_key(evaluator.seed, "figures")
    mc = evaluator.predictions(state, grid, key=key)[:, 1].reshape(gx.shape)
    samples = options.config["test_samples"]
    panels[f"{options.optimizer} (mean, C={samples})"] = (gx, gy, mc)
    arrays["mc_prob"] = mc
  np.savez_compressed(path("two_moons_grid.npz"), **arrays)
  ds = evaluator.run_data.dataset
  plots.plot_two_moons(path("two_moons.png"), ds.x_train, ds.y_train, panels)


def _snelson(path: Callable[[str], str], options: RunOptions, summary: Mapping[str, Any],
             state: TrainState, evaluator: Evaluator) -> None:
  """Predictive mean +- 2 std on Snelson's test grid, in the data's units."""
  ds = evaluator.run_data.dataset
  mode = evaluator.predictions(state, ds.x_test).reshape(-1)
  curves = {_label(options, evaluator, "mode"): (mode, np.zeros_like(mode))}
  arrays = {"x_test": ds.x_test.reshape(-1), "mode_mean": mode}
  if evaluator.training.predict_mc is not None:
    outs = evaluator.predictions(state, ds.x_test, key=purpose_key(evaluator.seed, "figures"))
    curves[f"{options.optimizer} (MC, C={options.config['test_samples']})"] = (outs.mean(0), outs.std(0))
    arrays.update(mc_mean=outs.mean(0), mc_std=outs.std(0))
  np.savez_compressed(path("snelson_predictions.npz"), **arrays)
  plots.plot_snelson(path("snelson.png"), ds.x_train.reshape(-1), ds.y_train, ds.x_test.reshape(-1), curves)


def _continual(path: Callable[[str], str], options: RunOptions, summary: Mapping[str, Any],
               state: TrainState, evaluator: Evaluator) -> None:
  """Average test accuracy over the tasks seen, after each task."""
  plots.plot_continual(path("continual.png"), {
      f"{options.optimizer} (prior: {options.cl_prior})": summary["avg_test_accuracy_after_task"]})


def _reliability(path: Callable[[str], str], options: RunOptions, summary: Mapping[str, Any],
                 state: TrainState, evaluator: Evaluator) -> None:
  """Reliability diagram of the mode network on the test split (the last task's)."""
  ds = evaluator.run_data.dataset
  last_task = 0 if evaluator.run_data.permutations is None else len(evaluator.run_data.permutations) - 1
  probs = evaluator.predictions(state, ds.x_test, last_task)
  plots.plot_reliability(path("reliability.png"), {options.optimizer: reliability_bins(probs, ds.y_test)})


FIGURES: dict[str, Callable[..., None]] = {
    "two_moons": _two_moons,
    "snelson": _snelson,
    "continual": _continual,
    "reliability": _reliability,
}
"""A spec's figures by name: ``figure(path, options, summary, state, evaluator)``."""


def figures(spec: ExperimentSpec, options: RunOptions, records: Records, summary: Mapping[str, Any],
            state: TrainState, evaluator: Evaluator) -> None:
  """Writes the training curves and the spec's figures into ``options.out_dir``."""
  if not records:
    return
  path = lambda name: os.path.join(options.out_dir, name)  # noqa: E731
  plots.plot_training_curves(path("training_curves.png"), records)
  for name in spec.figures:
    FIGURES[name](path, options, summary, state, evaluator)

