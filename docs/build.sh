#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html, warnings as errors.
# Installs the docs extra first (quietly) when Sphinx is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sphinx, myst_nb, furo" 2>/dev/null; then
  pip install -q -e '.[docs]'
fi
python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
