"""The site's notebook pages come from executed copies that stand for the committed notebooks.

docs/execute_notebooks.py runs each notebooks/NAME.ipynb top to bottom at full size and writes
docs/executed/NAME.ipynb; docs/conf.py builds the pages from those copies. Nothing is executed
here: for every notebook, its copy

- exists, and no copy is left without a notebook;
- has the notebook's cells, in order, each of the same type and with the same source, so that
  editing a notebook (code or prose) without executing it again fails, naming the notebook and
  the command; a copy at reduced size has exactly the test's ``SMALLER`` replacements in its code,
  says so in its metadata and in a visible cell at its top;
- ran every code cell once, top to bottom (execution counts 1, 2, ... n), without an error output,
  and shows some output (text and, where the notebook draws, a PNG);
- records how it was made (commit, time, host, wall seconds), and holds no widget state and
  stays small.

The comparison is written here again, with json alone, apart from the script's ``problems`` (which
the docs build uses); both are checked to catch an edited cell.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
EXECUTED_DIR = os.path.join(ROOT, "docs", "executed")
NOTEBOOKS = sorted(name for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb"))
META_KEY = "bayesbinn_jax_execution"
LABEL_KEY = "bayesbinn_jax_size_label"
MAX_COPY_BYTES = 1 << 20    # each copy: PNG figures and printed text, no widget state
MAX_TOTAL_BYTES = 3 << 20
WIDGET = re.compile(r"application/vnd\.jupyter\.widget-(view|state)\+json")
# The notebooks that draw a figure, so their pages must show a PNG.
DRAWS = ("01_quickstart.ipynb", "02_two_moons.ipynb", "03_snelson.ipynb", "04_continual_learning.ipynb")


def _module(name: str, path: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _load(path: str) -> dict:
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def _text(cell: dict) -> str:
  source = cell["source"]
  return "".join(source) if isinstance(source, list) else source


def _rerun(name: str) -> str:
  return f"run `python docs/execute_notebooks.py {name}` and commit docs/executed/{name}"


def differences(notebook: dict, executed: dict) -> list[str]:
  """Where the executed copy's cells (less the size label) are not the notebook's cells."""
  meta = executed["metadata"].get(META_KEY, {})
  replacements = meta.get("replacements", {}) if meta.get("size") == "reduced" else {}
  cells = [c for c in executed["cells"] if not c.get("metadata", {}).get(LABEL_KEY)]
  found = []
  if len(cells) != len(notebook["cells"]):
    found.append(f"{len(cells)} cells where the notebook has {len(notebook['cells'])}")
  for index, (want, got) in enumerate(zip(notebook["cells"], cells)):
    source = _text(want)
    if want["cell_type"] == "code":
      for old, new in replacements.items():
        source = source.replace(old, new)
    if (want["cell_type"], source) != (got["cell_type"], _text(got)):
      found.append(f"cell {index} ({want['cell_type']}) differs")
  return found


def test_every_notebook_has_an_executed_copy_and_every_copy_a_notebook():
  assert NOTEBOOKS
  copies = sorted(n for n in os.listdir(EXECUTED_DIR) if n.endswith(".ipynb")) if os.path.isdir(EXECUTED_DIR) else []
  missing = sorted(set(NOTEBOOKS) - set(copies))
  assert not missing, "no executed copy for " + "; ".join(f"{n}: {_rerun(n)}" for n in missing)
  orphans = sorted(set(copies) - set(NOTEBOOKS))
  assert not orphans, f"docs/executed/ holds copies of notebooks that are gone: {orphans}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_executed_copy_has_the_notebooks_cells(name):
  path = os.path.join(EXECUTED_DIR, name)
  if not os.path.exists(path):
    pytest.fail(f"docs/executed/{name} is missing: {_rerun(name)}")
  found = differences(_load(os.path.join(NOTEBOOK_DIR, name)), _load(path))
  assert not found, (f"notebooks/{name} changed since docs/executed/{name} was executed "
                     f"({'; '.join(found)}): {_rerun(name)}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_code_cell_ran_once_in_order_without_an_error(name):
  executed = _load(os.path.join(EXECUTED_DIR, name))
  code = [c for c in executed["cells"] if c["cell_type"] == "code"]
  assert code
  counts = [c["execution_count"] for c in code]
  assert counts == list(range(1, len(code) + 1)), (
      f"docs/executed/{name}: execution counts {counts}, not one top-to-bottom run: {_rerun(name)}")
  errors = [i for i, c in enumerate(code) if any(o["output_type"] == "error" for o in c["outputs"])]
  assert not errors, f"docs/executed/{name}: code cells {errors} raised: {_rerun(name)}"
  outputs = [o for c in code for o in c["outputs"]]
  assert any(o["output_type"] == "stream" and o["name"] == "stdout" for o in outputs), name
  if name in DRAWS:
    assert any("image/png" in o.get("data", {}) for o in outputs), f"docs/executed/{name} shows no figure"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_copy_records_how_and_at_what_size_it_was_executed(name):
  executed = _load(os.path.join(EXECUTED_DIR, name))
  meta = executed["metadata"][META_KEY]
  assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"]), meta["commit"]
  assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["executed_at_utc"])
  assert meta["wall_s"] > 0 and meta["host"]["cores"] >= 1 and meta["host"]["cpu"]
  labels = [c for c in executed["cells"] if c.get("metadata", {}).get(LABEL_KEY)]
  if meta["size"] == "full":
    assert meta["replacements"] == {} and not labels
    assert meta["command"] == f"python docs/execute_notebooks.py {name}"
  else:
    assert meta["size"] == "reduced", meta["size"]
    smaller = _module("_test_notebooks", os.path.join(ROOT, "tests", "test_notebooks.py")).SMALLER
    assert meta["replacements"] == smaller[name], "a reduced copy runs exactly the test's sizes"
    assert len(labels) == 1 and labels[0]["cell_type"] == "markdown"
    assert "Executed at reduced size" in _text(labels[0])
    assert executed["cells"].index(labels[0]) <= 1, "the label stands at the top of the page"


def test_the_copies_hold_no_widget_state_and_stay_small():
  sizes = {}
  for name in NOTEBOOKS:
    path = os.path.join(EXECUTED_DIR, name)
    with open(path, encoding="utf-8") as handle:
      text = handle.read()
    assert not WIDGET.search(text) and '"widgets"' not in text, f"docs/executed/{name} holds widget state"
    sizes[name] = os.path.getsize(path)
    assert sizes[name] <= MAX_COPY_BYTES, f"docs/executed/{name} is {sizes[name]} bytes"
  assert sum(sizes.values()) <= MAX_TOTAL_BYTES, sizes


def test_the_notebook_folder_stays_stripped_of_the_copies_outputs():
  """The copies are the only executed notebooks: notebooks/ itself holds none of their outputs."""
  for name in NOTEBOOKS:
    notebook = _load(os.path.join(NOTEBOOK_DIR, name))
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code"), name


def test_a_changed_cell_is_caught_here_and_by_the_build(tmp_path, monkeypatch):
  """An edited code cell, an edited prose cell, a removed cell and a cell that did not run."""
  name = NOTEBOOKS[0]
  notebook, executed = _load(os.path.join(NOTEBOOK_DIR, name)), _load(os.path.join(EXECUTED_DIR, name))
  assert differences(notebook, executed) == []
  script = _module("_execute_notebooks", os.path.join(ROOT, "docs", "execute_notebooks.py"))
  monkeypatch.setattr(script, "NOTEBOOK_DIR", str(tmp_path / "notebooks"))
  monkeypatch.setattr(script, "EXECUTED_DIR", str(tmp_path / "executed"))
  os.makedirs(script.NOTEBOOK_DIR)
  shutil.copytree(EXECUTED_DIR, script.EXECUTED_DIR)
  code = next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code")
  prose = next(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "markdown")

  def edited(index: int) -> dict:
    changed = copy.deepcopy(notebook)
    changed["cells"][index]["source"] = _text(changed["cells"][index]) + "\n# edited"
    return changed

  removed = copy.deepcopy(notebook)
  del removed["cells"][-1]
  for changed in (edited(code), edited(prose), removed):
    assert differences(changed, executed)
    with open(os.path.join(script.NOTEBOOK_DIR, name), "w", encoding="utf-8") as handle:
      json.dump(changed, handle)
    assert script.problems(name), "docs/conf.py would build a page from a stale copy"
  with open(os.path.join(script.NOTEBOOK_DIR, name), "w", encoding="utf-8") as handle:
    json.dump(notebook, handle)
  assert script.problems(name) == []
  not_run = copy.deepcopy(executed)
  not_run["cells"][code]["execution_count"] = None
  with open(os.path.join(script.EXECUTED_DIR, name), "w", encoding="utf-8") as handle:
    json.dump(not_run, handle)
  assert script.problems(name) == [f"docs/executed/{name}: cell {code} did not run"]
  os.remove(os.path.join(script.EXECUTED_DIR, name))
  assert script.problems(name) == [f"docs/executed/{name} is missing"]
