"""benchmarks/paper_figures.py's error bars: mean and sample std over ``<group>-seed<N>``
runs, checked against hand-computed values (issue 16)."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import paper_figures  # noqa: E402


def _run(results, name, epochs=30, **metrics):
  os.makedirs(results / name)
  summary = dict(experiment="mnist", optimizer="bayesbinn", epochs=epochs, seed=0, train_seconds=60.0,
                 **metrics)
  (results / name / "summary.json").write_text(json.dumps(summary))


def test_mean_and_sample_std_over_seeds(tmp_path):
  for seed, (acc, ece) in enumerate([(0.9870, 0.010), (0.9880, 0.012), (0.9890, 0.014)]):
    _run(tmp_path, f"mnist-bayesbinn-seed{seed}", test_accuracy_at_best_val=acc, test_ece_calibrated=ece)
  for seed, auroc in enumerate([0.90, 0.94, 0.95]):  # from the runs evaluated again (--evaluate)
    os.makedirs(tmp_path / f"mnist-bayesbinn-seed{seed}" / "evaluation")
    (tmp_path / f"mnist-bayesbinn-seed{seed}" / "evaluation" / "summary.json").write_text(
        json.dumps({"ood_auroc": auroc, "test_accuracy_at_best_val": 0.0, "mc_ood_auroc": auroc + 0.01,
                    "mc_test_ece_calibrated": 0.002 * (seed + 1), "test_samples": 10}))
  _run(tmp_path, "mnist-ste-seed0", test_accuracy_at_best_val=0.5)      # one seed: no error bar
  _run(tmp_path, "mnist-bayesbinn", test_accuracy_at_best_val=0.1)      # not a seed run
  stats = paper_figures.seed_statistics(str(tmp_path))
  assert list(stats) == ["mnist-bayesbinn"]
  entry = stats["mnist-bayesbinn"]
  assert entry["seeds"] == [0, 1, 2] and entry["epochs"] == 30
  # mean 0.988; deviations -0.001, 0, 0.001 -> variance 2e-6 / 2 = 1e-6, std 0.001
  assert entry["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.988)
  assert entry["test_accuracy_at_best_val"]["std"] == pytest.approx(0.001)
  assert entry["test_ece_calibrated"]["std"] == pytest.approx(0.002)
  assert "test_nll" not in entry
  # Only the OOD AUROC comes from the evaluation: mean 0.93, deviations -0.03, 0.01, 0.02
  # -> variance (9 + 1 + 4)e-4 / 2 = 7e-4.
  assert entry["ood_auroc"]["mean"] == pytest.approx(0.93)
  assert entry["ood_auroc"]["std"] == pytest.approx(7e-4 ** 0.5)
  table = paper_figures.seed_table(stats)
  assert "| mnist-bayesbinn-seed{0,1,2} | 3 | 30 | 98.80 +- 0.10 |" in table
  # The MC predictive's metrics come from the evaluation too: mean 0.004, std 0.002; AUROC + 0.01.
  assert entry["mc_ood_auroc"]["mean"] == pytest.approx(0.94)
  assert entry["mc_ood_auroc"]["std"] == pytest.approx(7e-4 ** 0.5)
  assert "0.0120 +- 0.0020" in table
  assert "| 0.930 +- 0.026 | 0.0040 +- 0.0020 / 0.940 +- 0.026 | 98.86 +- 0.05 |" in table


def test_runs_without_monte_carlo_evaluations_leave_the_mc_cell_empty(tmp_path):
  for seed in (0, 1):
    _run(tmp_path, f"mnist-ste-seed{seed}", test_accuracy_at_best_val=0.98, ood_auroc=0.9 + seed / 100)
  table = paper_figures.seed_table(paper_figures.seed_statistics(str(tmp_path)))
  assert "| 0.905 +- 0.007 |  |" in table


def test_seeds_with_different_epochs_are_refused_by_name(tmp_path):
  _run(tmp_path, "mnist-ste-seed0", epochs=30, test_accuracy=0.98)
  _run(tmp_path, "mnist-ste-seed1", epochs=15, test_accuracy=0.98)
  with pytest.raises(ValueError, match="mnist-ste: its seeds ran different epochs"):
    paper_figures.seed_statistics(str(tmp_path))
