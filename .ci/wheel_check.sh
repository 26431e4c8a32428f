#!/usr/bin/env bash
# The package as a user installs it (issue 29), run by .ci/run after the tests:
#  1. `python -m build` gives an sdist and a wheel (into a temp dir) that `twine check` accepts;
#  2. the wheel holds the package data (the Snelson resource, the native kernel's source,
#     py.typed) and nothing from tests/, benchmarks/, notebooks/ or docs/; its version is
#     bayesbinn_jax/_version.py's;
#  3. the wheel installs into a fresh venv in a temp dir, outside the repository (no
#     --system-site-packages: its dependencies come from pip's index and cache, constrained to
#     the versions of the environment running this script, so no newer jax is downloaded here);
#  4. from a temp dir, that venv imports the package from its own site-packages, reads the
#     packaged data, runs `bayesbinn-train --help` and the README's main job (two moons,
#     shortened to WHEEL_CHECK_EPOCHS epochs, default 300) and checks its summary.json.
# Usage: bash .ci/wheel_check.sh   (needs `build` and `twine`: pip install -e '.[release]')
# Measured on the shared 2-core EPYC host under a load of 9-12: 4.5-5.5 min wall, ~1.5 min CPU
# (build 20-35 s, venv + install 160-200 s, mostly pip's index look-ups, --help and the run ~75 s).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python}
EPOCHS=${WHEEL_CHECK_EPOCHS:-300}
TMP=$(mktemp -d /tmp/wheel-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
t0=$SECONDS
say() { echo "wheel_check [$((SECONDS - t0)) s]: $*"; }

"$PY" -c "import build, twine" 2>/dev/null || "$PY" -m pip install -q build twine
"$PY" -m build --outdir "$TMP/dist" "$REPO" > "$TMP/build.log" 2>&1 \
  || { cat "$TMP/build.log"; echo "wheel_check: python -m build failed" >&2; exit 1; }
"$PY" -m twine check --strict "$TMP"/dist/*
say "built $(cd "$TMP/dist" && echo *)"

# The wheel's contents.
"$PY" - "$TMP"/dist/*.whl "$REPO" <<'EOF'
import os, re, sys, zipfile
wheel, repo = sys.argv[1], sys.argv[2]
names = zipfile.ZipFile(wheel).namelist()
version = re.search(r'__version__ = "([^"]+)"',
                    open(os.path.join(repo, "bayesbinn_jax", "_version.py")).read()).group(1)
problems = []
if f"-{version}-" not in os.path.basename(wheel):
  problems.append(f"wheel {os.path.basename(wheel)} is not version {version}")
for needed in ("bayesbinn_jax/py.typed", "bayesbinn_jax/experiments/resources/snelson.npz",
               "bayesbinn_jax/nn/native/xnor_count.cc"):
  if needed not in names:
    problems.append(f"missing {needed}")
tops = {n.split("/")[0] for n in names}
if tops != {"bayesbinn_jax", f"bayesbinn_jax-{version}.dist-info"}:
  problems.append(f"top-level entries {sorted(tops)}")
stray = [n for n in names if re.search(r"(^|/)(tests?|benchmarks|notebooks|docs)/", n)
         or n.endswith((".ipynb", ".pyc"))]
if stray:
  problems.append(f"files that belong to the repository, not the wheel: {stray[:5]}")
if problems:
  sys.exit("wheel_check: " + "; ".join(problems))
print(f"wheel_check: {len(names)} files, package data present, no tests/benchmarks/notebooks")
EOF

# A fresh venv outside the repository, dependencies pinned to this environment's versions.
"$PY" -m pip freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' \
  | grep -viE '^bayesbinn[-_]jax==' > "$TMP/constraints.txt"
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q -c "$TMP/constraints.txt" "$TMP"/dist/*.whl \
  > "$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; echo "wheel_check: install failed" >&2; exit 1; }
"$TMP/venv/bin/python" -m pip check
say "installed into a fresh venv"

mkdir "$TMP/user" && cd "$TMP/user"
"$TMP/venv/bin/python" - "$TMP/venv" <<'EOF'
import os, sys
import numpy as np
import bayesbinn_jax
from bayesbinn_jax._version import __version__
from bayesbinn_jax.experiments.specs import embedded_snelson_path
venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(bayesbinn_jax.__file__)
assert where.startswith(venv), f"imported from {where}, not the venv {venv}"
assert bayesbinn_jax.__version__ == __version__
with np.load(embedded_snelson_path()) as snelson:
  assert snelson["x_train"].shape[0] == 200, snelson["x_train"].shape
package = os.path.dirname(where)
for data in ("py.typed", "nn/native/xnor_count.cc"):
  assert os.path.isfile(os.path.join(package, data)), data
print(f"wheel_check: bayesbinn_jax {__version__} imported from the venv, package data readable")
EOF
"$TMP/venv/bin/bayesbinn-train" --help > "$TMP/help.txt"
grep -q "two-moons" "$TMP/help.txt"
say "bayesbinn-train --help ok"
"$TMP/venv/bin/bayesbinn-train" two-moons --epochs "$EPOCHS" --quiet --out "$TMP/run" > "$TMP/run.txt"
"$TMP/venv/bin/python" - "$TMP/run" <<'EOF'
import json, os, sys
run = sys.argv[1]
summary = json.load(open(os.path.join(run, "summary.json")))
flat = json.dumps(summary)
assert "test_accuracy" in flat and "mc_test_accuracy" in flat, sorted(summary)
for out in ("config.json", "metrics.jsonl", "training_curves.png", "two_moons.png"):
  assert os.path.isfile(os.path.join(run, out)), out
print("wheel_check: main job (two moons) ran from the wheel; summary.json and figures written")
EOF
say "PASS"
