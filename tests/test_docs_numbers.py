"""The numbers in docs/results.md, docs/performance.md and the README's headline table agree
with the committed results files (benchmarks/tables.py --check), and the check catches a
number that does not."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tables  # noqa: E402  pylint: disable=wrong-import-position

PAGES = (tables.RESULTS_PAGE, tables.PERFORMANCE_PAGE, tables.README)


def test_every_quoted_number_matches_its_file():
  out = io.StringIO()
  problems = tables.run(ROOT, check=True, out=out)
  assert problems == [], "\n".join(problems) + "\nrun: python benchmarks/tables.py"
  # The two pages exist and every table of theirs was compared (only the README's region may be
  # missing while the README is being rewritten).
  skipped = out.getvalue()
  assert tables.RESULTS_PAGE not in skipped and tables.PERFORMANCE_PAGE not in skipped, skipped


def copy_checkout(tmp_path, results_copied: tuple[str, ...] = (),
                  results_left_out: tuple[str, ...] = ()) -> str:
  """The pages (and figures) copied under tmp_path; benchmarks/results linked entry by entry,
  except ``results_copied`` (paths relative to it), which are copied so a test may edit them
  (a test writes through a link into the checkout's own results), and ``results_left_out``
  (entries of it), which the copy lacks."""
  root = str(tmp_path)
  for page in PAGES:
    if os.path.exists(os.path.join(ROOT, page)):
      os.makedirs(os.path.dirname(os.path.join(root, page)), exist_ok=True)
      shutil.copy(os.path.join(ROOT, page), os.path.join(root, page))
  shutil.copytree(os.path.join(ROOT, tables.FIGURES_DIR), os.path.join(root, tables.FIGURES_DIR))
  src, dst = os.path.join(ROOT, tables.RESULTS_DIR), os.path.join(root, tables.RESULTS_DIR)
  os.makedirs(dst)
  tops = {rel.split("/")[0] for rel in results_copied}
  for entry in os.listdir(src):
    if entry not in tops and entry not in results_left_out:
      os.symlink(os.path.join(src, entry), os.path.join(dst, entry))
  for top in tops:
    if not os.path.exists(os.path.join(src, top)):
      continue                                        # not in the checkout: the test writes it
    if os.path.isdir(os.path.join(src, top)):
      shutil.copytree(os.path.join(src, top), os.path.join(dst, top))
    else:
      shutil.copy(os.path.join(src, top), os.path.join(dst, top))
  # The copy starts consistent with its files (whatever the checkout's state), so each test
  # sees only the difference it makes.
  tables.run(root, check=False, out=io.StringIO())
  assert tables.run(root, check=True, out=io.StringIO()) == []
  return root


def edit(path: str, old: str, new: str) -> None:
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert text.count(old) >= 1, old
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(old, new, 1))


def test_a_tampered_table_cell_is_named_with_its_file(tmp_path):
  root = copy_checkout(tmp_path)
  # The K = 1 row of the step-time table: 51.8 ms in step_time_mnist_15rounds.json.
  edit(os.path.join(root, tables.PERFORMANCE_PAGE), "| **BayesBiNN K = 1** | **51.8** |",
       "| **BayesBiNN K = 1** | **41.8** |")
  problems = tables.run(root, check=True, out=io.StringIO())
  assert len(problems) == 1, problems
  assert "table step-time" in problems[0] and "'MNIST ms'" in problems[0]
  assert "'**41.8**'" in problems[0] and "'**51.8**'" in problems[0]
  assert "step_time_mnist_15rounds.json" in problems[0]
  # Writing puts the file's number back, and the check passes again.
  tables.run(root, check=False, out=io.StringIO())
  assert tables.run(root, check=True, out=io.StringIO()) == []


def test_a_tampered_prose_number_is_named_with_its_file(tmp_path):
  root = copy_checkout(tmp_path)
  path = os.path.join(root, tables.PERFORMANCE_PAGE)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  k1 = tables.k1_ratio(tables.Results(ROOT))
  assert f"K = 1 is {k1}x the plain" in text
  edit(path, f"K = 1 is {k1}x the plain", "K = 1 is 0.99x the plain")
  problems = tables.run(root, check=True, out=io.StringIO())
  assert len(problems) == 1, problems
  assert "'0.99'" in problems[0] and repr(k1) in problems[0] and "step_time_mnist_15rounds.json" in problems[0]
  # A sentence reworded so that its number is no longer found is a failure too.
  edit(path, "K = 1 is 0.99x the plain", "K = 1 costs 0.99x the plain")
  (problem,) = tables.run(root, check=True, out=io.StringIO())
  assert "is not on the page" in problem


def test_a_changed_results_file_fails_the_check(tmp_path):
  root = copy_checkout(tmp_path, results_copied=("mnist-bayesbinn-100ep",))
  path = os.path.join(root, tables.RESULTS_DIR, "mnist-bayesbinn-100ep", "summary.json")
  with open(path, encoding="utf-8") as f:
    summary = json.load(f)
  summary["test_accuracy"] = 0.9850  # was 0.9886
  with open(path, "w", encoding="utf-8") as f:
    json.dump(summary, f)
  problems = tables.run(root, check=True, out=io.StringIO())
  text = "\n".join(problems)
  # The runs table and the 100-epoch table of the results page (and the README's headline
  # table when it has its region) quote it.
  assert "table runs, row 'mnist-bayesbinn-100ep'" in text and "'98.50'" in text and "'98.86'" in text
  assert "table mnist-100ep" in text
  assert all("mnist-bayesbinn-100ep/summary.json" in p for p in problems), problems


def test_the_two_moons_distribution_is_the_mean_and_sample_std_of_its_seeds():
  with open(os.path.join(ROOT, tables.RESULTS_DIR, tables.TWO_MOONS), encoding="utf-8") as f:
    d = json.load(f)
  assert len(d["per_seed"]) == len(d["seeds"]) >= 10
  for key in ("test_accuracy", "mc_test_accuracy"):
    values = [row[key] for row in d["per_seed"]]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    assert d["stats"][key]["mean"] == pytest.approx(mean, abs=1e-12)
    assert d["stats"][key]["std"] == pytest.approx(std, abs=1e-12)


def test_a_stale_figure_copy_fails_the_check(tmp_path):
  root = copy_checkout(tmp_path)
  with open(os.path.join(root, tables.FIGURES_DIR, "two_moons.png"), "ab") as f:
    f.write(b"\0")
  (problem,) = tables.run(root, check=True, out=io.StringIO())
  assert "two_moons.png is not a copy" in problem
  tables.run(root, check=False, out=io.StringIO())  # copies it again
  edit(os.path.join(root, tables.RESULTS_PAGE), "](figures/snelson.png)", "](figures/snelson-old.png)")
  (problem,) = tables.run(root, check=True, out=io.StringIO())
  assert "shows figures/snelson-old.png" in problem


def test_the_command_line_exits_1_naming_the_table(tmp_path, capsys):
  root = copy_checkout(tmp_path)
  assert tables.main(["--check", "--root", root]) == 0
  edit(os.path.join(root, tables.RESULTS_PAGE), "| mnist-bop | 15 | 96.66 |", "| mnist-bop | 15 | 98.66 |")
  assert tables.main(["--check", "--root", root]) == 1
  out = capsys.readouterr().out
  assert "docs/results.md, table runs, row 'mnist-bop'" in out and "'98.66'" in out and "'96.66'" in out


def test_a_missing_readme_region_is_skipped_with_a_message(tmp_path):
  root = copy_checkout(tmp_path)
  with open(os.path.join(root, tables.README), "w", encoding="utf-8") as f:
    f.write("# no headline table yet\n")
  out = io.StringIO()
  readme_quotes = [q for q in tables.QUOTES if q.page == tables.README]
  # The README's prose quotes are gone with it (each named as missing); no table is asked for.
  problems = tables.run(root, check=True, out=out)
  assert len(problems) == len(readme_quotes) and all("is not on the page" in p for p in problems)
  assert "skipped table results-table: README.md has no <!-- results-table:start --> region" in out.getvalue()
  # Once the region exists (empty), the check asks for the table and writing fills it.
  with open(os.path.join(root, tables.README), "w", encoding="utf-8") as f:
    f.write("# t\n\n<!-- results-table:start -->\n<!-- results-table:end -->\n")
  problems = tables.run(root, check=True, out=io.StringIO())
  (problem,) = [p for p in problems if "is not on the page" not in p]
  assert "README.md, table results-table" in problem
  tables.run(root, check=False, out=io.StringIO())
  with open(os.path.join(root, tables.README), encoding="utf-8") as f:
    text = f.read()
  assert "| two moons (the first command)" in text and "`two_moons_seeds.json`" in text
  problems = tables.run(root, check=True, out=io.StringIO())
  assert len(problems) == len(readme_quotes) and all("is not on the page" in p for p in problems)


def test_a_missing_results_file_is_named_not_a_crash(tmp_path):
  root = copy_checkout(tmp_path, results_copied=(tables.TWO_MOONS,))
  os.remove(os.path.join(root, tables.RESULTS_DIR, tables.TWO_MOONS))
  problems = tables.run(root, check=True, out=io.StringIO())
  assert problems and all(tables.TWO_MOONS in p for p in problems), problems
  assert any("table two-moons-seeds: cannot build it" in p for p in problems)


def test_the_sweep_table_has_a_row_per_finished_temperature(tmp_path):
  """docs/temperature.md's sweep table and the README's sweep rows: a temperature appears once
  all four of its evaluations (C = 10 and 100, rotated digits and CIFAR-gray) are written,
  mode / C = 10 / C = 100 read from the right files."""
  sweep = os.path.join(tables.RESULTS_DIR, tables.SWEEP)
  shutil.copytree(os.path.join(ROOT, sweep), os.path.join(tmp_path, sweep))
  done = [t for t in tables.SWEEP_TEMPERATURES if all(
      os.path.exists(os.path.join(ROOT, tables.RESULTS_DIR, tables.sweep_eval(t, c, o)))
      for c in (10, 100) for o in ("rot90", "cifar-gray"))]
  assert "1e-10" in done
  rows = tables.temperature_sweep(tables.Results(str(tmp_path))).rows
  assert [row[0] for row in rows] == done
  read = lambda c, o: json.load(open(os.path.join(ROOT, tables.RESULTS_DIR, tables.sweep_eval("1e-10", c, o))))
  c10, c100 = read(10, "rot90"), read(100, "rot90")
  assert rows[0][1] == (f"{100 * c10['test_accuracy']:.2f} / {100 * c10['mc_test_accuracy']:.2f} / "
                        f"{100 * c100['mc_test_accuracy']:.2f}")
  gray10, gray100 = read(10, "cifar-gray"), read(100, "cifar-gray")
  assert rows[0][6] == (f"{gray10['ood_auroc']:.3f} / {gray10['mc_ood_auroc']:.3f} / "
                        f"{gray100['mc_ood_auroc']:.3f}")
  os.remove(os.path.join(tmp_path, tables.RESULTS_DIR, tables.sweep_eval("1e-10", 100, "cifar-gray")))
  rows = tables.temperature_sweep(tables.Results(str(tmp_path))).rows
  assert [row[0] for row in rows] == [t for t in done if t != "1e-10"]


def test_a_finished_cifar_jpeg_run_gets_its_readme_row(tmp_path):
  """Issue 27: once a CIFAR-10 (JPEG copy) run's summary is committed, the README's results
  table must gain its row (the check fails until the table is regenerated), with the paper's
  500-epoch number beside it; a run without a summary gets none. The runs are copied (the
  summary written here must not reach the checkout's own) and STE's left out."""
  runs = tables.CIFAR_JPEG_RUNS
  root = copy_checkout(tmp_path, results_copied=(runs["bayesbinn"],),
                       results_left_out=(runs["ste"],))
  mine = os.path.join(ROOT, tables.RESULTS_DIR, runs["bayesbinn"], "summary.json")
  before = open(mine, "rb").read() if os.path.exists(mine) else None
  run = os.path.join(root, tables.RESULTS_DIR, tables.CIFAR_JPEG_RUNS["bayesbinn"])
  os.makedirs(run, exist_ok=True)
  with open(os.path.join(run, "summary.json"), "w", encoding="utf-8") as f:
    json.dump({"epochs": 5, "seed": 0, "test_accuracy_at_best_val": 0.81234, "test_accuracy": 0.8111,
               "experiment": "cifar10", "optimizer": "bayesbinn", "test_nll": 0.61, "test_ece": 0.05,
               "train_seconds": 15000.0}, f)
  problems = tables.run(root, check=True, out=io.StringIO())
  assert any("results-table" in p for p in problems), problems
  tables.run(root, check=False, out=io.StringIO())
  assert tables.run(root, check=True, out=io.StringIO()) == []
  with open(os.path.join(root, tables.README), encoding="utf-8") as f:
    readme = f.read()
  assert ("| CIFAR-10 (JPEG copy), VGG, BayesBiNN, 5 epochs, seed 0 | test accuracy at best "
          "validation (%) | 81.23 | 93.72 +- 0.16 (500 epochs, original CIFAR-10) |") in readme
  assert "STE-Adam, 5 epochs" not in readme
  with open(os.path.join(root, tables.RESULTS_PAGE), encoding="utf-8") as f:
    results_page = f.read()
  assert "| cifar10-jpeg-bayesbinn | 5 | 81.23 | 81.11 |" in results_page
  assert "| 250.0 min | 93.72 +- 0.16 |" in results_page
  assert (open(mine, "rb").read() if os.path.exists(mine) else None) == before
