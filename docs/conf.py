"""Sphinx configuration of the bayesbinn_jax documentation site.

Build it with ``bash docs/build.sh`` (warnings are errors). Why these tools:
Sphinx with autodoc and napoleon renders our Google-style docstrings as they are
(optax and flax document themselves the same way); myst-nb reads the markdown
pages and the notebooks; furo is a plain, readable theme with a dark mode and
no configuration to keep.
"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, ROOT)  # the checkout's package, installed or not

from bayesbinn_jax._version import __version__  # noqa: E402
from sphinx.errors import ConfigError  # noqa: E402

project = "bayesbinn_jax"
author = "the bayesbinn_jax authors"
copyright = "the bayesbinn_jax authors, Apache-2.0"  # noqa: A001 - Sphinx's name
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]

# The notebooks live in ../notebooks, committed without outputs (tests/test_notebooks.py runs
# them there at smaller sizes). The pages show each one with its outputs, from its copy executed
# at full size, docs/executed/NAME.ipynb, which docs/execute_notebooks.py writes and
# tests/test_docs_notebooks.py checks against the notebook. The build refuses a copy that is
# missing or no longer matches its notebook (a cell edited, added or removed), naming the
# command that regenerates it, so a page never shows outputs of code other than the notebook's.
# Sphinx reads sources only under docs/, and the pages keep their names notebooks/NAME, so each
# build copies the executed copies into docs/notebooks/ (git-ignored), touching only the ones
# that changed.
_spec = importlib.util.spec_from_file_location("execute_notebooks", os.path.join(DOCS, "execute_notebooks.py"))
assert _spec is not None and _spec.loader is not None
_executed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_executed)
_NOTEBOOK_NAMES = _executed.notebook_names()
_stale = {name: _executed.problems(name) for name in _NOTEBOOK_NAMES}
_stale = {name: found for name, found in _stale.items() if found}
if _stale:
  raise ConfigError(
      "the notebook pages are built from the executed copies in docs/executed/, and these are "
      "missing or do not match notebooks/:\n" + "\n".join(
          f"  {line}" for found in _stale.values() for line in found)
      + "\nregenerate them (executes each notebook at full size) with:\n" + "\n".join(
          f"  {_executed.regenerate_command(name)}" for name in _stale))
_NOTEBOOKS_OUT = os.path.join(DOCS, "notebooks")
os.makedirs(_NOTEBOOKS_OUT, exist_ok=True)
for _name in _NOTEBOOK_NAMES:
  _src, _dst = os.path.join(_executed.EXECUTED_DIR, _name), os.path.join(_NOTEBOOKS_OUT, _name)
  if not os.path.exists(_dst) or not filecmp.cmp(_src, _dst, shallow=False):
    shutil.copy2(_src, _dst)
for _name in sorted(os.listdir(_NOTEBOOKS_OUT)):
  if _name.endswith(".ipynb") and _name not in _NOTEBOOK_NAMES:
    os.remove(os.path.join(_NOTEBOOKS_OUT, _name))  # a notebook removed upstream

# The copies are executed already: the build never executes a notebook.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

exclude_patterns = ["_build", "README.md", "executed", "**/.ipynb_checkpoints"]
# A link to a file outside docs/ (source, results) is written as a path in
# backticks on the pages; myst would otherwise try to copy it as a download.
myst_all_links_external = False

# autodoc: members in source order, type hints in the signature as written,
# Google-style sections through napoleon.
autodoc_member_order = "bysource"
# ignore-module-all: a module documents what it defines; the names its __all__
# re-exports from another module are documented there, once.
autodoc_default_options = {"members": True, "ignore-module-all": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# optax's and chex's aliases as written, not expanded into long unions.
autodoc_type_aliases = {name: name for name in (
    "optax.ScalarOrSchedule", "optax.Schedule", "optax.Params", "optax.Updates",
    "optax.OptState", "chex.PRNGKey", "chex.Array", "chex.ArrayTree")}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: NamedTuple fields are documented once
add_module_names = False


# The docstrings write absolute values as |x|, which reStructuredText reads as a
# substitution reference; escape such pipes outside literals and math blocks.
_ABS = re.compile(r"(?<![\\`|])\|([^|`\n]{1,40}?)\|(?![`|_])")


def _escape_abs_bars(app, what, name, obj, options, lines):
  in_math, math_indent = False, 0
  for i, line in enumerate(lines):
    stripped = line.lstrip()
    indent = len(line) - len(stripped)
    if in_math and stripped and indent <= math_indent:
      in_math = False
    if stripped.startswith(".. math::"):
      in_math, math_indent = True, indent
      continue
    if in_math or ":math:" in line or stripped.startswith((">>>", "... ")):
      continue
    parts = line.split("``")  # even parts are outside double-backtick literals
    lines[i] = "``".join(_ABS.sub(r"\\|\1\\|", part) if k % 2 == 0 else part
                         for k, part in enumerate(parts))


def _doctests_as_code_blocks(app, what, name, obj, options, lines):
  """Each run of doctest lines (from ``>>>`` to the next blank line) as a ``pycon`` code block.

  reStructuredText's doctest blocks refuse an indented output line (e.g. a wrapped list);
  a code block takes any indentation, and is highlighted."""
  out, i = [], 0
  while i < len(lines):
    stripped = lines[i].lstrip()
    if not stripped.startswith(">>>"):
      out.append(lines[i])
      i += 1
      continue
    indent = lines[i][:len(lines[i]) - len(stripped)]
    run = []
    while i < len(lines) and lines[i].strip():
      run.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
      i += 1
    if out and out[-1].strip():
      out.append("")
    out += [f"{indent}.. code-block:: pycon", ""] + [f"{indent}   {line}" for line in run] + [""]
  lines[:] = out


def setup(app):
  app.connect("autodoc-process-docstring", _escape_abs_bars)
  app.connect("autodoc-process-docstring", _doctests_as_code_blocks)


html_theme = "furo"
html_title = f"bayesbinn_jax {release}"
html_static_path: list[str] = []
