"""Executes the notebooks of notebooks/ at full size into docs/executed/, for the site's pages.

The notebooks are committed without outputs (tests/test_notebooks.py checks that, and runs
them in memory at smaller sizes). The site shows each one with its outputs from the executed
copy ``docs/executed/NAME.ipynb`` this script writes: the notebook run top to bottom with
nbclient (kernel ``python3``, working directory ``notebooks/``, the repository root first on
``PYTHONPATH``, as the test runs it), at the sizes written in the notebook. The copy records
how it was made in its metadata (``bayesbinn_jax_execution``: commit, time, host, wall
seconds, versions, size).

A copy that no longer matches its notebook (a cell's source changed, a cell added or removed)
is stale: the docs build refuses it and tests/test_docs_notebooks.py fails, both naming the
command that regenerates it::

  python docs/execute_notebooks.py 02_two_moons.ipynb    # one notebook (or several)
  python docs/execute_notebooks.py                       # all of them, one after another
  python docs/execute_notebooks.py --check               # no execution: list missing/stale copies

``--reduced`` runs a notebook at the test's smaller sizes (``SMALLER`` in
tests/test_notebooks.py) instead, for a notebook too long to run at full size; the copy then
says so in a visible cell at its top and in its metadata.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
EXECUTED_DIR = os.path.join(DOCS, "executed")
KERNEL_NAME = "python3"
META_KEY = "bayesbinn_jax_execution"
LABEL_KEY = "bayesbinn_jax_size_label"  # cell metadata marking the reduced-size label cell
# Outputs of interactive widgets hold their state, often megabytes, and render as nothing.
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


def notebook_names() -> list[str]:
  return sorted(os.path.basename(p) for p in glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))


def regenerate_command(name: str) -> str:
  return f"python docs/execute_notebooks.py {name}"


def _load(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def _source(cell: dict[str, Any]) -> str:
  source = cell.get("source", "")
  return "".join(source) if isinstance(source, list) else source


def _apply(replacements: dict[str, str], source: str) -> str:
  for old, new in replacements.items():
    source = source.replace(old, new)
  return source


def problems(name: str) -> list[str]:
  """Why ``docs/executed/NAME`` does not stand for ``notebooks/NAME`` (empty when it does).

  The copy's cells, less the reduced-size label, must be the notebook's cells in order, each
  of the same type and source (in a reduced copy, after the recorded size replacements), and
  every code cell must have run without an error output.
  """
  path = os.path.join(EXECUTED_DIR, name)
  if not os.path.exists(path):
    return [f"docs/executed/{name} is missing"]
  notebook, executed = _load(os.path.join(NOTEBOOK_DIR, name)), _load(path)
  meta = executed.get("metadata", {}).get(META_KEY)
  if not isinstance(meta, dict):
    return [f"docs/executed/{name} has no {META_KEY} metadata"]
  replacements = meta.get("replacements", {}) if meta.get("size") == "reduced" else {}
  cells = [c for c in executed["cells"] if not c.get("metadata", {}).get(LABEL_KEY)]
  found = []
  if len(cells) != len(notebook["cells"]):
    found.append(f"{len(cells)} cells, the notebook has {len(notebook['cells'])}")
  for index, (want, got) in enumerate(zip(notebook["cells"], cells)):
    expected = _source(want)
    if want["cell_type"] == "code":
      expected = _apply(replacements, expected)
    if want["cell_type"] != got["cell_type"] or expected != _source(got):
      found.append(f"cell {index} differs from the notebook's")
    if got["cell_type"] == "code":
      if got.get("execution_count") is None:
        found.append(f"cell {index} did not run")
      if any(o.get("output_type") == "error" for o in got.get("outputs", [])):
        found.append(f"cell {index} has an error output")
  return [f"docs/executed/{name}: {p}" for p in found]


def _git(*args: str) -> str:
  try:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    return ""


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
      for line in handle:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _smaller() -> dict[str, dict[str, str]]:
  """``SMALLER`` of tests/test_notebooks.py: notebook -> {full-size text: smaller text}."""
  spec = importlib.util.spec_from_file_location("_test_notebooks", os.path.join(ROOT, "tests", "test_notebooks.py"))
  assert spec and spec.loader
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.SMALLER


def _strip_widgets(notebook: Any) -> None:
  notebook.metadata.pop("widgets", None)
  for cell in notebook.cells:
    if cell.cell_type != "code":
      continue
    kept = []
    for output in cell.outputs:
      data = output.get("data")
      if data is not None:
        for mime in WIDGET_MIMES:
          data.pop(mime, None)
        if not data:
          continue
      kept.append(output)
    cell.outputs = kept


def execute(name: str, reduced: bool, timeout: int | None) -> float:
  """Runs notebooks/NAME top to bottom and writes docs/executed/NAME; returns the wall seconds."""
  import nbclient  # noqa: PLC0415 - the test extra's, needed only to execute
  import nbformat  # noqa: PLC0415

  notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
  replacements: dict[str, str] = {}
  if reduced:
    replacements = _smaller().get(name, {})
    if not replacements:
      raise SystemExit(f"{name}: SMALLER in tests/test_notebooks.py has no reduced sizes for it")
    for old, new in replacements.items():
      found = [c for c in notebook.cells if c.cell_type == "code" and old in c.source]
      if len(found) != 1 or found[0].source.count(old) != 1:
        raise SystemExit(f"{name}: {old!r} is not in exactly one code cell")
      found[0].source = found[0].source.replace(old, new)

  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
  start = time.perf_counter()

  def progress(cell: Any, cell_index: int, **_: Any) -> None:
    if cell.cell_type == "code":
      print(f"  {name} cell {cell_index} done at {time.perf_counter() - start:.0f} s", flush=True)

  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL_NAME,
                                   record_timing=False, resources={"metadata": {"path": NOTEBOOK_DIR}},
                                   on_cell_executed=progress)
  client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
  wall = time.perf_counter() - start
  _strip_widgets(notebook)

  changed = _git("status", "--porcelain", "--", "bayesbinn_jax", "notebooks")
  import jax  # noqa: PLC0415
  meta: dict[str, Any] = {
      "size": "reduced" if reduced else "full",
      "replacements": replacements,
      "commit": _git("rev-parse", "HEAD").strip(),
      "uncommitted_changes": [line[3:] for line in changed.splitlines() if line.strip()],
      "executed_at_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
      "wall_s": round(wall, 1),
      "host": {"name": platform.node(), "cpu": _cpu(), "cores": os.cpu_count(),
               "load_average": [round(x, 2) for x in os.getloadavg()]},
      "python": platform.python_version(),
      "jax": jax.__version__,
      "command": f"python docs/execute_notebooks.py {'--reduced ' if reduced else ''}{name}",
  }
  notebook.metadata[META_KEY] = meta
  if reduced:
    sizes = "; ".join(f"`{new.strip()}` instead of `{old.strip()}`" for old, new in replacements.items())
    label = nbformat.v4.new_markdown_cell(
        f"```{{note}}\nExecuted at reduced size: {sizes} (the test's sizes; the full-size run does "
        f"not fit this page's build). The numbers and figures below come from that smaller run; "
        f"run the notebook itself for the full-size results.\n```")
    label.metadata[LABEL_KEY] = True
    first = notebook.cells[0]
    at = 1 if first.cell_type == "markdown" and first.source.lstrip().startswith("#") else 0
    notebook.cells.insert(at, label)
  os.makedirs(EXECUTED_DIR, exist_ok=True)
  out = os.path.join(EXECUTED_DIR, name)
  nbformat.write(notebook, out + ".tmp")
  os.replace(out + ".tmp", out)
  return wall


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("names", nargs="*", help="notebooks to execute (default: all of notebooks/)")
  parser.add_argument("--reduced", action="store_true", help="at the test's smaller sizes (SMALLER)")
  parser.add_argument("--check", action="store_true", help="execute nothing; list missing or stale copies")
  parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
  args = parser.parse_args(argv)
  names = [os.path.basename(n) for n in args.names] or notebook_names()
  unknown = sorted(set(names) - set(notebook_names()))
  if unknown:
    parser.error(f"not in notebooks/: {unknown}")
  if args.check:
    found = [p for name in names for p in problems(name)]
    print("\n".join(found) if found else f"{len(names)} executed copies match their notebooks")
    return 1 if found else 0
  for name in names:
    print(f"{name}: executing ({'reduced' if args.reduced else 'full'} size) ...", flush=True)
    wall = execute(name, args.reduced, args.timeout)
    size = os.path.getsize(os.path.join(EXECUTED_DIR, name))
    print(f"{name}: {wall:.1f} s wall, docs/executed/{name} {size / 1024:.0f} KiB", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
