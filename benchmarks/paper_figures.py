"""The paper's figures and results table from the runs in benchmarks/results/.

Usage: python benchmarks/paper_figures.py [RESULTS_DIR]

Writes, next to the runs: two_moons.png (BayesBiNN mode, BayesBiNN MC mean, STE),
snelson.png (BayesBiNN MC predictive vs STE), continual.png (average test accuracy
after each task, with and without the posterior as prior) and results.md (a table
of every run beside the paper's Table 10, then the mean +- std over the seeds of every
run named ``<group>-seed<N>``). Runs that are missing are skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

from bayesbinn_jax.data import two_moons
from bayesbinn_jax.data.snelson import load_snelson
from bayesbinn_jax.experiments import plots
from bayesbinn_jax.experiments.specs import embedded_snelson_path

PAPER_MNIST = {"ste": "98.85 +- 0.09", "bop": "98.47 +- 0.02", "pmf": "98.80 +- 0.06",
               "bayesbinn": "98.86 +- 0.05", "adam": "99.01 +- 0.06"}


def _load(results: str, name: str, file: str) -> dict | np.lib.npyio.NpzFile | None:
  path = os.path.join(results, name, file)
  if not os.path.exists(path):
    return None
  return np.load(path) if path.endswith(".npz") else json.load(open(path))


def two_moons_figure(results: str) -> None:
  bayes = _load(results, "two-moons-bayesbinn", "two_moons_grid.npz")
  ste = _load(results, "two-moons-ste", "two_moons_grid.npz")
  if bayes is None or ste is None:
    return
  gx, gy = bayes["grid_x"], bayes["grid_y"]
  panels = {"BayesBiNN (mode)": (gx, gy, bayes["mode_prob"]),
            "BayesBiNN (mean, C=100)": (gx, gy, bayes["mc_prob"]),
            "STE": (gx, gy, ste["mode_prob"])}
  data = two_moons(100, 0.1, json.load(open(os.path.join(results, "two-moons-bayesbinn", "config.json")))["config"]["seed"])
  plots.plot_two_moons(os.path.join(results, "two_moons.png"), data.x_train, data.y_train, panels)


def snelson_figure(results: str) -> None:
  bayes = _load(results, "snelson-bayesbinn", "snelson_predictions.npz")
  ste = _load(results, "snelson-ste", "snelson_predictions.npz")
  if bayes is None or ste is None:
    return
  data = load_snelson(embedded_snelson_path())
  curves = {"BayesBiNN (MC, C=100)": (bayes["mc_mean"], bayes["mc_std"]),
            "STE": (ste["mode_mean"], np.zeros_like(ste["mode_mean"]))}
  plots.plot_snelson(os.path.join(results, "snelson.png"), data.x_train.reshape(-1), data.y_train,
                     data.x_test.reshape(-1), curves)


def continual_figure(results: str) -> None:
  curves = {}
  for name, label in (("permuted-mnist-bayesbinn", "BayesBiNN, prior = previous posterior"),
                      ("permuted-mnist-bayesbinn-noprior", "BayesBiNN, no prior")):
    summary = _load(results, name, "summary.json")
    if summary is not None:
      curves[label] = [100 * a for a in summary["avg_test_accuracy_after_task"]]
  if curves:
    plots.plot_continual(os.path.join(results, "continual.png"), curves)


def _pct(value: float | None) -> str:
  return "" if value is None else f"{100 * value:.2f}"


def results_table(results: str) -> str:
  rows = ["| run | epochs | test acc. at best val. (mode) | final test acc. (mode) | MC test acc. | "
          "test NLL (mode / MC) | test ECE (mode / MC) | train time | paper (Table 10) |",
          "|---|---|---|---|---|---|---|---|---|"]
  for name in sorted(os.listdir(results)):
    summary = _load(results, name, "summary.json")
    if summary is None:
      continue
    paper = PAPER_MNIST.get(summary["optimizer"], "") if summary["experiment"] == "mnist" else ""
    nll = " / ".join(f"{summary[k]:.4f}" for k in ("test_nll", "mc_test_nll") if k in summary)
    ece = " / ".join(f"{summary[k]:.4f}" for k in ("test_ece", "mc_test_ece") if k in summary)
    if "avg_test_accuracy_after_task" in summary:
      final = "avg after each task: " + ", ".join(_pct(a) for a in summary["avg_test_accuracy_after_task"])
    elif "train_rmse" in summary:
      final = f"train RMSE {summary['train_rmse']:.4f}" + (
          f", MC RMSE {summary['mc_train_rmse']:.4f}, MC NLL {summary['mc_train_nll']:.4f}"
          if "mc_train_rmse" in summary else "")
    else:
      final = _pct(summary.get("test_accuracy"))
    rows.append(
        f"| {name} | {summary['epochs']} | {_pct(summary.get('test_accuracy_at_best_val'))} | {final} | "
        f"{_pct(summary.get('mc_test_accuracy'))} | {nll} | {ece} | "
        f"{summary['train_seconds'] / 60:.1f} min | {paper} |")
  return "\n".join(rows) + "\n"


SEED_RUN = re.compile(r"^(?P<group>.+)-seed(?P<seed>\d+)$")
SEED_METRICS = ("test_accuracy_at_best_val", "test_accuracy", "test_nll", "test_nll_calibrated",
                "test_ece", "test_ece_calibrated", "temperature", "ood_auroc",
                "mc_test_nll_calibrated", "mc_test_ece_calibrated", "mc_ood_auroc")


def seed_statistics(results: str) -> dict[str, dict]:
  """Mean and sample standard deviation (ddof 1) over the seeds of each group of runs
  ``<group>-seed<N>`` with two or more finished seeds: ``{group: {"seeds": [...],
  "epochs": ..., metric: {"mean", "std", "values"}}}`` for the metrics of SEED_METRICS
  present in every seed's summary.json (``ood_auroc`` and the Monte Carlo predictive's
  ``mc_*`` from ``evaluation/summary.json``, the run evaluated again with ``--evaluate
  --ood-data-file [--set test_samples=C]``). Groups whose seeds ran different epochs raise
  ValueError naming them."""
  groups: dict[str, list[tuple[int, dict]]] = {}
  for name in sorted(os.listdir(results)):
    match = SEED_RUN.match(name)
    summary = _load(results, name, "summary.json") if match else None
    if summary is not None:
      evaluation = _load(results, name, os.path.join("evaluation", "summary.json")) or {}
      summary = {**summary, **{k: v for k, v in evaluation.items()
                               if k.endswith("ood_auroc") or k.startswith("mc_")}}
      groups.setdefault(match["group"], []).append((int(match["seed"]), summary))
  statistics = {}
  for group, runs in groups.items():
    if len(runs) < 2:
      continue
    runs.sort(key=lambda run: run[0])
    epochs = {summary["epochs"] for _, summary in runs}
    if len(epochs) != 1:
      raise ValueError(f"{group}: its seeds ran different epochs {sorted(epochs)}; rerun them alike.")
    entry: dict = {"seeds": [seed for seed, _ in runs], "epochs": epochs.pop(),
                   "optimizer": runs[0][1]["optimizer"], "experiment": runs[0][1]["experiment"]}
    for metric in SEED_METRICS:
      if all(metric in summary for _, summary in runs):
        values = np.array([summary[metric] for _, summary in runs], np.float64)
        entry[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                         "values": values.tolist()}
    statistics[group] = entry
  return statistics


def _mean_std(entry: dict, metric: str, scale: float = 1.0, digits: int = 4) -> str:
  if metric not in entry:
    return ""
  return f"{scale * entry[metric]['mean']:.{digits}f} +- {scale * entry[metric]['std']:.{digits}f}"


def _mc_cell(entry: dict) -> str:
  if "mc_ood_auroc" not in entry:
    return ""
  return f"{_mean_std(entry, 'mc_test_ece_calibrated')} / {_mean_std(entry, 'mc_ood_auroc', 1, 3)}"


def seed_table(statistics: dict[str, dict]) -> str:
  """The error-bar table of :func:`seed_statistics` (accuracies in %)."""
  rows = ["| runs | seeds | epochs | test acc. at best val. | final test acc. | test NLL raw | "
          "test NLL calibrated | test ECE raw | test ECE calibrated | temperature | OOD AUROC | "
          "MC predictive: ECE calibrated / OOD AUROC | paper (Table 10) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for group, entry in statistics.items():
    paper = PAPER_MNIST.get(entry["optimizer"], "") if entry["experiment"] == "mnist" else ""
    rows.append(
        f"| {group}-seed{{{','.join(map(str, entry['seeds']))}}} | {len(entry['seeds'])} | {entry['epochs']} | "
        f"{_mean_std(entry, 'test_accuracy_at_best_val', 100, 2)} | {_mean_std(entry, 'test_accuracy', 100, 2)} | "
        + " | ".join(_mean_std(entry, m) for m in ("test_nll", "test_nll_calibrated", "test_ece",
                                                   "test_ece_calibrated"))
        + f" | {_mean_std(entry, 'temperature', 1, 3)} | {_mean_std(entry, 'ood_auroc', 1, 3)} | "
        f"{_mc_cell(entry)} | {paper} |")
  return "\n".join(rows) + "\n"


def main(results: str = "benchmarks/results") -> None:
  two_moons_figure(results)
  snelson_figure(results)
  continual_figure(results)
  table = results_table(results)
  statistics = seed_statistics(results)
  if statistics:
    table += "\nMean +- standard deviation over seeds (sample std, ddof 1):\n\n" + seed_table(statistics)
    with open(os.path.join(results, "seed_statistics.json"), "w") as handle:
      json.dump(statistics, handle, indent=1)
  with open(os.path.join(results, "results.md"), "w") as handle:
    handle.write(table)
  print(table)


if __name__ == "__main__":
  main(*sys.argv[1:])
