"""The documentation site's sources hold together, without building it (docs/build.sh builds it).

- Every page under docs/ (and every notebook) is reachable from docs/index.md through the
  toctrees, so Sphinx never warns "document isn't included in any toctree" and no page is lost.
- Every relative link and image in README.md and the pages names a file that exists, and every
  ``{doc}`` reference names a page.
- The README is the front door: at most 200 lines, starting with the two set-up commands.
- The API reference names every public name of ``bayesbinn_jax`` and ``bayesbinn_jax.nn`` (and
  of ``nnx`` and ``data``) at a module that defines that very object, and documents every
  public module of the package.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import pkgutil
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
NOTEBOOKS = os.path.join(ROOT, "notebooks")
# the build, the copies of docs/executed/ conf.py makes, and the executed notebooks themselves
SKIP_DIRS = {"_build", "notebooks", "executed"}
COMMANDS = ("pip install -e . && python -m bayesbinn_jax two-moons",
            "pip install -e '.[test]' && python -m pytest -q -n 2")

FENCE = re.compile(r"^(```+|~~~+)(.*)$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`")
AUTOSUMMARY_ITEM = re.compile(r"^\s+~?(bayesbinn_jax(?:\.\w+)+)\s*$")
AUTO_DIRECTIVE = re.compile(r"^\.\. auto(module|function|class|data)::\s+(bayesbinn_jax[\w.]*)\s*$")


def pages() -> list[str]:
  """The docnames of every markdown page under docs/ ("guides/cli" for docs/guides/cli.md)."""
  found = []
  for folder, dirs, files in os.walk(DOCS):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
    for name in files:
      if name.endswith(".md") and not (folder == DOCS and name == "README.md"):
        found.append(os.path.relpath(os.path.join(folder, name), DOCS)[:-3].replace(os.sep, "/"))
  return sorted(found)


def notebook_docnames() -> list[str]:
  return sorted(f"notebooks/{name[:-6]}" for name in os.listdir(NOTEBOOKS) if name.endswith(".ipynb"))


def read(docname: str) -> str:
  with open(os.path.join(DOCS, docname + ".md"), encoding="utf-8") as handle:
    return handle.read()


def blocks(text: str) -> list[tuple[str, list[str]]]:
  """The fenced blocks of a page: (the text after the fence, e.g. "{toctree}", the lines inside)."""
  found, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    start = FENCE.match(lines[i])
    if start:
      fence, info, body = start.group(1), start.group(2).strip(), []
      i += 1
      while i < len(lines) and not lines[i].startswith(fence):
        body.append(lines[i])
        i += 1
      found.append((info, body))
    i += 1
  return found


def prose(text: str) -> str:
  """The page without its fenced blocks (links in code are not links), and without inline code."""
  kept, fence = [], None
  for line in text.splitlines():
    start = FENCE.match(line)
    if fence is None and start:
      fence = start.group(1)
    elif fence is not None and line.startswith(fence):
      fence = None
    elif fence is None:
      kept.append(re.sub(r"``[^`]*``|`[^`]*`", "", line))
  return "\n".join(kept)


def toctree_children(docname: str, available: set[str]) -> list[str]:
  """The docnames a page's toctrees name, resolved as Sphinx does (relative to the page, globs)."""
  base = os.path.dirname(docname)
  children = []
  for info, body in blocks(read(docname)):
    if info != "{toctree}":
      continue
    glob = any(line.strip() == ":glob:" for line in body)
    for line in body:
      entry = line.strip()
      if not entry or entry.startswith(":"):
        continue
      entry = re.sub(r"^.*<(.+)>$", r"\1", entry)  # "Title <docname>"
      target = entry[1:] if entry.startswith("/") else os.path.normpath(os.path.join(base, entry)).replace(os.sep, "/")
      if glob and any(c in target for c in "*?["):
        matched = sorted(d for d in available if fnmatch.fnmatch(d, target))
        assert matched, f"docs/{docname}.md: the toctree glob {entry!r} matches no page"
        children += matched
      else:
        children.append(target)
  return children


def test_every_page_and_notebook_is_reachable_from_the_index():
  available = set(pages()) | set(notebook_docnames())
  assert "index" in available
  seen, todo = set(), ["index"]
  while todo:
    docname = todo.pop()
    if docname in seen:
      continue
    seen.add(docname)
    if docname.startswith("notebooks/"):
      continue  # a notebook has no toctree of its own
    for child in toctree_children(docname, available):
      assert child in available, f"docs/{docname}.md: the toctree names {child!r}, which is no page"
      todo.append(child)
  unreachable = sorted(available - seen)
  assert not unreachable, f"pages in no toctree reachable from docs/index.md: {unreachable}"


def test_the_index_lists_the_results_and_performance_pages():
  children = toctree_children("index", set(pages()) | set(notebook_docnames()))
  for page in ("getting_started", "results", "performance", "api/index", "architecture", "temperature"):
    assert page in children, f"docs/index.md's toctrees lack {page!r}"


@pytest.mark.parametrize("path", ["README.md"] + [f"docs/{d}.md" for d in pages()])
def test_every_relative_link_resolves(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
    text = handle.read()
  folder = os.path.dirname(os.path.join(ROOT, path))
  targets = LINK.findall(prose(text))
  for info, body in blocks(text):  # {image} and {figure} directives name their file after the fence
    if re.match(r"\{(image|figure)\}\s*\S", info):
      targets.append(info.split(None, 1)[1])
  broken = []
  for target in targets:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
      continue  # http(s):, mailto:, an anchor in the page
    file = target.split("#", 1)[0]
    if not os.path.exists(os.path.normpath(os.path.join(folder, file))):
      broken.append(target)
  if path.startswith("docs/"):
    docname = path[len("docs/"):-3]
    available = set(pages()) | set(notebook_docnames())
    for ref in DOC_ROLE.findall(text):
      target = ref[1:] if ref.startswith("/") else os.path.normpath(
          os.path.join(os.path.dirname(docname), ref)).replace(os.sep, "/")
      if target not in available:
        broken.append("{doc}`" + ref + "`")
  assert not broken, f"{path}: links to nothing: {broken}"


def test_the_link_checker_catches_a_broken_link():
  assert LINK.findall(prose("see [a](docs/none.md) and ![](x.png) but not `[b](c.md)`")) == ["docs/none.md", "x.png"]
  assert DOC_ROLE.findall("{doc}`guides/cli` and {doc}`the API <api/index>`") == ["guides/cli", "api/index"]


def test_the_readme_is_short_and_starts_with_the_two_commands():
  with open(README, encoding="utf-8") as handle:
    text = handle.read()
  lines = text.splitlines()
  assert len(lines) <= 200, f"README.md has {len(lines)} lines; the front door keeps at most 200"
  info, body = blocks(text)[0]
  assert info == "bash", "the README's first code block is the two set-up commands"
  commands = [line for line in body if line.strip() and not line.startswith("#")]
  assert commands == list(COMMANDS), commands
  first = next(i for i, line in enumerate(lines) if line.startswith("```"))
  assert first < 10, f"the two commands start at line {first + 1}; they come first"
  assert "bash docs/build.sh" in text, "the README says how to build the site"
  ci = os.path.join(ROOT, ".ci", "run")
  if os.path.exists(ci):  # .ci/run runs the README's test command verbatim
    with open(ci, encoding="utf-8") as handle:
      assert COMMANDS[1] in handle.read()


def test_the_readme_and_getting_started_show_the_same_trainstate_loop():
  """tests/test_readme.py runs the README's block, tests/test_nnx.py the page's: they are one."""
  heading = "## BayesBiNN in a Flax TrainState loop"
  def loop(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)
  with open(README, encoding="utf-8") as handle:
    assert loop(handle.read()) == loop(read("getting_started"))


def api_text() -> str:
  return "\n".join(read(d) for d in pages() if d.startswith("api/"))


def api_lines() -> list[str]:
  return [line for d in pages() if d.startswith("api/") for info, body in blocks(read(d))
          if info == "{eval-rst}" for line in body]


@pytest.mark.parametrize("package", ["bayesbinn_jax", "bayesbinn_jax.nn", "bayesbinn_jax.nnx", "bayesbinn_jax.data"])
def test_the_api_reference_names_every_public_name_where_it_is_defined(package):
  module = importlib.import_module(package)
  listed: dict[str, list[str]] = {}
  for line in api_lines():
    item = AUTOSUMMARY_ITEM.match(line) or AUTO_DIRECTIVE.match(line)
    if item:
      path = item.group(item.lastindex)
      listed.setdefault(path.rsplit(".", 1)[-1], []).append(path)
  missing, wrong = [], []
  for name in module.__all__:
    if name not in listed:
      missing.append(name)
      continue
    def resolves(path: str) -> bool:
      owner, attr = path.rsplit(".", 1)
      try:
        return getattr(importlib.import_module(owner), attr, None) is getattr(module, name)
      except ImportError:
        return False
    if not any(resolves(p) for p in listed[name]):
      wrong.append(f"{name}: {listed[name]}")
  assert not missing, f"docs/api/ does not name {package}.{missing}"
  assert not wrong, f"docs/api/ names these at a path that is not the exported object: {wrong}"


def test_the_api_reference_documents_every_public_module():
  documented = {m.group(2) for m in map(AUTO_DIRECTIVE.match, api_lines()) if m and m.group(1) == "module"}
  package = importlib.import_module("bayesbinn_jax")
  public = set()
  for info in pkgutil.walk_packages(package.__path__, "bayesbinn_jax."):
    parts = info.name.split(".")
    if info.ispkg or any(p.startswith("_") for p in parts):
      continue
    public.add(info.name)
  assert not sorted(documented - public), f"automodule of modules that do not exist: {sorted(documented - public)}"
  assert not sorted(public - documented), f"modules missing from docs/api/: {sorted(public - documented)}"


def test_the_build_keeps_warnings_as_errors_and_never_executes_notebooks():
  with open(os.path.join(DOCS, "build.sh"), encoding="utf-8") as handle:
    script = handle.read()
  assert "-W" in script and "--keep-going" in script and "docs/_build/html" in script
  with open(os.path.join(DOCS, "conf.py"), encoding="utf-8") as handle:
    conf = handle.read()
  assert re.search(r'^nb_execution_mode = "off"$', conf, re.M)
  # the pages come from the executed copies (tests/test_docs_notebooks.py checks them), the build
  # refuses a missing or stale one, and Sphinx does not read docs/executed/ as pages of its own
  assert "execute_notebooks.py" in conf and "_executed.problems(" in conf and "raise ConfigError(" in conf
  assert re.search(r'^exclude_patterns = \[[^\]]*"executed"', conf, re.M)
  with open(os.path.join(ROOT, ".gitignore"), encoding="utf-8") as handle:
    ignored = handle.read().split()
  assert "docs/_build/" in ignored and "docs/notebooks/" in ignored
