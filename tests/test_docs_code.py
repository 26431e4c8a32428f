"""The Python blocks of README.md and of the documentation pages run as printed.

Every fenced block whose info string is ``python`` in README.md and in the markdown pages
under docs/ (the site's build, its copies of the executed notebooks and the notebooks
themselves left out) is run: a page's blocks in order, in one fresh namespace, in a
temporary working directory, so a renamed function or a changed signature fails here
before a reader copies it. The blocks run as written except for:

- :data:`SMALLER`: the sizes that set how long a loop runs, not which code runs. Each text
  must be found exactly once in its page, so the table follows the pages.
- :data:`GIVEN`: what a page's text says a fragment is given ("``params``", "``n``", "as
  above") but the fragment does not define: a few lines run in the page's namespace just
  before that block, building the smallest objects of the kinds the text names.
- Blocks marked on the line before their fence with ``<!-- docs-test: skip (reason) -->``
  (an HTML comment: GitHub and MyST show nothing, the block still renders as Python). A
  marker without a reason, or one that is not followed by a Python block, fails; the
  skipped blocks are counted and reported with their reasons.

Each page must run within its time budget (:data:`BUDGET_S`, else :data:`DEFAULT_BUDGET_S`),
so the module stays fast. A Python block under another info string (``py``, ``{code-block}
python``, ...) would escape the test, so those fail too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SKIP_DIRS = {"_build", "notebooks", "executed"}  # as tests/test_docs_site.py
FENCE = re.compile(r"^(```+|~~~+)\s*(.*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test\s*:(.*?)-->\s*$")
SKIP = re.compile(r"^\s*skip\s*\((.*)\)\s*$")
# Python under an info string other than ``python``, which this module would not run.
OTHER_PYTHON = re.compile(r"^(py|python3|ipython\d?|pycon|"
                          r"\{(code-block|code|sourcecode|code-cell)\}\s*(py\w*|ipython\d?)?)(\s|$)")
# The pages known to hold Python blocks: a parser that finds none there is broken.
EXPECTED = ("README.md", "docs/getting_started.md", "docs/guides/fully_binary.md",
            "docs/guides/optax.md")
# Measured on the 2-core AVX2 EPYC beside other work: 4 to 12 s a page in one pytest process,
# 22 s for docs/guides/optax.md alone in a fresh one (JAX's first compiles, eager updates).
DEFAULT_BUDGET_S = 45.0
BUDGET_S: dict[str, float] = {}

# Page -> {text in one of its Python blocks: what the test runs instead}.
SMALLER = {
    # 3000 steps of the paper's schedule take ~3 s more each; the loop is the same at 300
    "README.md": {"for _ in range(3000):\n": "for _ in range(300):\n"},
    "docs/getting_started.md": {
        "for _ in range(3000):\n  state = train_step(state)\n":
            "for _ in range(300):\n  state = train_step(state)\n",
        "for _ in range(3000):\n  train_step(model, optimizer)\n":
            "for _ in range(300):\n  train_step(model, optimizer)\n",
    },
}

# Page -> {index of a Python block in the page (from 0): code run just before it}.
GIVEN = {
    "docs/guides/fully_binary.md": {
        # "a trained network": BayesBiNN's state at the first block's MnistMLP, a relaxed
        # sample of its weights, its BatchNorm statistics and a test batch (untrained: the
        # packed network predicts as the float one whatever the weights).
        1: """
import jax
import bayesbinn_jax as bb
x_test = jax.random.normal(jax.random.key(3), (16, 784))
variables = model.init(jax.random.key(0), x_test, train=False)
params, batch_stats = variables["params"], variables["batch_stats"]
opt_state = bb.bayesbinn(1e-3, train_set_size=16, key=0).init(params)
""",
    },
    "docs/guides/optax.md": {
        # "a network that also learns real-valued parameters": ToyMLP's kernels are binary,
        # its biases are trained by Adam here; n examples, their gradients and logits.
        0: """
import jax
import optax
import bayesbinn_jax as bb
from bayesbinn_jax.nn import ToyMLP
model = ToyMLP(outputs=2)
x = jax.random.normal(jax.random.key(3), (8, 2))
y = (x[:, 0] > 0).astype(int)
n = len(x)
params = model.init(jax.random.key(0), x, train=False)["params"]
loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
    model.apply({"params": p}, x, train=True), y).mean()
grads = jax.grad(loss)(params)
logits_fn = lambda w: model.apply({"params": w}, x, train=False)
""",
        1: """
import jax.numpy as jnp
K, tau = 2, 1.0
params = model.init(jax.random.key(0), x, train=False)["params"]
""",
        2: "schedule = optax.piecewise_constant_schedule(1e-3, {1500: 0.1})\n",
    },
}


@dataclasses.dataclass
class Block:
  line: int  # of the first line of code, 1-based
  code: str
  skip: str | None  # the reason, for a block marked skip


def pages() -> list[str]:
  """README.md and every markdown page under docs/, as paths relative to the repository."""
  found = ["README.md"]
  for folder, dirs, files in os.walk(DOCS):
    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
    for name in sorted(files):
      if name.endswith(".md"):
        found.append(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/"))
  return found


def python_blocks(text: str, page: str = "<page>") -> list[Block]:
  """The page's ``python`` blocks, with their skip reasons; a malformed marker raises ValueError."""
  found, lines, i, pending = [], text.splitlines(), 0, None
  while i < len(lines):
    marker, start = MARKER.match(lines[i]), FENCE.match(lines[i])
    if marker:
      skip = SKIP.match(marker.group(1))
      if not skip or not skip.group(1).strip():
        raise ValueError(f"{page}:{i + 1}: a docs-test marker must read "
                         f"'<!-- docs-test: skip (reason) -->', with a reason: {lines[i]!r}")
      pending = (i + 1, skip.group(1).strip())
    elif start:
      fence, info, body, first = start.group(1), start.group(2).strip(), [], i + 2
      i += 1
      while i < len(lines) and not lines[i].startswith(fence):
        body.append(lines[i])
        i += 1
      is_python = info.split()[:1] == ["python"]
      if pending and not is_python:
        raise ValueError(f"{page}:{pending[0]}: a docs-test skip marker must stand on the "
                         f"line before a ```python block, not before ```{info}")
      if is_python:
        found.append(Block(first, "\n".join(body) + "\n", pending[1] if pending else None))
      pending = None
    elif pending and lines[i].strip():
      raise ValueError(f"{page}:{pending[0]}: a docs-test skip marker must stand on the line "
                       "before a ```python block")
    i += 1
  if pending:
    raise ValueError(f"{page}:{pending[0]}: a docs-test skip marker ends the page")
  return found


def read(page: str) -> str:
  with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
    return handle.read()


PAGES = [page for page in pages() if python_blocks(read(page), page)]


def smaller(page: str, blocks: list[Block]) -> None:
  """Replaces each of the page's :data:`SMALLER` texts, each found exactly once, in place."""
  for old, new in SMALLER.get(page, {}).items():
    found = [b for b in blocks if b.skip is None and old in b.code]
    assert len(found) == 1 and found[0].code.count(old) == 1, (
        f"{page}: {old!r} is not in exactly one of its run Python blocks; update SMALLER "
        f"in {__file__}")
    found[0].code = found[0].code.replace(old, new)


def test_the_pages_with_python_blocks_are_found():
  assert set(EXPECTED) <= set(PAGES), sorted(set(EXPECTED) - set(PAGES))


def test_every_table_entry_names_a_page_with_python_blocks():
  for table in (SMALLER, GIVEN, BUDGET_S):
    assert set(table) <= set(PAGES), sorted(set(table) - set(PAGES))
  for page, given in GIVEN.items():
    count = len(python_blocks(read(page), page))
    assert all(0 <= n < count for n in given), (page, sorted(given), count)


def test_no_python_block_hides_under_another_info_string():
  found = []
  for page in pages():
    for number, line in enumerate(read(page).splitlines(), 1):
      start = FENCE.match(line)
      if start and OTHER_PYTHON.match(start.group(2).strip()):
        found.append(f"{page}:{number}: {line}")
  assert not found, f"write these as ```python blocks, so this module runs them: {found}"


def test_every_skip_marker_is_read_and_one_without_a_reason_fails():
  text = "<!-- docs-test: skip (needs MNIST) -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
  assert [(b.line, b.code, b.skip) for b in python_blocks(text)] == [
      (3, "x = 1\n", "needs MNIST"), (7, "y = 2\n", None)]
  for wrong in ("<!-- docs-test: skip -->\n```python\nx\n```\n",
                "<!-- docs-test: skip () -->\n```python\nx\n```\n",
                "<!-- docs-test: skip ( ) -->\n```python\nx\n```\n",
                "<!-- docs-test: ignore (why) -->\n```python\nx\n```\n",
                "<!-- docs-test: skip (why) -->\n```bash\nls\n```\n",
                "<!-- docs-test: skip (why) -->\ntext\n```python\nx\n```\n",
                "```python\nx\n```\n<!-- docs-test: skip (why) -->\n"):
    with pytest.raises(ValueError, match="docs-test"):
      python_blocks(wrong)


def test_every_page_marks_its_skips_with_a_reason():
  # Parsing raises on a malformed marker; this reports every page's counts and reasons.
  report = []
  for page in PAGES:
    blocks = python_blocks(read(page), page)
    skipped = [b for b in blocks if b.skip is not None]
    report.append(f"{page}: {len(blocks) - len(skipped)} run, {len(skipped)} skipped"
                  + "".join(f"; line {b.line}: {b.skip}" for b in skipped))
  print("\n".join(report))


@pytest.mark.parametrize("page", PAGES)
def test_the_python_blocks_of_the_page_run(page, tmp_path, monkeypatch):
  blocks = python_blocks(read(page), page)
  smaller(page, blocks)
  monkeypatch.chdir(tmp_path)
  namespace: dict = {"__name__": "__docs__"}
  ran, skipped, start = 0, [], time.perf_counter()
  for n, block in enumerate(blocks):
    if block.skip is not None:
      skipped.append(f"line {block.line}: {block.skip}")
      continue
    if n in GIVEN.get(page, {}):
      exec(compile(GIVEN[page][n], f"GIVEN[{page!r}][{n}]", "exec"), namespace)  # noqa: S102
    # padded so a traceback names the markdown line
    code = compile("\n" * (block.line - 1) + block.code, os.path.join(ROOT, page), "exec")
    exec(code, namespace)  # noqa: S102 - our own documentation
    ran += 1
  seconds = time.perf_counter() - start
  print(f"{page}: {ran} blocks run, {len(skipped)} skipped, {seconds:.1f} s")
  for line in skipped:
    warnings.warn(f"{page}: skipped the Python block at {line}", stacklevel=1)
  budget = BUDGET_S.get(page, DEFAULT_BUDGET_S)
  assert seconds <= budget, f"{page}: its Python blocks ran {seconds:.1f} s, over {budget} s"
