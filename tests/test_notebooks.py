"""The research notebooks in notebooks/ run top to bottom and are stored without outputs.

Each notebook is executed in memory with nbclient (kernel ``python3``, working
directory ``notebooks/``), never written back. The kernel imports this checkout
(the repository root is put first on ``PYTHONPATH``). Executing needs nbclient,
nbformat and ipykernel; without them the execution tests are skipped with the
reason. The stripping test needs nothing beyond the standard library.

Every cell runs as written except the size constants in :data:`SMALLER`: the
number of training steps, epochs and images, which set how long a loop runs
and not which code runs (a notebook still trains, evaluates, plots, exports
and checks its round trips on the smaller setting). A constant that is no
longer in its notebook fails the test, so the table follows the notebooks.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
EXPECTED = ("01_quickstart.ipynb", "02_two_moons.ipynb", "03_snelson.ipynb",
            "04_continual_learning.ipynb")
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 300

# Notebook -> {text in a code cell: what the test runs instead}.
SMALLER = {
    "01_quickstart.ipynb": {"num_steps = 3000\n": "num_steps = 500\n"},  # 500: one progress line
    "02_two_moons.ipynb": {"EPOCHS = 3000 ": "EPOCHS = 30 "},  # milestones 15 and 25, a line every 6
    "03_snelson.ipynb": {"EPOCHS = 5000 ": "EPOCHS = 50 "},
    "04_continual_learning.ipynb": {"NUM_TRAIN, NUM_TEST = 5000, 2000\n": "NUM_TRAIN, NUM_TEST = 500, 200\n",
                                    "EPOCHS_PER_TASK = 10\n": "EPOCHS_PER_TASK = 2\n"},  # 3 tasks kept
    "05_fully_binary.ipynb": {"NUM_TRAIN, NUM_TEST = 10000, 2000\n": "NUM_TRAIN, NUM_TEST = 1000, 200\n",
                              "HIDDEN, EPOCHS, BATCH_SIZE = 512, 3, 100":
                                  "HIDDEN, EPOCHS, BATCH_SIZE = 512, 1, 100"},
    "06_nnx.ipynb": {"MOONS_EPOCHS = 1000 ": "MOONS_EPOCHS = 60 ",  # milestones 30 and 50
                     "NUM_TRAIN, NUM_TEST = 60000, 10000\n": "NUM_TRAIN, NUM_TEST = 2000, 500\n"},
}


def test_the_research_notebooks_are_present():
  missing = sorted(set(EXPECTED) - set(NOTEBOOKS))
  assert not missing, f"notebooks/ lacks {missing}"


def _smaller(name: str, notebook) -> None:
  """Replaces each of the notebook's :data:`SMALLER` texts, each found exactly once, in place."""
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  for old, new in SMALLER.get(name, {}).items():
    found = [cell for cell in code if old in cell.source]
    assert len(found) == 1 and found[0].source.count(old) == 1, (
        f"{name}: {old!r} is not in exactly one code cell; update SMALLER in {__file__}")
    found[0].source = found[0].source.replace(old, new)


def test_every_smaller_setting_names_a_notebook():
  assert set(SMALLER) <= set(NOTEBOOKS), sorted(set(SMALLER) - set(NOTEBOOKS))


def _use_a_python3_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
  """Makes kernel ``python3`` resolvable, falling back to this interpreter's ipykernel.

  jupyter_client finds an installed ``python3`` kernelspec, or provides one itself
  when ipykernel is importable here; a spec whose command is ``python`` runs with
  ``sys.executable``. Should neither exist, a spec for this interpreter is written to
  a temporary Jupyter data directory.
  """
  from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: PLC0415

  try:
    KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    return
  except NoSuchKernel:
    pass
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (this interpreter)",
      "language": "python",
  }))
  monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
      p for p in (str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH")) if p))
  KernelSpecManager().get_kernel_spec(KERNEL_NAME)  # raises if still not found


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.slow
def test_notebook_runs_top_to_bottom(name, monkeypatch, tmp_path):
  import nbclient  # nbclient, nbformat and ipykernel: the test extra's
  import nbformat
  _use_a_python3_kernel(monkeypatch, tmp_path)
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))

  notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
  _smaller(name, notebook)
  client = nbclient.NotebookClient(
      notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
      resources={"metadata": {"path": NOTEBOOK_DIR}})
  client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert code_cells, f"{name} has no code cells"
  assert all(cell.execution_count is not None for cell in code_cells), f"{name}: a cell did not run"
  errors = [output for cell in code_cells for output in cell.outputs if output.output_type == "error"]
  assert not errors, f"{name}: {errors}"


def _notebooks_in_git() -> list[str]:
  """Every notebook git tracks, plus every notebook in notebooks/ (tracked or not yet)."""
  paths = {os.path.join(NOTEBOOK_DIR, name) for name in NOTEBOOKS}
  try:
    # docs/executed/ holds the executed copies the site shows (tests/test_docs_notebooks.py)
    listed = subprocess.run(["git", "ls-files", "-z", "--", "*.ipynb", ":(exclude)docs/executed/"],
                            cwd=ROOT, capture_output=True,
                            check=True, timeout=60).stdout.decode().split("\0")
    paths.update(os.path.join(ROOT, p) for p in listed if p and os.path.exists(os.path.join(ROOT, p)))
  except (OSError, subprocess.SubprocessError):
    pass  # no git (e.g. an sdist): the notebooks in notebooks/ are still checked
  return sorted(paths)


def test_notebooks_are_stored_without_outputs():
  paths = _notebooks_in_git()
  assert paths, "no notebooks found"
  dirty = []
  for path in paths:
    with open(path, encoding="utf-8") as handle:
      notebook = json.load(handle)
    for index, cell in enumerate(notebook["cells"]):
      if cell["cell_type"] != "code":
        continue
      if cell.get("outputs"):
        dirty.append(f"{os.path.relpath(path, ROOT)} cell {index}: has outputs")
      if cell.get("execution_count") is not None:
        dirty.append(f"{os.path.relpath(path, ROOT)} cell {index}: execution_count "
                     f"{cell['execution_count']}")
  assert not dirty, ("notebooks must be committed stripped (no outputs, execution_count null); "
                     "notebooks/README.md shows how to strip them:\n"
                     + "\n".join(dirty))
