"""The README's main job (two moons with BayesBiNN) over several seeds: mean +- std.

Usage:
  python benchmarks/two_moons_seeds.py [--seeds 0-9] [--out benchmarks/results/two_moons_seeds.json]
      [--runs-dir DIR]

Runs ``python -m bayesbinn_jax two-moons --seed S`` (the README's first command,
one seed at a time, each in its own process, as a user runs it) with
``--no-figures --quiet`` (figures and the progress bar change no number) and
reads each run's ``summary.json``. Writes, per seed, the mode network's test
accuracy (``test_accuracy``), the Monte Carlo predictive accuracy over the
preset's 100 sampled networks (``mc_test_accuracy``), their NLL and ECE, the
training and wall time; and per metric the mean and the sample standard
deviation (ddof 1) over the seeds.

A single seed of this run (temperature 1, a posterior that is far from a point
mass) moves by several points of test accuracy with any change in the last bit
of a sample, so only the distribution over seeds is a number the code can keep.
The runs go to a temporary folder unless ``--runs-dir`` is given; with it, a seed whose
run there is complete (``summary.json`` and the ``wall_seconds.txt`` this script writes)
is read back instead of run again, so an interrupted sweep can be continued.

To measure committed code while the checkout changes, run it against a snapshot:
``git archive HEAD | tar -x -C SNAP && cd SNAP && PYTHONPATH=SNAP python
CHECKOUT/benchmarks/two_moons_seeds.py --out CHECKOUT/benchmarks/results/two_moons_seeds.json
--commit $(git -C CHECKOUT rev-parse HEAD)`` (from SNAP, so that ``python -m`` finds SNAP's package) (``--commit`` defaults to the checkout's HEAD, with
``-dirty`` when the package has uncommitted changes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from _output import write_json  # benchmarks/_output.py, which puts the checkout on sys.path

DEFAULT_OUT = os.path.join("benchmarks", "results", "two_moons_seeds.json")
METRICS = ("test_accuracy", "mc_test_accuracy", "test_nll", "mc_test_nll", "test_ece",
           "mc_test_ece", "train_seconds")


def parse_seeds(text: str) -> list[int]:
  """``"0-9"`` -> [0, ..., 9]; ``"0,3,5"`` -> [0, 3, 5]."""
  seeds: list[int] = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds.extend(range(int(lo), int(hi) + 1))
    else:
      seeds.append(int(part))
  return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0-9", help="seeds, e.g. 0-9 or 0,1,2 (default 0-9)")
  parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
  parser.add_argument("--runs-dir", default=None,
                      help="keep each seed's run in DIR/seedS and reuse complete ones (default: a temporary folder)")
  parser.add_argument("--commit", default=None,
                      help="the commit of the code that runs (default: the checkout's HEAD, +'-dirty')")
  return parser.parse_args(argv)


def seed_command(seed: int, out: str) -> list[str]:
  return [sys.executable, "-m", "bayesbinn_jax", "two-moons", "--seed", str(seed), "--out", out,
          "--no-figures", "--quiet"]


def run_seed(seed: int, runs_dir: str) -> dict[str, float]:
  out = os.path.join(runs_dir, f"seed{seed}")
  wall_file = os.path.join(out, "wall_seconds.txt")
  if os.path.exists(wall_file) and os.path.exists(os.path.join(out, "summary.json")):
    with open(wall_file, encoding="utf-8") as f:
      wall = float(f.read())
  else:
    start = time.perf_counter()
    subprocess.run(seed_command(seed, out), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(wall_file, "w", encoding="utf-8") as f:
      f.write(f"{wall}\n")
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  row = {"seed": seed, **{k: summary[k] for k in METRICS}, "wall_seconds": wall}
  print(f"seed {seed}: mode {summary['test_accuracy']:.4f}  MC {summary['mc_test_accuracy']:.4f}"
        f"  ({wall:.1f} s)", flush=True)
  return row


def aggregate(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
  stats = {}
  for k in METRICS + ("wall_seconds",):
    values = [r[k] for r in rows]
    stats[k] = {"mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}
  return stats


def checkout_commit() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  git = ["git", "-C", root]
  head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
  dirty = subprocess.run(git + ["status", "--porcelain", "bayesbinn_jax"], capture_output=True, text=True,
                         check=False).stdout.strip()
  return head + ("-dirty" if dirty else "") if head else "unknown"


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  seeds = parse_seeds(args.seeds)
  with tempfile.TemporaryDirectory() as tmp:
    runs_dir = args.runs_dir or tmp
    rows = [run_seed(s, runs_dir) for s in seeds]
  import jax  # pylint: disable=import-outside-toplevel
  import bayesbinn_jax  # pylint: disable=import-outside-toplevel
  payload = {
      "description": "python -m bayesbinn_jax two-moons (BayesBiNN, the paper's two-moons preset) "
                     "for each seed; mean and sample std (ddof 1) over the seeds",
      "command": "python -m bayesbinn_jax two-moons --seed S --no-figures --quiet",
      "script": "python benchmarks/two_moons_seeds.py --seeds " + args.seeds,
      "seeds": seeds,
      "per_seed": rows,
      "stats": aggregate(rows),
      "version": bayesbinn_jax.__version__,
      "commit": args.commit or checkout_commit(),
      "jax_version": jax.__version__,
      "python": platform.python_version(),
      "host": f"{cpu_model()}, {os.cpu_count()} CPUs",
      "load_average_at_end": list(os.getloadavg()),
      "note": "wall_seconds: the whole process (start, compile, 3000 epochs, evaluation); "
              "timed on a machine shared with other jobs",
  }
  write_json(args.out, payload)
  s = payload["stats"]
  print(f"mode {100 * s['test_accuracy']['mean']:.1f} +- {100 * s['test_accuracy']['std']:.1f}  "
        f"MC {100 * s['mc_test_accuracy']['mean']:.1f} +- {100 * s['mc_test_accuracy']['std']:.1f}")


if __name__ == "__main__":
  main()
