"""Release hygiene that needs no build: one version string, the CHANGELOG, py.typed, CI's
first step, and the tested floors (the wheel itself is checked by .ci/wheel_check.sh)."""

from __future__ import annotations

import configparser
import os
import re

import bayesbinn_jax
from bayesbinn_jax._version import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path: str) -> str:
  with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
    return f.read()


def _setup_cfg() -> configparser.ConfigParser:
  cfg = configparser.ConfigParser()
  cfg.read_string(_read("setup.cfg"))
  return cfg


def test_one_version_string():
  # Catches a second hard-coded version (setup.cfg or a module) drifting from _version.py.
  assert _setup_cfg()["metadata"]["version"] == "attr: bayesbinn_jax._version.__version__"
  assert bayesbinn_jax.__version__ == __version__
  assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
  assigned = []
  for folder, _, files in os.walk(os.path.join(ROOT, "bayesbinn_jax")):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          if re.search(r"^__version__\s*=", f.read(), re.M):
            assigned.append(os.path.relpath(os.path.join(folder, name), ROOT))
  assert assigned == [os.path.join("bayesbinn_jax", "_version.py")]


def test_changelog_has_the_current_release_and_keeps_a_changelog_order():
  text = _read("CHANGELOG.md")
  releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.M)
  assert __version__ in [version for version, _ in releases]
  assert "0.1.0" in [version for version, _ in releases]
  keys = [tuple(int(p) for p in version.split(".")) for version, _ in releases]
  assert keys == sorted(keys, reverse=True)  # newest first
  assert [date for _, date in releases] == sorted((date for _, date in releases), reverse=True)
  # The renames users meet first are listed.
  for rename in ("`seed=` is `key=`", "`mc_vmap` is `mc_apply`"):
    assert rename in text


def test_py_typed_and_the_package_data_are_declared_and_present():
  package_data = _setup_cfg()["options.package_data"]
  assert package_data["bayesbinn_jax"].strip() == "py.typed"
  assert os.path.isfile(os.path.join(ROOT, "bayesbinn_jax", "py.typed"))
  for package, pattern in (("experiments", "resources/*.npz"), ("nn", "native/*.cc")):
    assert package_data[f"bayesbinn_jax.{package}"].strip() == pattern
    folder, suffix = pattern.split("/*")
    assert any(f.endswith(suffix) for f in os.listdir(os.path.join(ROOT, "bayesbinn_jax", package, folder)))


def test_ci_runs_the_readme_test_command_first():
  readme = [line.strip() for line in _read("README.md").splitlines()]
  command = next(line for line in readme if line.startswith("pip install -e '.[test]'"))
  steps = [line.strip() for line in _read(".ci", "run").splitlines()
           if line.strip() and not line.lstrip().startswith("#")
           and not line.startswith(("set ", "cd "))]
  assert steps[0] == command
  assert "python -m mypy bayesbinn_jax" in steps
  assert "bash .ci/wheel_check.sh" in steps


def test_the_tested_floors_are_the_ones_setup_cfg_claims():
  # Catches a floor raised or lowered in setup.cfg without rerunning .ci/version_floors.sh.
  floors = {}
  for line in _setup_cfg()["options"]["install_requires"].split("\n"):
    if line.strip():
      name, version = line.strip().split(">=")
      floors[name] = version
  table = _read("benchmarks", "results", "version_floors.md")
  rows = dict(re.findall(r"^\| ([a-z/ -]+?) \| ([0-9.]+) \|", table, re.M))
  for name, version in floors.items():
    row = "jax / jaxlib" if name in ("jax", "jaxlib") else name
    tested = rows[row]
    assert tuple(map(int, tested.split("."))) == tuple(map(int, (version + ".0.0").split(".")[:len(tested.split("."))])), (
        f"{name}: setup.cfg claims >= {version}, version_floors.md tested {tested}")
  oldest = _setup_cfg()["options"]["python_requires"].removeprefix(">=")
  assert f"floor (Python {oldest}." in table
