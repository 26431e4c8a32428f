"""Errors in the library's terms: optim/, nn/, data/ and train/ raise exception types that carry
the facts and name no command-line flag; experiments/cli.py alone renders them in the CLI's terms."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from bayesbinn_jax.experiments.cli import render_error
from bayesbinn_jax.train import checkpoint, distributed, sharding

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "bayesbinn_jax"
LIBRARY = ("optim", "nn", "data", "train")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _strings_that_are_not_docstrings(tree: ast.AST):
  docstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = getattr(node, "body", [])
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstrings.add(id(body[0].value))
    # A string right after an assignment documents the constant (attribute docstrings).
    for field in ("body", "orelse"):
      statements = getattr(node, field, [])
      if not isinstance(statements, list):  # a lambda's body is one expression
        continue
      for before, after in zip(statements, statements[1:]):
        if isinstance(before, (ast.Assign, ast.AnnAssign)) and isinstance(after, ast.Expr) \
            and isinstance(after.value, ast.Constant):
          docstrings.add(id(after.value))
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
      yield node


def test_no_library_string_names_a_command_line_flag():
  # Every string a library layer can put in an error or a note (docstrings document the CLI
  # that calls them and are left out): no "--out", "--set", "--coordinator"...
  found = []
  for package in LIBRARY:
    for path in sorted((PACKAGE / package).rglob("*.py")):
      for node in _strings_that_are_not_docstrings(ast.parse(path.read_text(), str(path))):
        if FLAG.search(node.value):
          found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
  assert not found, "\n".join(found)


def test_the_check_sees_a_flag_in_an_error_message():
  # The test above can fail: a message with a flag is found, its docstring is not.
  source = 'def f():\n  """Use --out."""\n  raise ValueError(f"use another --out {1}.")\n'
  assert [n.value for n in _strings_that_are_not_docstrings(ast.parse(source))
          if FLAG.search(n.value)] == ["use another --out "]


@pytest.mark.parametrize("args, library, cli", [
    (("127.0.0.1:1234", 2, None), "process_id missing: pass coordinator, num_processes and process_id together",
     "--process-id missing: pass --coordinator, --num-processes and --process-id together"),
    (("127.0.0.1:1234", 2, 2), "process_id must be an integer in [0, 2) for num_processes 2; got 2.",
     "--process-id must be an integer in [0, 2) for --num-processes 2; got 2."),
    (("localhost", 2, 0), "coordinator 'localhost' must be HOST:PORT",
     "--coordinator 'localhost' must be HOST:PORT"),
])
def test_distributed_errors_name_arguments_and_the_cli_names_flags(args, library, cli):
  with pytest.raises(distributed.DistributedError) as raised:
    distributed.check_arguments(*args)
  assert library in str(raised.value) and "--" not in str(raised.value)
  assert cli in render_error(raised.value)


def test_sharding_errors_carry_the_batch_and_the_cli_adds_the_setting():
  error = sharding.BatchSizeError("batch_size=12 must be a multiple of the 8 devices in use; pick a multiple "
                                  "of 8.", "batch_size", 12, 8)
  assert (error.name, error.batch_size, error.devices) == ("batch_size", 12, 8)
  assert render_error(error) == ("batch_size=12 must be a multiple of the 8 devices in use; pick a multiple "
                                 "of 8 (--set batch_size=...).")
  nothing = sharding.NothingToSplitError("the train state cannot be split: no weight array has an axis", 8)
  assert render_error(nothing).startswith("--shard-state: the train state cannot be split")


def test_checkpoint_errors_carry_the_file_and_both_values_and_the_cli_gives_the_advice():
  with pytest.raises(checkpoint.SettingsMismatchError) as raised:
    checkpoint.check_metadata({"experiment": "mnist", "optimizer": "ste", "config": {"lr": 0.1}},
                              {"experiment": "mnist", "optimizer": "ste", "config": {"lr": 0.2}}, "OUT/config.json")
  error = raised.value
  assert (error.where, error.key, error.saved, error.requested) == ("OUT/config.json", "lr", 0.1, 0.2)
  assert str(error) == "OUT/config.json was written with lr=0.1, but this run has lr=0.2."
  assert render_error(error) == (
      "OUT/config.json was written with lr=0.1, but this run has lr=0.2; resume with the same settings, "
      "or use another --out.")
  checkpoint.check_metadata({"config": {"lr": 0.1}}, {"config": {"lr": 0.2}}, "x", ignored=("lr",))
  old = checkpoint.StateMismatchError("checkpoint c/4", "array a is (2,) in the checkpoint but (3,) here", "0.1.0")
  assert old.release == "0.1.0" and "written by bayesbinn_jax 0.1.0" in str(old)
  assert render_error(old).endswith("; evaluate or resume it with bayesbinn_jax 0.1.0, or use another --out.")
