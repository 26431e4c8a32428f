"""Every table of numbers in the Results, Performance and Temperature pages and the README, from the results files.

Usage:
  python benchmarks/tables.py            # rewrite the tables (and the figure copies)
  python benchmarks/tables.py --check    # exit 1, naming each number that differs from its file

Each table lives in a marked region of its page,
``<!-- table:NAME:start -->`` ... ``<!-- table:NAME:end -->`` (the README's headline table
in ``<!-- results-table:start -->`` ... ``<!-- results-table:end -->``), and is built from the
committed files under ``benchmarks/results/`` (a run's ``summary.json``,
``evaluation/summary.json`` and ``metrics.jsonl``, or a benchmark's ``*.json``); the last
column of every row names its files. Numbers quoted in the prose around the tables are
listed in ``QUOTES`` (the sentence with the number, the file and the value) and checked the
same way. The figures the pages show are copied from ``benchmarks/results/`` to
``docs/figures/`` so that one relative path works on GitHub and in Sphinx; ``--check``
compares the copies too. A page or region that does not exist yet is skipped with a message.

``tests/test_docs_numbers.py`` runs the check in the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable, TextIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join("benchmarks", "results")
RESULTS_PAGE = os.path.join("docs", "results.md")
PERFORMANCE_PAGE = os.path.join("docs", "performance.md")
TEMPERATURE_PAGE = os.path.join("docs", "temperature.md")
README = "README.md"
BAYES_S1 = "temperature-recipe/bayes-regime-tau1e-2/evaluation-c10-rot90/summary.json"
RECIPE_1E2 = "temperature-recipe/mnist-bayesbinn-tau1e-2/evaluation-c10-rot90/summary.json"
SWEEP_1E10 = "temperature-sweep/mnist-bayesbinn-tau1e-10/summary.json"
SWEEP_1E10_ROT = "temperature-sweep/mnist-bayesbinn-tau1e-10/evaluation-c10-rot90/summary.json"
SWEEP_1E10_CIFAR = "temperature-sweep/mnist-bayesbinn-tau1e-10/evaluation-c10-cifar-gray/summary.json"
FIGURES_DIR = os.path.join("docs", "figures")

PAPER_MNIST = {"ste": "98.85 +- 0.09", "bop": "98.47 +- 0.02", "pmf": "98.80 +- 0.06",
               "bayesbinn": "98.86 +- 0.05", "adam": "99.01 +- 0.06"}
PAPER_CIFAR10 = {"ste": "93.55 +- 0.15", "bayesbinn": "93.72 +- 0.16"}
CIFAR_JPEG_RUNS = {"bayesbinn": "cifar10-jpeg-bayesbinn", "ste": "cifar10-jpeg-ste"}
"""Issue 27's CIFAR-10 (JPEG copy) runs: the README gets a row per run once its summary exists."""
OPTIMIZER_NAMES = {"bayesbinn": "BayesBiNN", "ste": "STE-Adam"}


# ----------------------------------------------------------------------------- loading


class Results:
  """The files under ``benchmarks/results`` (read once each), by path relative to it."""

  def __init__(self, root: str = ROOT):
    self.root = root
    self._cache: dict[str, Any] = {}

  def path(self, rel: str) -> str:
    return os.path.join(self.root, RESULTS_DIR, rel)

  def __call__(self, rel: str) -> Any:
    if rel not in self._cache:
      with open(self.path(rel), encoding="utf-8") as f:
        if rel.endswith(".jsonl"):
          self._cache[rel] = [json.loads(line) for line in f if line.strip()]
        else:
          self._cache[rel] = json.load(f)
    return self._cache[rel]


def src(*rels: str) -> str:
  """The source cell of a row: its files, relative to benchmarks/results/."""
  return ", ".join(f"`{r}`" for r in rels)


# ----------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 2) -> str:
  return "" if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 4) -> str:
  return "" if x is None else f"{x:.{digits}f}"


def pm(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
  return f"{scale * mean:.{digits}f} +- {scale * std:.{digits}f}"


def stat(entry: dict, metric: str, digits: int = 4, scale: float = 1.0) -> str:
  if metric not in entry:
    return "-"
  return pm(entry[metric]["mean"], entry[metric]["std"], digits, scale)


def thousands(x: float) -> str:
  return f"{x:,.0f}"


def mib(nbytes: float, digits: int = 2) -> str:
  return f"{nbytes / 2 ** 20:.{digits}f}"


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Table:
  """A markdown table: a header and rows; each row's last cell names its source files."""
  header: list[str]
  rows: list[list[str]]

  def render(self) -> str:
    lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
    lines += ["| " + " | ".join(row) + " |" for row in self.rows]
    return "\n".join(lines)


TABLES: dict[str, tuple[str, Callable[[Results], Table]]] = {}


def table(name: str, page: str) -> Callable:
  def register(fn: Callable[[Results], Table]) -> Callable[[Results], Table]:
    TABLES[name] = (page, fn)
    return fn
  return register


# --- Results page ------------------------------------------------------------------------

TWO_MOONS = "two_moons_seeds.json"


@table("two-moons-seeds", RESULTS_PAGE)
def two_moons_seeds(r: Results) -> Table:
  d = r(TWO_MOONS)
  s = d["stats"]
  rows = []
  for key, label, digits, scale in (
      ("test_accuracy", "mode network: test accuracy (%)", 1, 100),
      ("mc_test_accuracy", "Monte Carlo predictive (C = 100): test accuracy (%)", 1, 100),
      ("test_nll", "mode network: test NLL", 3, 1), ("mc_test_nll", "Monte Carlo predictive: test NLL", 3, 1),
      ("test_ece", "mode network: test ECE", 3, 1), ("mc_test_ece", "Monte Carlo predictive: test ECE", 3, 1),
      ("train_seconds", "training time (s)", 1, 1)):
    e = s[key]
    rows.append([label, pm(e["mean"], e["std"], digits, scale), f"{scale * e['min']:.{digits}f}",
                 f"{scale * e['max']:.{digits}f}", src(TWO_MOONS)])
  return Table([f"two moons, BayesBiNN, {len(d['seeds'])} seeds", "mean +- std", "min", "max", "source"], rows)


@table("two-moons-per-seed", RESULTS_PAGE)
def two_moons_per_seed(r: Results) -> Table:
  d = r(TWO_MOONS)
  rows = [[str(row["seed"]), pct(row["test_accuracy"], 1), pct(row["mc_test_accuracy"], 1),
           num(row["test_nll"], 3), num(row["mc_test_nll"], 3), src(TWO_MOONS)] for row in d["per_seed"]]
  return Table(["seed", "mode test acc. (%)", "MC test acc. (%)", "mode NLL", "MC NLL", "source"], rows)


RUNS = ("mnist-adam", "mnist-ste", "mnist-bayesbinn-15ep", "mnist-bayesbinn", "mnist-bayesbinn-100ep",
        "mnist-pmf", "mnist-bop", "mnist-bop-paperdecay", "permuted-mnist-bayesbinn",
        "permuted-mnist-bayesbinn-noprior", "snelson-bayesbinn", "snelson-ste", "two-moons-bayesbinn",
        "two-moons-ste")


@table("runs", RESULTS_PAGE)
def runs(r: Results) -> Table:
  rows = []
  finished = [run for run in CIFAR_JPEG_RUNS.values() if os.path.exists(r.path(f"{run}/summary.json"))]
  for name in RUNS + tuple(finished):
    rel = f"{name}/summary.json"
    s = r(rel)
    paper = {"mnist": PAPER_MNIST, "cifar10": PAPER_CIFAR10}.get(s["experiment"], {}).get(s["optimizer"], "")
    nll = " / ".join(num(s[k]) for k in ("test_nll", "mc_test_nll") if k in s)
    ece = " / ".join(num(s[k]) for k in ("test_ece", "mc_test_ece") if k in s)
    if "avg_test_accuracy_after_task" in s:
      final = "avg after each task: " + ", ".join(pct(a) for a in s["avg_test_accuracy_after_task"])
    elif "train_rmse" in s:
      final = f"train RMSE {num(s['train_rmse'])}" + (
          f", MC RMSE {num(s['mc_train_rmse'])}, MC NLL {num(s['mc_train_nll'])}" if "mc_train_rmse" in s else "")
    else:
      final = pct(s.get("test_accuracy"))
    rows.append([name, str(s["epochs"]), pct(s.get("test_accuracy_at_best_val")), final,
                 pct(s.get("mc_test_accuracy")), nll, ece, f"{s['train_seconds'] / 60:.1f} min", paper, src(rel)])
  return Table(["run", "epochs", "test acc. at best val. (mode)", "final test acc. (mode)", "MC test acc.",
                "test NLL (mode / MC)", "test ECE (mode / MC)", "train time", "paper (Table 10)", "source"], rows)


@table("binary-activations", RESULTS_PAGE)
def binary_activations(r: Results) -> Table:
  rows = []
  for name in ("mnist-bayesbinn-binary-activations", "mnist-ste-binary-activations"):
    rel = f"{name}/summary.json"
    s = r(rel)
    rows.append([name, str(s["epochs"]), f"{pct(s['test_accuracy_at_best_val'])} (epoch {s['best_val_epoch']})",
                 pct(s["test_accuracy"]), f"{num(s['test_nll'])} / {num(s['test_nll_calibrated'])}",
                 f"{num(s['test_ece'])} / {num(s['test_ece_calibrated'])} (T = {s['temperature']:.2f})",
                 f"{s['train_seconds'] / 60:.0f} min", src(rel)])
  return Table(["run", "epochs", "test acc. at best val.", "final test acc.", "test NLL raw / calibrated",
                "test ECE raw / calibrated", "train time", "source"], rows)


SEED_STATS = "seed_statistics.json"


@table("mnist-seeds", RESULTS_PAGE)
def mnist_seeds(r: Results) -> Table:
  d = r(SEED_STATS)
  rows = []
  for group in ("mnist-bayesbinn", "mnist-ste"):
    e = d[group]
    mc = (f"{stat(e, 'mc_test_ece_calibrated')} / {stat(e, 'mc_ood_auroc', 3)}" if "mc_ood_auroc" in e else "-")
    rows.append([f"{group}-seed{{{','.join(map(str, e['seeds']))}}}", str(e["epochs"]),
                 stat(e, "test_accuracy_at_best_val", 2, 100), stat(e, "test_accuracy", 2, 100),
                 f"{stat(e, 'test_nll')} / {stat(e, 'test_nll_calibrated')}",
                 f"{stat(e, 'test_ece')} / {stat(e, 'test_ece_calibrated')}", stat(e, "temperature", 3),
                 stat(e, "ood_auroc", 3), mc, PAPER_MNIST[e["optimizer"]], src(SEED_STATS)])
  return Table(["runs", "epochs", "test acc. at best val.", "final test acc.", "test NLL raw / calibrated",
                "test ECE raw / calibrated", "T", "OOD AUROC",
                "MC predictive (C = 10): ECE calibrated / OOD AUROC", "paper (Table 10, 500 epochs, 5 seeds)",
                "source"], rows)


@table("mnist-per-seed", RESULTS_PAGE)
def mnist_per_seed(r: Results) -> Table:
  rows = []
  for opt in ("bayesbinn", "ste"):
    for seed in (0, 1, 2):
      name = f"mnist-{opt}-seed{seed}"
      s, e = r(f"{name}/summary.json"), r(f"{name}/evaluation/summary.json")
      mc = (f"{pct(e['mc_test_accuracy'])} / {num(e['mc_test_ece_calibrated'])}" if "mc_test_accuracy" in e
            else "-")
      rows.append([name, f"{pct(s['test_accuracy_at_best_val'])} (epoch {s['best_val_epoch']})",
                   pct(s["test_accuracy"]), num(s["test_ece_calibrated"]), f"{e['ood_auroc']:.3f}", mc,
                   src(f"{name}/summary.json", f"{name}/evaluation/summary.json")])
  return Table(["run", "test acc. at best val. (epoch)", "final test acc.", "test ECE calibrated",
                "OOD AUROC (mode)", "MC (C = 10): test acc. / ECE calibrated", "source"], rows)


HUNDRED = "mnist-bayesbinn-100ep"
PAPER_BAYESBINN = 98.86


def last_epochs_at_paper(r: Results, last: int = 15) -> tuple[int, float, int]:
  """(epochs of the last ``last`` at or above the paper's 98.86, the highest of them, its epoch)."""
  rows = r(f"{HUNDRED}/metrics.jsonl")[-last:]
  accs = [round(100 * row["test_accuracy"], 2) for row in rows]
  best = max(rows, key=lambda row: row["test_accuracy"])
  return sum(a >= PAPER_BAYESBINN for a in accs), 100 * best["test_accuracy"], best["epoch"]


@table("mnist-100ep", RESULTS_PAGE)
def mnist_100ep(r: Results) -> Table:
  s_rel, e_rel, m_rel = (f"{HUNDRED}/summary.json", f"{HUNDRED}/evaluation/summary.json",
                         f"{HUNDRED}/metrics.jsonl")
  s, e = r(s_rel), r(e_rel)
  at, best, best_epoch = last_epochs_at_paper(r)
  rows = [
      ["final test accuracy (mode, epoch 100)", pct(s["test_accuracy"]), src(s_rel)],
      ["test accuracy at the best validation epoch", f"{pct(s['test_accuracy_at_best_val'])} (epoch "
       f"{s['best_val_epoch']})", src(s_rel)],
      [f"epochs of the last 15 at or above {PAPER_BAYESBINN}", f"{at} (highest {best:.2f}, epoch {best_epoch})",
       src(m_rel)],
      ["test ECE raw / calibrated (T)", f"{s['test_ece']:.3f} / {s['test_ece_calibrated']:.4f} "
       f"(T = {s['temperature']:.2f})", src(s_rel)],
      ["test NLL raw / calibrated", f"{s['test_nll']:.3f} / {s['test_nll_calibrated']:.3f}", src(s_rel)],
      [f"MC predictive (C = {e['test_samples']}): test acc. / ECE calibrated",
       f"{pct(e['mc_test_accuracy'])} / {e['mc_test_ece_calibrated']:.4f}", src(e_rel)],
      ["OOD AUROC, rotated digits (mode / MC)", f"{e['ood_auroc']:.3f} / {e['mc_ood_auroc']:.3f}", src(e_rel)],
      ["training time", f"{s['train_seconds'] / 60:.0f} min", src(s_rel)],
  ]
  return Table(["mnist-bayesbinn-100ep (seed 0, cosine over 100 epochs)", "value", "source"], rows)


def epoch_seconds(r: Results, name: str, epoch: int) -> float:
  return next(row["seconds"] for row in r(f"{name}/metrics.jsonl") if row["epoch"] == epoch)


@table("mnist-epoch-time", RESULTS_PAGE)
def mnist_epoch_time(r: Results) -> Table:
  rows = []
  for name, what in (("mnist-bayesbinn-epoch-time-malloc-retain", "this release, `--malloc retain` (default)"),
                     ("mnist-bayesbinn-epoch-time-malloc-default", "this release, `--malloc default`")):
    sec = epoch_seconds(r, name, 2)
    rows.append([name, what, f"{sec:.0f} s (epoch 2)", f"{500 * sec / 3600:.1f} h", src(f"{name}/metrics.jsonl")])
  s = r("mnist-bayesbinn-15ep/summary.json")
  per = s["train_seconds"] / s["epochs"]
  rows.append(["mnist-bayesbinn-15ep", "the previous release's step", f"{per:.0f} s (mean of {s['epochs']})",
               f"{500 * per / 3600:.1f} h", src("mnist-bayesbinn-15ep/summary.json")])
  return Table(["run", "step", "seconds per epoch", "500 epochs", "source"], rows)


BOP_EPOCHS = (1, 4, 8, 15)


@table("bop-flips", RESULTS_PAGE)
def bop_flips(r: Results) -> Table:
  rows = []
  for name, decay in (("mnist-bop", "the paper's x10^-3 decay over 15 epochs"),
                      ("mnist-bop-paperdecay", "the paper's per-epoch decay")):
    rel = f"{name}/metrics.jsonl"
    by_epoch = {row["epoch"]: row for row in r(rel)}
    rows.append([name, decay] + [f"{by_epoch[e]['train_flip_fraction']:.1e} ({pct(by_epoch[e]['test_accuracy'])})"
                                 for e in BOP_EPOCHS] + [src(rel)])
  return Table(["run", "gamma", *(f"epoch {e}: flips per weight per step (test acc.)" for e in BOP_EPOCHS),
                "source"], rows)


# --- Performance page --------------------------------------------------------------------

STEP_MNIST = "step_time_mnist_15rounds.json"
STEP_VGG = "step_time.json"
STEP_MALLOC_DEFAULT = "step_time_mnist_15rounds_malloc_default.json"

STEP_ROWS = (
    ("optax_adam", "`optax.adam`, plain Flax step, no guard, XLA defaults (the reference)", "2"),
    ("optax_adam_engine_opts", "`optax.adam`, same step with the engine's compiler options", "2"),
    ("adam", "Adam in the engine (`apply_if_finite`)", "2"),
    ("bayesbinn_k1", "**BayesBiNN K = 1**", "1"),
    ("bayesbinn_k5", "BayesBiNN K = 5", "1 (+ K samples held by the model)"),
    ("bayesbinn_k5_passes", "K = 5, passes only (update replaced by `optax.set_to_zero`)", "-"),
    ("ste", "STE-Adam", "2"),
    ("bop", "Bop", "1"),
    ("pmf", "PMF", "3"),
)
VGG_SKIPPED = {"bayesbinn_k5_passes"}  # faults past the retained-heap limit: no lower bound there


def step(r: Results, rel: str, model: str, opt: str) -> dict:
  return r(rel)["results"][model]["optimizers"][opt]


@table("step-time", PERFORMANCE_PAGE)
def step_time(r: Results) -> Table:
  rows = []
  for opt, label, state in STEP_ROWS:
    m = step(r, STEP_MNIST, "mnist", opt)
    m_ratio = m["median_ms"] / step(r, STEP_MNIST, "mnist", "optax_adam")["median_ms"]
    if opt in r(STEP_VGG)["results"]["vgg"]["optimizers"] and opt not in VGG_SKIPPED:
      v = step(r, STEP_VGG, "vgg", opt)
      v_ms, v_ratio = f"{v['median_ms']:.0f}", f"{v['median_ms'] / step(r, STEP_VGG, 'vgg', 'optax_adam')['median_ms']:.2f}"
      sources = src(STEP_MNIST, STEP_VGG)
    else:
      v_ms = v_ratio = "-"
      sources = src(STEP_MNIST)
    cells = [f"{m['median_ms']:.1f}", f"{m_ratio:.2f}", v_ms, v_ratio, state, f"{m['memory']['peak_mib']:.0f}"]
    if label.startswith("**"):
      cells = [f"**{c}**" if c != "-" else c for c in cells]
    rows.append([label] + cells + [sources])
  return Table(["step", "MNIST ms", "x optax.adam", "VGG ms", "x optax.adam", "optimizer state (floats / weight)",
                "XLA peak MiB (MNIST)", "source"], rows)


@table("malloc", PERFORMANCE_PAGE)
def malloc(r: Results) -> Table:
  rows = []
  for opt, label, _ in STEP_ROWS:
    a, b = step(r, STEP_MNIST, "mnist", opt), step(r, STEP_MALLOC_DEFAULT, "mnist", opt)
    rows.append([label.strip("*"), f"{a['median_ms']:.1f} ({a['ratio_to_optax_adam']:.2f}x)",
                 thousands(a["minor_faults_per_step"]),
                 f"{b['median_ms']:.1f} ({b['ratio_to_optax_adam']:.2f}x)", thousands(b["minor_faults_per_step"]),
                 src(STEP_MNIST, STEP_MALLOC_DEFAULT)])
  rows.append(["whole benchmark process, peak resident MiB", thousands(r(STEP_MNIST)["machine"]["max_rss_mib"]), "",
               thousands(r(STEP_MALLOC_DEFAULT)["machine"]["max_rss_mib"]), "", src(STEP_MNIST, STEP_MALLOC_DEFAULT)])
  return Table(["MNIST MLP step", "retain: ms (x optax.adam)", "retain: page faults / step",
                "default: ms (x optax.adam)", "default: page faults / step", "source"], rows)


NOISE = "sample_noise.json"


@table("sample-noise", PERFORMANCE_PAGE)
def sample_noise(r: Results) -> Table:
  d = r(NOISE)["median_ms"]
  rows = [[g, f"{d[g]['xla_default']:.1f}", f"{d[g]['engine']:.1f}", src(NOISE)]
          for g in ("memory floor", "counter", "threefry", "rbg", "unsafe_rbg")]
  return Table(["generator", "XLA defaults, ms", "engine options, ms", "source"], rows)


SCALING = "step_time_scaling.json"


@table("scaling", PERFORMANCE_PAGE)
def scaling(r: Results) -> Table:
  d = r(SCALING)["scaling"]["mnist"]
  rows = []
  for opt, label, _ in STEP_ROWS:
    if opt not in d:
      continue
    e = d[opt]
    rows.append([label.strip("*")] + [f"{e[n]['examples_per_s']:.0f}" for n in ("1", "2", "4")]
                + [f"{max(e[n]['state_checksum_rel_diff'] for n in ('2', '4')):.0e}", src(SCALING)])
  return Table(["MNIST MLP step, batch 100", "examples/s, 1 device", "2 devices", "4 devices",
                "state vs 1 device (largest relative difference)", "source"], rows)


PACKED = "packed_inference.json"


@table("packed", PERFORMANCE_PAGE)
def packed(r: Results) -> Table:
  d = r(PACKED)
  lat, load = d["latency_ms"], d["load_ms"]
  rows = [
      ["file size (MiB)", mib(d["float32_bytes"], 1), mib(d["packed_bytes"]), f"{d['size_ratio']:.1f}x smaller",
       src(PACKED)],
      ["load, file to device (ms)", f"{load['float32']:.1f}", f"{load['packed']:.1f}", "", src(PACKED)],
      ["forward pass, batch 1 (ms)", f"{lat['1']['float32']:.2f}", f"{lat['1']['packed']:.2f}", "", src(PACKED)],
      ["forward pass, batch 100 (ms)", f"{lat['100']['float32']:.1f}", f"{lat['100']['packed']:.1f}", "",
       src(PACKED)],
      ["identical predictions", "", "", "yes" if d["predictions_identical"] else "no", src(PACKED)],
  ]
  return Table([d["network"] + " mode network", "float32 `.npz`", "`save_packed` (1 bit)", "", "source"], rows)


@table("fully-binary", PERFORMANCE_PAGE)
def fully_binary(r: Results) -> Table:
  d = r(PACKED)["fully_binary"]
  rows = []
  for net, lat in (("MLP 784-2048x3-10", d["latency_ms"]), ("VGG (BinaryConnect)", d["vgg"]["latency_ms"])):
    for batch in sorted(lat, key=int):
      e = lat[batch]
      rows.append([net, batch, f"{e['float32']:.2f}", f"{e['packed']:.2f}", f"{e['packed_xla']:.2f}",
                   f"{e['float32'] / e['packed']:.1f}x", src(PACKED)])
  return Table(["fully binary network", "batch", "float32 simulation, ms", "packed, native kernel, ms",
                "packed, pure XLA, ms", "float32 / packed native", "source"], rows)


VGG50 = ("step_time_vgg_malloc/retained-256MiB.json", "step_time_vgg_malloc/retained-2GiB.json")


@table("vgg-batch50", PERFORMANCE_PAGE)
def vgg_batch50(r: Results) -> Table:
  rows = []
  for rel, limit in zip(VGG50, ("256 MiB (the default)", "2 GiB")):
    d = r(rel)
    b, s = step(r, rel, "vgg", "bayesbinn_k1"), step(r, rel, "vgg", "ste")
    rows.append([limit, f"{b['median_ms'] / 1000:.2f}", thousands(b["minor_faults_per_step"]),
                 f"{s['median_ms'] / 1000:.2f}", thousands(s["minor_faults_per_step"]),
                 f"{d['machine']['max_rss_mib'] / 1024:.2f}", src(rel)])
  return Table(["retained heap blocks up to", "BayesBiNN K = 1, s / step", "page faults / step", "STE-Adam, s / step",
                "page faults / step", "peak resident GiB", "source"], rows)


# --- Temperature page: the small tasks across temperatures (issue 30, part 3) ----------------

SMALL = "temperature-small"
SMALL_TEMPERATURES = ("1e-10", "1e-4", "1e-2", "1e-1", "1")
"""benchmarks/temperature_small.sh's temperatures; permuted MNIST has no T = 1 run."""


def small_runs(task: str) -> list[tuple[str, str]]:
  """(T, run folder relative to benchmarks/results) of ``task``'s runs, T increasing."""
  temperatures = SMALL_TEMPERATURES[:-1] if task == "permuted-mnist" else SMALL_TEMPERATURES
  return [(t, f"{SMALL}/{task}-tau{t}") for t in temperatures]


def three(values: list[str]) -> str:
  """Mode / MC C = 10 / MC C = 100 in one cell."""
  return " / ".join(values)


def mode_mc(r: Results, run: str, metric: str, fmt: Callable[[float], str]) -> str:
  """``metric`` of the mode (from the C = 10 evaluation), the MC predictive with C = 10 and
  with C = 100 (each from its evaluation-c<C>/summary.json)."""
  c10, c100 = r(f"{run}/evaluation-c10/summary.json"), r(f"{run}/evaluation-c100/summary.json")
  return three([fmt(c10[f"test_{metric}"]), fmt(c10[f"mc_test_{metric}"]), fmt(c100[f"mc_test_{metric}"])])


def _evaluations(run: str) -> str:
  return src(f"{run}/evaluation-c10/summary.json", f"{run}/evaluation-c100/summary.json")


def small_summary(task: str, t: str) -> str:
  return f"{SMALL}/{task}-tau{t}/summary.json"


def small_eval(task: str, t: str, samples: int) -> str:
  return f"{SMALL}/{task}-tau{t}/evaluation-c{samples}/summary.json"


def small(r: Results, task: str, t: str, samples: int) -> dict:
  """The evaluation with ``samples`` MC networks of ``task`` at temperature ``t``."""
  return r(small_eval(task, t, samples))


def avg_after_tasks(r: Results, t: str) -> str:
  return pct(r(small_summary("permuted-mnist", t))["avg_test_accuracy_after_task"][-1], 1)


def first_task(r: Results, t: str) -> str:
  return pct(r(small_summary("permuted-mnist", t))["test_accuracy_matrix"][-1][0], 1)


@table("temperature-two-moons", TEMPERATURE_PAGE)
def temperature_two_moons(r: Results) -> Table:
  rows = [[t, mode_mc(r, run, "accuracy", lambda x: pct(x, 1)), mode_mc(r, run, "nll", lambda x: num(x, 3)),
           mode_mc(r, run, "ece", lambda x: num(x, 3)), _evaluations(run)]
          for t, run in small_runs("two-moons")]
  return Table(["T", "test acc. (%), mode / C=10 / C=100", "test NLL", "test ECE", "source"], rows)


def gaussian_nll(x: float) -> str:
  """A Gaussian NLL of the samples' spread: 3 decimals, or 2 digits where a near-zero spread
  (a point-mass posterior; std floored at 1e-6) makes it huge."""
  return f"{x:.3f}" if abs(x) < 1000 else f"{x:.1e}"


@table("temperature-snelson", TEMPERATURE_PAGE)
def temperature_snelson(r: Results) -> Table:
  rows = []
  for t, run in small_runs("snelson"):
    c10, c100 = r(f"{run}/evaluation-c10/summary.json"), r(f"{run}/evaluation-c100/summary.json")
    rows.append([t, three([num(c10["train_rmse"], 3), num(c10["mc_train_rmse"], 3), num(c100["mc_train_rmse"], 3)]),
                 f"{gaussian_nll(c10['mc_train_nll'])} / {gaussian_nll(c100['mc_train_nll'])}", _evaluations(run)])
  return Table(["T", "RMSE, mode / C=10 / C=100", "NLL, C=10 / C=100", "source"], rows)


@table("temperature-continual", TEMPERATURE_PAGE)
def temperature_continual(r: Results) -> Table:
  rows = []
  for t, run in small_runs("permuted-mnist"):
    s = r(f"{run}/summary.json")
    rows.append([t, pct(s["avg_test_accuracy_after_task"][-1], 1), pct(s["test_accuracy_matrix"][-1][0], 1),
                 mode_mc(r, run, "accuracy", lambda x: pct(x, 2)), mode_mc(r, run, "nll", lambda x: num(x, 3)),
                 mode_mc(r, run, "ece", lambda x: num(x, 3)),
                 src(f"{run}/summary.json", f"{run}/evaluation-c10/summary.json", f"{run}/evaluation-c100/summary.json")])
  return Table(["T", "avg. acc. over 5 tasks (%), C=100", "task 1 after task 5 (%), C=100",
                "task 5 test acc. (%), mode / C=10 / C=100", "task 5 NLL", "task 5 ECE", "source"], rows)


SWEEP = "temperature-sweep"
SWEEP_TEMPERATURES = ("1e-10", "1e-4", "1e-2", "1e-1")
"""benchmarks/temperature_sweep.sh's temperatures (the MNIST MLP, 30 epochs, the recipe)."""
SWEEP_OOD = ("rot90", "cifar-gray")


def sweep_eval(t: str, samples: int, ood: str) -> str:
  return f"{SWEEP}/mnist-bayesbinn-tau{t}/evaluation-c{samples}-{ood}/summary.json"


def sweep_done(r: Results, t: str) -> bool:
  """Every evaluation of the run at ``t`` is written (C = 10 and 100, both OOD sets)."""
  return all(os.path.exists(r.path(sweep_eval(t, c, o))) for c in (10, 100) for o in SWEEP_OOD)


@table("temperature-sweep", TEMPERATURE_PAGE)
def temperature_sweep(r: Results) -> Table:
  """A row per temperature whose evaluations are all written: mode / MC C = 10 / MC C = 100
  (the mode's numbers from the C = 10 evaluation against rotated digits; its OOD AUROC
  against CIFAR-gray from that set's C = 10 evaluation)."""
  rows = []
  for t in (t for t in SWEEP_TEMPERATURES if sweep_done(r, t)):
    ev = {(c, o): r(sweep_eval(t, c, o)) for c in (10, 100) for o in SWEEP_OOD}

    def cell(metric: str, fmt: Callable[[float], str]) -> str:
      c10, c100 = ev[10, "rot90"], ev[100, "rot90"]
      return three([fmt(c10[f"test_{metric}"]), fmt(c10[f"mc_test_{metric}"]), fmt(c100[f"mc_test_{metric}"])])

    def ood(o: str) -> str:
      return three([num(ev[10, o]["ood_auroc"], 3), num(ev[10, o]["mc_ood_auroc"], 3),
                    num(ev[100, o]["mc_ood_auroc"], 3)])

    rows.append([t, cell("accuracy", lambda x: pct(x, 2)), cell("nll", lambda x: num(x, 3)),
                 cell("ece_calibrated", lambda x: num(x, 4)),
                 cell("misclassification_auroc", lambda x: num(x, 3)), ood("rot90"), ood("cifar-gray"),
                 src(*(sweep_eval(t, c, o) for o in SWEEP_OOD for c in (10, 100)))])
  return Table(["T", "test acc. (%), mode / C=10 / C=100", "test NLL", "calibrated ECE",
                "misclass. AUROC", "OOD AUROC, rotated digits", "OOD AUROC, CIFAR-gray", "source"], rows)


def sweep_gap(r: Results, metric: str, scale: float = 1.0, oods: tuple[str, ...] = ("rot90",)) -> float:
  """The largest |MC - mode| of ``metric`` over the finished temperatures, C = 10 and 100
  and the OOD sets ``oods`` (``metric`` "ood_auroc": ``ood_auroc`` / ``mc_ood_auroc``; else
  ``test_<metric>`` / ``mc_test_<metric>``)."""
  mode, mc = ("ood_auroc", "mc_ood_auroc") if metric == "ood_auroc" else (f"test_{metric}", f"mc_test_{metric}")
  return max(scale * abs(e[mc] - e[mode]) for t in SWEEP_TEMPERATURES if sweep_done(r, t)
             for c in (10, 100) for o in oods for e in [r(sweep_eval(t, c, o))])


def sweep_done_list(r: Results) -> str:
  done = [t for t in SWEEP_TEMPERATURES if sweep_done(r, t)]
  return ", ".join(done[:-1]) + " and " + done[-1] if len(done) > 1 else done[0]


# --- README: the headline table ----------------------------------------------------------


@table("results-table", README)
def headline(r: Results) -> Table:
  tm, seeds = r(TWO_MOONS), r(SEED_STATS)
  acc, mc = tm["stats"]["test_accuracy"], tm["stats"]["mc_test_accuracy"]
  bb, ste = seeds["mnist-bayesbinn"], seeds["mnist-ste"]
  h = r(f"{HUNDRED}/summary.json")
  fb = r("mnist-bayesbinn-binary-activations/summary.json")
  cl, cl0 = r("permuted-mnist-bayesbinn/summary.json"), r("permuted-mnist-bayesbinn-noprior/summary.json")
  k1 = step(r, STEP_MNIST, "mnist", "bayesbinn_k1")["ratio_to_optax_adam"]
  n = len(tm["seeds"])
  rows = [
      [f"two moons (the first command), {n} seeds", "test accuracy, mode / Monte Carlo (%)",
       f"{pm(acc['mean'], acc['std'], 1, 100)} / {pm(mc['mean'], mc['std'], 1, 100)}", "-", src(TWO_MOONS)],
      [f"MNIST MLP, BayesBiNN, {bb['epochs']} epochs, {len(bb['seeds'])} seeds", "test accuracy at best validation (%)",
       stat(bb, "test_accuracy_at_best_val", 2, 100), f"{PAPER_MNIST['bayesbinn']} (500 epochs)", src(SEED_STATS)],
      [f"MNIST MLP, STE-Adam, {ste['epochs']} epochs, {len(ste['seeds'])} seeds", "test accuracy at best validation (%)",
       stat(ste, "test_accuracy_at_best_val", 2, 100), f"{PAPER_MNIST['ste']} (500 epochs)", src(SEED_STATS)],
      [f"MNIST MLP, BayesBiNN, {h['epochs']} epochs, seed 0", "final test accuracy (%)", pct(h["test_accuracy"]),
       f"{PAPER_MNIST['bayesbinn']} (500 epochs)", src(f"{HUNDRED}/summary.json")],
      ["MNIST MLP, BayesBiNN, calibrated (T fitted on validation)", "test ECE raw -> calibrated",
       f"{stat(bb, 'test_ece', 3)} -> {stat(bb, 'test_ece_calibrated', 4)}", "-", src(SEED_STATS)],
      [f"fully binary MNIST MLP (binary activations), BayesBiNN, {fb['epochs']} epochs",
       "test accuracy at best validation (%)", pct(fb["test_accuracy_at_best_val"]), "-",
       src("mnist-bayesbinn-binary-activations/summary.json")],
      [f"permuted MNIST, {len(cl['avg_test_accuracy_after_task'])} tasks, BayesBiNN",
       "average test accuracy after the last task, prior = previous posterior / no prior (%)",
       f"{pct(cl['avg_test_accuracy_after_task'][-1])} / {pct(cl0['avg_test_accuracy_after_task'][-1])}", "-",
       src("permuted-mnist-bayesbinn/summary.json", "permuted-mnist-bayesbinn-noprior/summary.json")],
      ["one BayesBiNN training step (K = 1), MNIST MLP, 2-core CPU", "time relative to a plain `optax.adam` step",
       f"{k1:.2f}x", "-", src(STEP_MNIST)],
  ]
  for t in (t for t in SWEEP_TEMPERATURES if sweep_done(r, t)):
    e = r(sweep_eval(t, 100, "rot90"))
    rows.append([f"MNIST MLP, BayesBiNN, temperature {t} (the recipe), 30 epochs",
                 "test accuracy (%); OOD AUROC vs rotated digits; mode / Monte Carlo (C = 100)",
                 f"{pct(e['test_accuracy'])} / {pct(e['mc_test_accuracy'])}; {num(e['ood_auroc'], 3)} / "
                 f"{num(e['mc_ood_auroc'], 3)}", "-", src(sweep_eval(t, 100, "rot90"))])
  rows += cifar_jpeg_rows(r)
  return Table(["experiment", "metric", "bayesbinn_jax", "paper", "source, in `benchmarks/results/`"], rows)


def cifar_jpeg_rows(r: Results) -> list[list[str]]:
  """A row per finished CIFAR-10 (JPEG copy) run, beside the paper's 500 epochs on the original data."""
  rows = []
  for optimizer, run in CIFAR_JPEG_RUNS.items():
    rel = f"{run}/summary.json"
    if not os.path.exists(r.path(rel)):
      continue
    s = r(rel)
    rows.append([f"CIFAR-10 (JPEG copy), VGG, {OPTIMIZER_NAMES[optimizer]}, {s['epochs']} epochs, "
                 f"seed {s['seed']}", "test accuracy at best validation (%)",
                 pct(s["test_accuracy_at_best_val"]),
                 f"{PAPER_CIFAR10[optimizer]} (500 epochs, original CIFAR-10)", src(rel)])
  return rows


# ----------------------------------------------------------------------------- quotes


@dataclasses.dataclass
class Quote:
  """A number in a page's prose: ``text`` with ``{}`` where ``value(results)`` goes.

  ``source`` names the file the value comes from (for the message)."""
  page: str
  text: str
  source: str
  value: Callable[[Results], str]


def k1_ratio(r: Results) -> str:
  return f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k1')['ratio_to_optax_adam']:.2f}"


def vgg_epoch_minutes(r: Results) -> float:
  """Minutes per CIFAR-10 epoch (45,000 images, batch 50) at the measured batch-50 VGG step."""
  return 45000 / 50 * step(r, VGG50[0], "vgg", "bayesbinn_k1")["median_ms"] / 1000 / 60


QUOTES: list[Quote] = [
    # Results page.
    Quote(RESULTS_PAGE, "## The main job: two moons over {} seeds", TWO_MOONS, lambda r: str(len(r(TWO_MOONS)["seeds"]))),
    Quote(RESULTS_PAGE, "for seeds {} (`--seed S`", TWO_MOONS,
          lambda r: f"{min(r(TWO_MOONS)['seeds'])} to {max(r(TWO_MOONS)['seeds'])}"),
    Quote(RESULTS_PAGE, "the mode network's test accuracy is {}%", TWO_MOONS,
          lambda r: stat(r(TWO_MOONS)["stats"], "test_accuracy", 1, 100)),
    Quote(RESULTS_PAGE, "the Monte Carlo predictive's {}% (mean", TWO_MOONS,
          lambda r: stat(r(TWO_MOONS)["stats"], "mc_test_accuracy", 1, 100)),
    Quote(RESULTS_PAGE, "one seed takes about {} s on", TWO_MOONS,
          lambda r: f"{r(TWO_MOONS)['stats']['wall_seconds']['mean']:.0f}"),
    Quote(RESULTS_PAGE, "takes the ECE from {} to", SEED_STATS,
          lambda r: f"{r(SEED_STATS)['mnist-bayesbinn']['test_ece']['mean']:.2f}"),
    Quote(RESULTS_PAGE, "with T = {} for every seed", SEED_STATS,
          lambda r: f"{r(SEED_STATS)['mnist-bayesbinn']['temperature']['mean']:.2f}"),
    Quote(RESULTS_PAGE, "keeps {}% average accuracy", "permuted-mnist-bayesbinn/summary.json",
          lambda r: f"{100 * r('permuted-mnist-bayesbinn/summary.json')['avg_test_accuracy_after_task'][-1]:.0f}"),
    Quote(RESULTS_PAGE, "without it falls to {}%", "permuted-mnist-bayesbinn-noprior/summary.json",
          lambda r: f"{100 * r('permuted-mnist-bayesbinn-noprior/summary.json')['avg_test_accuracy_after_task'][-1]:.0f}"),
    Quote(RESULTS_PAGE, "batch of 50 took {} s on the 2-core AVX2 EPYC", VGG50[0],
          lambda r: f"{step(r, VGG50[0], 'vgg', 'bayesbinn_k1')['median_ms'] / 1000:.1f}"),
    Quote(RESULTS_PAGE, "an epoch of 45,000 images about {} minutes", VGG50[0],
          lambda r: f"{vgg_epoch_minutes(r):.0f}"),
    Quote(RESULTS_PAGE, "the paper's 500 epochs about {} days there", VGG50[0],
          lambda r: f"{500 * vgg_epoch_minutes(r) / 60 / 24:.0f}"),
    # Performance page.
    Quote(PERFORMANCE_PAGE, "an idle machine (jax {}, the", STEP_MNIST, lambda r: r(STEP_MNIST)["machine"]["jax"]),
    Quote(PERFORMANCE_PAGE, "784-2048x3-10 ({} M binary weights)", STEP_MNIST,
          lambda r: f"{r(STEP_MNIST)['results']['mnist']['num_weights'] / 1e6:.1f}"),
    Quote(PERFORMANCE_PAGE, "batch 100, {} timed steps each", STEP_MNIST,
          lambda r: str(r(STEP_MNIST)["settings"]["timed_steps"])),
    Quote(PERFORMANCE_PAGE, "K = 1 is {}x the plain `optax.adam` step", STEP_MNIST, k1_ratio),
    Quote(PERFORMANCE_PAGE, "met; {}x on the VGG", STEP_VGG,
          lambda r: f"{step(r, STEP_VGG, 'vgg', 'bayesbinn_k1')['median_ms'] / step(r, STEP_VGG, 'vgg', 'optax_adam')['median_ms']:.2f}"),
    Quote(PERFORMANCE_PAGE, "optimizer state and {}% less XLA peak memory", STEP_MNIST,
          lambda r: f"{100 * (1 - step(r, STEP_MNIST, 'mnist', 'bayesbinn_k1')['memory']['peak_mib'] / step(r, STEP_MNIST, 'mnist', 'optax_adam')['memory']['peak_mib']):.0f}"),
    Quote(PERFORMANCE_PAGE, "**K = 5 is {}x**", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k5')['ratio_to_optax_adam']:.2f}"),
    Quote(PERFORMANCE_PAGE, "passes only\") takes {} ms", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k5_passes')['median_ms']:.0f}"),
    Quote(PERFORMANCE_PAGE, "ms = {}x, so the five", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k5_passes')['ratio_to_optax_adam']:.2f}"),
    Quote(PERFORMANCE_PAGE, "costs 5 x {} ms more", NOISE,
          lambda r: f"{r(NOISE)['median_ms']['counter']['engine']:.1f}"),
    Quote(PERFORMANCE_PAGE, "The first library took {} ms for K = 1", "step_time_quick.json",
          lambda r: f"{step(r, 'step_time_quick.json', 'mnist', 'bayesbinn_k1')['median_ms']:.0f}"),
    Quote(PERFORMANCE_PAGE, "for K = 1 and {} ms for K = 5", "step_time_quick.json",
          lambda r: f"{step(r, 'step_time_quick.json', 'mnist', 'bayesbinn_k5')['median_ms']:.0f}"),
    Quote(PERFORMANCE_PAGE, "temporaries are its {} MiB of gradients", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k1')['memory']['temp_mib']:.0f}"),
    Quote(PERFORMANCE_PAGE, "which took {} page faults per step", STEP_MALLOC_DEFAULT,
          lambda r: thousands(step(r, STEP_MALLOC_DEFAULT, "mnist", "bayesbinn_k1")["minor_faults_per_step"])),
    Quote(PERFORMANCE_PAGE, "plain Adam step's {} MiB stayed", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'optax_adam')['memory']['temp_mib']:.0f}"),
    Quote(PERFORMANCE_PAGE, "runs {}x faster at 512 bits", NOISE,
          lambda r: f"{r(NOISE)['median_ms']['counter']['xla_default'] / r(NOISE)['median_ms']['counter']['engine']:.1f}"),
    Quote(PERFORMANCE_PAGE, "the default) is {}x faster than threefry", NOISE,
          lambda r: f"{r(NOISE)['median_ms']['threefry']['engine'] / r(NOISE)['median_ms']['counter']['engine']:.0f}"),
    Quote(PERFORMANCE_PAGE, "and {}x faster than XLA's RngBitGenerator", NOISE,
          lambda r: f"{r(NOISE)['median_ms']['rbg']['engine'] / r(NOISE)['median_ms']['counter']['engine']:.0f}"),
    Quote(PERFORMANCE_PAGE, "it costs {}x reading and writing", NOISE,
          lambda r: f"{r(NOISE)['median_ms']['counter']['engine'] / r(NOISE)['median_ms']['memory floor']['engine']:.0f}"),
    Quote(PERFORMANCE_PAGE, "in place: temporaries {} MiB, the gradients only", STEP_MNIST,
          lambda r: f"{step(r, STEP_MNIST, 'mnist', 'bayesbinn_k1')['memory']['temp_mib']:.0f}"),
    # Temperature page: the small tasks across temperatures (issue 30, part 3).
    Quote(TEMPERATURE_PAGE, "rises from {}% at 1e-10", small_summary("permuted-mnist", "1e-10"),
          lambda r: avg_after_tasks(r, "1e-10")),
    Quote(TEMPERATURE_PAGE, "to {}% at 1e-1 (task 1 kept", small_summary("permuted-mnist", "1e-1"),
          lambda r: avg_after_tasks(r, "1e-1")),
    Quote(TEMPERATURE_PAGE, "(task 1 kept at {})", small_summary("permuted-mnist", "1e-1"),
          lambda r: f"{first_task(r, '1e-10')}% -> {first_task(r, '1e-1')}%"),
    Quote(TEMPERATURE_PAGE, "Two moons at 1e-2: {} (C = 100)", small_eval("two-moons", "1e-2", 100),
          lambda r: f"{pct(small(r, 'two-moons', '1e-2', 10)['test_accuracy'], 1)}% -> "
                    f"{pct(small(r, 'two-moons', '1e-2', 100)['mc_test_accuracy'], 1)}%"),
    Quote(TEMPERATURE_PAGE, "its mode ({}) with a lower NLL", small_eval("two-moons", "1", 100),
          lambda r: f"{pct(small(r, 'two-moons', '1', 10)['test_accuracy'], 1)}% -> "
                    f"{pct(small(r, 'two-moons', '1', 100)['mc_test_accuracy'], 1)}%"),
    Quote(TEMPERATURE_PAGE, "RMSE is below its mode's ({},", small_eval("snelson", "1e-4", 100),
          lambda r: f"{num(small(r, 'snelson', '1e-4', 10)['train_rmse'], 3)} -> "
                    f"{num(small(r, 'snelson', '1e-4', 100)['mc_train_rmse'], 3)}"),
    Quote(TEMPERATURE_PAGE, "above the point mass's {}. At 1e-1 Snelson", small_eval("snelson", "1e-10", 100),
          lambda r: num(small(r, "snelson", "1e-10", 100)["mc_train_rmse"], 3)),
    Quote(TEMPERATURE_PAGE, "(temperatures: {}). With the recipe", SWEEP_1E10_ROT, sweep_done_list),
    Quote(TEMPERATURE_PAGE, "differ by at most {} points of test accuracy", SWEEP_1E10_ROT,
          lambda r: f"{sweep_gap(r, 'accuracy', 100):.2f}"),
    Quote(TEMPERATURE_PAGE, "their test NLL by at most {} and", SWEEP_1E10_ROT, lambda r: f"{sweep_gap(r, 'nll'):.3f}"),
    Quote(TEMPERATURE_PAGE, "their OOD AUROC (both sets) by at most {} (the table)", SWEEP_1E10_ROT,
          lambda r: f"{sweep_gap(r, 'ood_auroc', oods=SWEEP_OOD):.4f}"),
    # README: when the predictive differs from the mode (issue 30; docs/temperature.md).
    Quote(README, "the two agree to {} points)", SWEEP_1E10_ROT, lambda r: f"{sweep_gap(r, 'accuracy', 100):.2f}"),
    Quote(README, "predictive beats its mode (OOD AUROC +{}, accuracy", BAYES_S1,
          lambda r: f"{r(BAYES_S1)['mc_ood_auroc'] - r(BAYES_S1)['ood_auroc']:.3f}"),
    Quote(README, "accuracy +{} points)", BAYES_S1,
          lambda r: f"{100 * (r(BAYES_S1)['mc_test_accuracy'] - r(BAYES_S1)['test_accuracy']):.0f}"),
    Quote(README, "but both are {} points below", BAYES_S1,
          lambda r: f"{100 * (r(RECIPE_1E2)['test_accuracy'] - r(BAYES_S1)['mc_test_accuracy']):.0f}-"
                    f"{100 * (r(RECIPE_1E2)['test_accuracy'] - r(BAYES_S1)['test_accuracy']):.0f}"),
]


# ----------------------------------------------------------------------------- figures

FIGURES = {  # docs/figures/NAME: benchmarks/results/PATH
    "two_moons.png": "two_moons.png",
    "snelson.png": "snelson.png",
    "continual.png": "continual.png",
    "mnist-bayesbinn-seed0-reliability.png": "mnist-bayesbinn-seed0/reliability.png",
    "mnist-bayesbinn-seed0-ood_entropy.png": "mnist-bayesbinn-seed0/evaluation/ood_entropy.png",
    "mnist-ste-seed0-ood_entropy.png": "mnist-ste-seed0/evaluation/ood_entropy.png",
    "temperature-sweep.png": "temperature-sweep/accuracy_vs_ood_auroc.png",
}


# ----------------------------------------------------------------------------- regions


def markers(name: str, page: str) -> tuple[str, str]:
  if page == README:
    return "<!-- results-table:start -->", "<!-- results-table:end -->"
  return f"<!-- table:{name}:start -->", f"<!-- table:{name}:end -->"


def region_pattern(name: str, page: str) -> re.Pattern:
  start, end = markers(name, page)
  return re.compile(re.escape(start) + r"\n(.*?)" + re.escape(end), re.S)


def region_body(t: Table) -> str:
  return "\n" + t.render() + "\n\n"


def parse_table(body: str) -> list[list[str]]:
  return [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in body.splitlines() if line.strip().startswith("|")]


def describe_difference(name: str, page: str, t: Table, body: str) -> str:
  """The first cell where the page's table differs from the file's, as one message."""
  have, want = parse_table(body), [t.header, ["---"] * len(t.header)] + t.rows
  for i, (hrow, wrow) in enumerate(zip(have, want)):
    if i == 1:
      continue
    for j, wcell in enumerate(wrow):
      hcell = hrow[j] if j < len(hrow) else "(missing)"
      if hcell != wcell:
        column = t.header[j] if j < len(t.header) else str(j)
        if i == 0:
          return f"{page}, table {name}: header column {j} reads {hcell!r}, expected {wcell!r}"
        return (f"{page}, table {name}, row {wrow[0]!r}, column {column!r}: the page says {hcell!r}, "
                f"{wrow[-1].replace('`', '')} gives {wcell!r}")
  return f"{page}, table {name}: {len(have) - 2} rows on the page, {len(want) - 2} from the files (or spacing)"


def read(path: str) -> str | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return f.read()


def normalise(text: str) -> str:
  return re.sub(r"\s+", " ", text)


def quote_pattern(q: Quote) -> re.Pattern:
  """``q.text`` with its ``{}`` as a group of up to 40 characters and any whitespace as ``\\s+``."""
  before, after = (r"\s+".join(re.escape(w) for w in part.split(" ")) for part in q.text.split("{}"))
  return re.compile(before + r"(.{1,40}?)" + after, re.S)


def check_quote(q: Quote, text: str, r: Results) -> tuple[str | None, str]:
  """(a message when the page's number differs from the file's, or None; the text with it fixed)."""
  value = q.value(r)
  found = quote_pattern(q).search(text)
  if found is None:
    return (f"{q.page}: {q.text.format('...')!r} is not on the page "
            f"(its number comes from {RESULTS_DIR}/{q.source})"), text
  if normalise(found.group(1)) == value:
    return None, text
  fixed = text[:found.start(1)] + value + text[found.end(1):]
  return (f"{q.page}: {q.text.format(found.group(1))!r}: the page says {normalise(found.group(1))!r}, "
          f"{RESULTS_DIR}/{q.source} gives {value!r}"), fixed


def run(root: str = ROOT, check: bool = False, out: TextIO | None = None) -> list[str]:
  """Writes (or with ``check`` compares) every table, quote and figure under ``root``.

  Returns the differences found (``check``) as messages; missing pages or regions are
  reported on ``out`` and skipped."""
  out = out or sys.stdout
  r = Results(root)
  problems: list[str] = []
  pages: dict[str, str | None] = {}
  for name, (page, build) in TABLES.items():
    path = os.path.join(root, page)
    if page not in pages:
      pages[page] = read(path)
    text = pages[page]
    if text is None:
      print(f"skipped table {name}: {page} does not exist", file=out)
      continue
    pattern = region_pattern(name, page)
    match = pattern.search(text)
    if match is None:
      print(f"skipped table {name}: {page} has no {markers(name, page)[0]} region", file=out)
      continue
    try:
      t = build(r)
    except (OSError, KeyError, ValueError) as e:
      problems.append(f"{page}, table {name}: cannot build it from {RESULTS_DIR}: {type(e).__name__}: {e}")
      continue
    body = region_body(t)
    if match.group(1) != body:
      if check:
        problems.append(describe_difference(name, page, t, match.group(1)))
      else:
        pages[page] = text[:match.start(1)] + body + text[match.end(1):]
  for q in QUOTES:
    if q.page not in pages:
      pages[q.page] = read(os.path.join(root, q.page))
    text = pages[q.page]
    if text is None:
      continue
    try:
      problem, fixed = check_quote(q, text, r)
    except (OSError, KeyError, ValueError) as e:
      problems.append(f"{q.page}: quote {q.text!r}: cannot read {RESULTS_DIR}/{q.source}: {type(e).__name__}: {e}")
      continue
    if problem and (check or fixed == text):
      problems.append(problem)
    pages[q.page] = fixed
  for page in (RESULTS_PAGE, PERFORMANCE_PAGE):
    for target in re.findall(r"\]\(figures/([^)\s]+)\)", pages.get(page) or ""):
      if target not in FIGURES:
        problems.append(f"{page} shows figures/{target}, which FIGURES in benchmarks/tables.py does not copy")
  for target, source in FIGURES.items():
    dst, origin = os.path.join(root, FIGURES_DIR, target), r.path(source)
    if not os.path.exists(origin):
      problems.append(f"{FIGURES_DIR}/{target}: its source {RESULTS_DIR}/{source} does not exist")
      continue
    with open(origin, "rb") as f:
      data = f.read()
    current = open(dst, "rb").read() if os.path.exists(dst) else None
    if current != data:
      if check:
        problems.append(f"{FIGURES_DIR}/{target} is not a copy of {RESULTS_DIR}/{source}")
      else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
          f.write(data)
  if not check:
    for page, text in pages.items():
      path = os.path.join(root, page)
      if text is not None and text != read(path):
        with open(path, "w", encoding="utf-8") as f:
          f.write(text)
        print(f"wrote {page}", file=out)
  return problems


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="compare instead of writing; exit 1 naming each number that differs from its file")
  parser.add_argument("--root", default=ROOT, help="the checkout (default: the one holding this script)")
  args = parser.parse_args(argv)
  problems = run(args.root, check=args.check)
  for p in problems:
    print(p)
  if problems:
    print(f"{len(problems)} difference(s) between the docs and benchmarks/results/"
          + ("" if args.check else ": quoted sentences missing from their page"))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
