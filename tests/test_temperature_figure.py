"""benchmarks/temperature_figure.py: the table it reads from a sweep's results tree (the layout
of benchmarks/temperature_sweep.sh: <run>/config.json, <run>/evaluation-c<C>-<ood>/summary.json)
and the files it writes, on a tiny fake tree with hand-chosen numbers."""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import temperature_figure as tf  # noqa: E402  pylint: disable=wrong-import-position


def _write(path: str, data: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data, f)


def _summary(acc: float, auroc: float, mc_acc: float, mc_auroc: float) -> dict:
  return {"test_accuracy": acc, "ood_auroc": auroc, "test_nll": 0.5, "test_ece_calibrated": 0.01,
          "test_misclassification_auroc": 0.9,
          "mc_test_accuracy": mc_acc, "mc_ood_auroc": mc_auroc, "mc_test_nll": 0.4,
          "mc_test_ece_calibrated": 0.02, "mc_test_misclassification_auroc": 0.95}


@pytest.fixture
def tree(tmp_path):
  """Two runs at T = 1e-1 and 1e-4 (their names sort the other way round than their
  temperatures), one without evaluations, one that the default glob does not match."""
  root = str(tmp_path / "sweep")
  a = os.path.join(root, "mnist-bayesbinn-tau1e-1")
  _write(os.path.join(a, "config.json"), {"config": {"temperature": 0.1}})
  _write(os.path.join(a, "evaluation-c10-rot90", "summary.json"), _summary(0.9, 0.80, 0.91, 0.85))
  # The C = 100 evaluation's mode numbers differ on purpose: the mode is read from the smallest C.
  _write(os.path.join(a, "evaluation-c100-rot90", "summary.json"), _summary(0.5, 0.50, 0.92, 0.87))
  _write(os.path.join(a, "evaluation-c10-cifar-gray", "summary.json"), _summary(0.9, 0.95, 0.91, 0.97))
  b = os.path.join(root, "mnist-bayesbinn-tau1e-4")
  _write(os.path.join(b, "config.json"), {"config": {"temperature": 1e-4}})
  _write(os.path.join(b, "evaluation-c10-rot90", "summary.json"), _summary(0.975, 0.90, 0.975, 0.90))
  _write(os.path.join(root, "mnist-bayesbinn-tau1e-2", "config.json"), {"config": {"temperature": 0.01}})
  other = os.path.join(root, "bayes-regime-tau1e-2")
  _write(os.path.join(other, "config.json"), {"config": {"temperature": 0.01}})
  _write(os.path.join(other, "evaluation-c10-rot90", "summary.json"), _summary(0.1, 0.1, 0.1, 0.1))
  return root


def test_temperature_labels():
  assert [tf.temperature_label(t) for t in (1e-10, 1e-4, 0.01, 0.1, 1.0, 10.0, 3e-5)] == \
      ["1e-10", "1e-4", "1e-2", "1e-1", "1", "1e1", "3e-05"]


def test_rows_hold_the_mode_and_each_mc_predictive_in_order(tree):
  rows = tf.collect(tree)
  got = [(r["ood"], r["label"], r["predictor"], r["test_accuracy"], r["ood_auroc"]) for r in rows]
  assert got == [
      # rot90 first, temperatures increasing (1e-4 before 1e-1), mode then C = 10, C = 100.
      ("rot90", "1e-4", "mode", 0.975, 0.90),
      ("rot90", "1e-4", "MC C=10", 0.975, 0.90),
      ("rot90", "1e-1", "mode", 0.9, 0.80),
      ("rot90", "1e-1", "MC C=10", 0.91, 0.85),
      ("rot90", "1e-1", "MC C=100", 0.92, 0.87),
      ("cifar-gray", "1e-1", "mode", 0.9, 0.95),
      ("cifar-gray", "1e-1", "MC C=10", 0.91, 0.97),
  ]
  mc = rows[3]
  assert (mc["test_nll"], mc["test_ece_calibrated"], mc["test_misclassification_auroc"]) == (0.4, 0.02, 0.95)
  assert (rows[2]["test_nll"], rows[2]["samples"], mc["samples"]) == (0.5, 0, 10)
  assert {r["run"] for r in rows} == {"mnist-bayesbinn-tau1e-1", "mnist-bayesbinn-tau1e-4"}


def test_markdown_row(tree):
  text = tf.markdown(tf.collect(tree))
  assert "| rot90 | 1e-1 | MC C=100 | 92.00 | 0.8700 | 0.4000 | 0.0200 | 0.9500 | mnist-bayesbinn-tau1e-1 |" in text
  assert "| rot90 | 1e-4 | mode | 97.50 | 0.9000 | 0.5000 | 0.0100 | 0.9000 | mnist-bayesbinn-tau1e-4 |" in text
  assert len(text.strip().splitlines()) == 2 + 7


def test_main_writes_the_figure_and_tables(tree, tmp_path, capsys):
  out = str(tmp_path / "figure")
  assert tf.main([tree, "--out", out]) == 0
  names = sorted(os.listdir(out))
  assert names == [f"{tf.STEM}.{ext}" for ext in ("json", "md", "png")]
  with open(os.path.join(out, f"{tf.STEM}.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, f"{tf.STEM}.json"), encoding="utf-8") as f:
    data = json.load(f)
  assert len(data["rows"]) == 7 and data["rows"][4]["predictor"] == "MC C=100"
  assert data["rows"][4]["ood_auroc"] == 0.87 and data["rows"][4]["temperature"] == 0.1
  # --runs picks other runs: the bayes-regime one alone.
  assert tf.main([tree, "--out", out, "--runs", "bayes-*"]) == 0
  with open(os.path.join(out, f"{tf.STEM}.json"), encoding="utf-8") as f:
    assert [r["run"] for r in json.load(f)["rows"]] == ["bayes-regime-tau1e-2"] * 2
  capsys.readouterr()


def test_no_evaluated_run_is_an_error(tmp_path, capsys):
  _write(str(tmp_path / "mnist-bayesbinn-tau1e-2" / "config.json"), {"config": {"temperature": 0.01}})
  assert tf.main([str(tmp_path)]) == 2
  assert "evaluation-c<C>-<ood>" in capsys.readouterr().err
