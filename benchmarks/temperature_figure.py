"""Accuracy against OOD AUROC over the temperature, for the mode and the MC predictive (issue 30).

Reads a temperature sweep's results folder, as ``benchmarks/temperature_sweep.sh`` writes it:
one run per temperature (``<run>/config.json`` holds its temperature) and its evaluations
``<run>/evaluation-c<C>-<ood>/summary.json`` (``--evaluate --set test_samples=C`` against one
out-of-distribution set). Writes, into ``--out`` (default: the results folder itself):

- ``accuracy_vs_ood_auroc.png``: one panel per OOD set (``rot90``: the test digits turned by
  90 degrees; ``cifar-gray``: CIFAR-10 test images as grayscale 28x28), test accuracy (%)
  against OOD AUROC, one line over the temperatures for the mode network and one for each MC
  predictive (C = 10, C = 100), every point labelled by its temperature;
- ``accuracy_vs_ood_auroc.json`` and ``.md``: the same numbers as a table, one row per
  (OOD set, temperature, predictor), with NLL, calibrated ECE and misclassification AUROC.

The mode network's numbers do not depend on C (its evaluation draws no samples): they are
read from the evaluation with the smallest C of each OOD set.

Usage:
  python benchmarks/temperature_figure.py [RESULTS] [--out DIR] [--runs GLOB]
  (RESULTS default benchmarks/results/temperature-sweep; --runs default mnist-bayesbinn-tau*)
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
from typing import Any, Sequence

DEFAULT_RESULTS = os.path.join("benchmarks", "results", "temperature-sweep")
DEFAULT_RUNS = "mnist-bayesbinn-tau*"
STEM = "accuracy_vs_ood_auroc"
EVALUATION = re.compile(r"^evaluation-c(\d+)-(.+)$")
OOD_NAMES = {"rot90": "rotated digits (90 degrees)", "cifar-gray": "CIFAR-10, grayscale 28x28"}
COLUMNS = ("ood", "temperature", "label", "predictor", "samples", "test_accuracy", "ood_auroc",
           "test_nll", "test_ece_calibrated", "test_misclassification_auroc", "run")
METRICS = ("test_accuracy", "ood_auroc", "test_nll", "test_ece_calibrated", "test_misclassification_auroc")


class FigureError(ValueError):
  """A results folder without any evaluated run, or a run whose files cannot be read."""


def temperature_label(tau: float) -> str:
  """``1e-2`` for 0.01, ``1e-10`` for 1e-10, ``1`` for 1.0; other values as ``%g`` (``3e-05``)."""
  exponent = round(math.log10(tau))
  if math.isclose(tau, 10.0 ** exponent, rel_tol=1e-9):
    return "1" if exponent == 0 else f"1e{exponent}"
  return f"{tau:g}"


def _read(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise FigureError(f"cannot read {path}: {e}") from e


def collect(results: str, runs: str = DEFAULT_RUNS) -> list[dict[str, Any]]:
  """The table's rows: for each run matching ``runs`` under ``results`` and each OOD set it was
  evaluated against, the mode (once) and the MC predictive for each C; sorted by OOD set
  (rot90, cifar-gray, then others by name), temperature, then mode before MC by C.

  Raises:
    FigureError: no run with an evaluation, or an unreadable config.json/summary.json.
  """
  rows: list[dict[str, Any]] = []
  for run in sorted(glob.glob(os.path.join(results, runs))):
    if not os.path.isdir(run):
      continue
    evaluations = []
    for entry in sorted(os.listdir(run)):
      match = EVALUATION.match(entry)
      if match and os.path.isfile(os.path.join(run, entry, "summary.json")):
        evaluations.append((match.group(2), int(match.group(1)), os.path.join(run, entry, "summary.json")))
    if not evaluations:
      continue
    tau = float(_read(os.path.join(run, "config.json"))["config"]["temperature"])
    name = os.path.basename(run)
    base = {"temperature": tau, "label": temperature_label(tau), "run": name}
    for ood in sorted({e[0] for e in evaluations}):
      mode_done = False
      for _, samples, path in sorted(e for e in evaluations if e[0] == ood):
        summary = _read(path)
        if not mode_done:
          rows.append({**base, "ood": ood, "predictor": "mode", "samples": 0,
                       **{m: summary.get(m) for m in METRICS}})
          mode_done = True
        if "mc_test_accuracy" in summary:
          rows.append({**base, "ood": ood, "predictor": f"MC C={samples}", "samples": samples,
                       **{m: summary.get(f"mc_{m}") for m in METRICS}})
  if not rows:
    raise FigureError(f"no run matching {runs!r} under {results} has an evaluation-c<C>-<ood>/summary.json")
  rows.sort(key=lambda r: (_ood_order(r["ood"]), r["temperature"], r["samples"]))
  return rows


def _ood_order(ood: str) -> tuple[int, str]:
  """The sweep's OOD sets first, in OOD_NAMES' order (near, then far), then any other by name."""
  names = list(OOD_NAMES)
  return (names.index(ood) if ood in names else len(names), ood)


def _cell(value: Any, digits: int) -> str:
  if value is None:
    return "-"
  return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  """The rows as a markdown table (accuracy in %, the rest to 4 decimals)."""
  header = ["OOD set", "temperature", "predictor", "test acc. (%)", "OOD AUROC", "test NLL",
            "calibrated ECE", "misclassification AUROC", "run"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    accuracy = None if r["test_accuracy"] is None else 100 * r["test_accuracy"]
    cells = [r["ood"], r["label"], r["predictor"], _cell(accuracy, 2), _cell(r["ood_auroc"], 4),
             _cell(r["test_nll"], 4), _cell(r["test_ece_calibrated"], 4),
             _cell(r["test_misclassification_auroc"], 4), r["run"]]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def draw(rows: Sequence[dict[str, Any]], path: str) -> None:
  """The figure: one panel per OOD set (the two of the sweep always, "not evaluated" when no
  row has it), accuracy (%) against OOD AUROC, a line per predictor over the temperatures (in
  increasing order), each point labelled by its temperature."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel

  oods = sorted(set(OOD_NAMES) | {r["ood"] for r in rows}, key=_ood_order)
  predictors = sorted({(r["samples"], r["predictor"]) for r in rows})
  styles = {0: ("o", "-"), 10: ("s", "--"), 100: ("^", ":")}
  fig, axes = plt.subplots(1, len(oods), figsize=(5.5 * len(oods), 4.5), squeeze=False)
  for ax, ood in zip(axes[0], oods):
    for samples, predictor in predictors:
      points = [r for r in rows if r["ood"] == ood and r["predictor"] == predictor
                and r["ood_auroc"] is not None and r["test_accuracy"] is not None]
      if not points:
        continue
      marker, line = styles.get(samples, ("D", "-."))
      xs = [r["ood_auroc"] for r in points]
      ys = [100 * r["test_accuracy"] for r in points]
      ax.plot(xs, ys, marker=marker, linestyle=line, label=predictor, alpha=0.85)
      for r, x, y in zip(points, xs, ys):
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(4, 3 + 8 * (samples > 0)),
                    fontsize=7)
    if not any(r["ood"] == ood for r in rows):
      ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(f"OOD: {OOD_NAMES.get(ood, ood)}")
    ax.set_xlabel("OOD AUROC (predictive entropy)")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8, title="points labelled by T", title_fontsize=7)
  fig.suptitle("Mode vs Monte Carlo predictive across temperatures T")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(rows: Sequence[dict[str, Any]], out: str, results: str) -> list[str]:
  """The figure, JSON and markdown table in ``out``; returns their paths."""
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, f"{STEM}.{ext}") for ext in ("png", "json", "md")]
  draw(rows, paths[0])
  with open(paths[1], "w", encoding="utf-8") as f:
    json.dump({"results": results, "columns": list(COLUMNS),
               "rows": [{c: r[c] for c in COLUMNS} for r in rows]}, f, indent=2)
    f.write("\n")
  with open(paths[2], "w", encoding="utf-8") as f:
    f.write(f"Accuracy and OOD AUROC over the temperature ({results}; "
            "python benchmarks/temperature_figure.py)\n\n")
    f.write(markdown(rows))
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results", nargs="?", default=DEFAULT_RESULTS,
                      help=f"the sweep's results folder (default {DEFAULT_RESULTS})")
  parser.add_argument("--out", help="where the figure and tables go (default: the results folder)")
  parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"runs to read, a glob (default {DEFAULT_RUNS})")
  args = parser.parse_args(argv)
  try:
    rows = collect(args.results, args.runs)
  except FigureError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in write(rows, args.out or args.results, args.results):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
