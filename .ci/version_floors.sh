#!/usr/bin/env bash
# The versions setup.cfg claims, tested (issue 29).
#
# NOT run by .ci/run: it builds two fresh environments (downloads of jaxlib, tensorflow-datasets,
# ...) and runs a subset of the suite in each; about 15-30 minutes on a 2-core host. Run it by
# hand before changing a floor in setup.cfg or python_requires:
#
#   bash .ci/version_floors.sh            # both checks
#   bash .ci/version_floors.sh floor      # oldest Python + every install_requires floor, pinned (==)
#   bash .ci/version_floors.sh newest     # newest Python + the newest releases pip resolves
#
# floor:  Python $PY_OLD (default: pyenv's python_requires minimum) with each `name>=X` of setup.cfg's
#         install_requires installed as `name==X` (read from setup.cfg, so the check tests what
#         setup.cfg claims), plus the test extra (unpinned, resolved against those pins).
# newest: Python $PY_NEW (default: pyenv's 3.13) with `pip install --upgrade` of the same names.
# Each then runs, from the repository (the package imported from the source tree):
#   python -m pytest -q $VF_X -n 0 -p no:cacheprovider $VF_TESTS   and   the main job, shortened
#   (python -m bayesbinn_jax two-moons --epochs 20 --quiet, figures drawn: matplotlib).
# The venvs live under $VF_WORK (default: a temp dir, kept for inspection; printed). A log of each
# step goes to $VF_WORK/<check>.log; the last lines say `<check>: PASS` or `<check>: FAIL (step)`.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# The oldest Python: setup.cfg's python_requires (>=3.X), from pyenv.
OLDEST=$(sed -n 's/^python_requires = >=\([0-9.]*\).*/\1/p' setup.cfg)
PY_OLD=${PY_OLD:-$(ls -d "$HOME"/.pyenv/versions/"$OLDEST".*/bin/python 2>/dev/null | tail -n 1)}
PY_NEW=${PY_NEW:-$(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python 2>/dev/null | tail -n 1)}
VF_WORK=${VF_WORK:-$(mktemp -d /tmp/version-floors.XXXXXX)}
VF_TESTS=${VF_TESTS:-"tests/test_bayesbinn.py tests/test_optax_conformance.py tests/test_nn.py tests/test_config.py tests/test_data_tfds.py"}
# and the NNX layer (flax.nnx moves fastest): a few of tests/test_nnx.py's tests.
VF_NNX_K=${VF_NNX_K:-"binary_linear_is or dropout_is_drawn or converter_round_trip or nnx_optimizer_step"}
# Pins added on top of the floors, only where pip needs them to resolve (space separated, e.g.
# "etils==1.7.0"); recorded in the log.
VF_EXTRA_PINS=${VF_EXTRA_PINS:-}
# pytest stops at the first failure (-x); VF_X= runs every test.
VF_X=${VF_X--x}
mkdir -p "$VF_WORK"
echo "version_floors: work dir $VF_WORK"

# install_requires of setup.cfg, one requirement a line.
requirements() {
  python3 - "$REPO/setup.cfg" <<'EOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
for line in cfg["options"]["install_requires"].splitlines():
  if line.strip():
    print(line.strip())
EOF
}
test_extra() {
  python3 - "$REPO/setup.cfg" <<'EOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
for line in cfg["options.extras_require"]["test"].splitlines():
  if line.strip():
    print(line.strip())
EOF
}

check() {  # check NAME PYTHON PIN(floor|newest)
  local name=$1 py=$2 mode=$3 env="$VF_WORK/$1" log="$VF_WORK/$1.log" reqs=() t0
  : > "$log"
  if [ -z "$py" ] || [ ! -x "$py" ]; then echo "$name: FAIL (no python: '$py')" | tee -a "$log"; return 1; fi
  if [ "$mode" = floor ]; then
    mapfile -t reqs < <(requirements | sed 's/>=/==/')
    # shellcheck disable=SC2206
    reqs+=($VF_EXTRA_PINS)
  else
    mapfile -t reqs < <(requirements | sed 's/[<>=!~].*//')
  fi
  mapfile -t -O "${#reqs[@]}" reqs < <(test_extra)
  {
    echo "== $name: $("$py" --version 2>&1) ($py)"
    echo "== requirements: ${reqs[*]}"
  } >> "$log"
  t0=$SECONDS
  "$py" -m venv "$env" >> "$log" 2>&1 || { echo "$name: FAIL (venv)" | tee -a "$log"; return 1; }
  "$env/bin/python" -m pip install -q --upgrade pip >> "$log" 2>&1
  # --upgrade for `newest`: the newest releases even where pip's cache holds older ones.
  local upgrade=()
  [ "$mode" = newest ] && upgrade=(--upgrade)
  if ! timeout 1800 "$env/bin/python" -m pip install "${upgrade[@]}" "${reqs[@]}" >> "$log" 2>&1; then
    echo "$name: FAIL (pip install, $((SECONDS - t0)) s)" | tee -a "$log"; return 1
  fi
  echo "== installed in $((SECONDS - t0)) s:" >> "$log"
  "$env/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(jax|jaxlib|flax|optax|chex|numpy|orbax-checkpoint|tensorflow-datasets|tqdm|matplotlib|pillow|ml-dtypes|scipy|tensorstore|etils|pytest|hypothesis)==' \
    >> "$log"
  t0=$SECONDS
  # shellcheck disable=SC2086
  if ! (cd "$REPO" && JAX_PLATFORMS=cpu timeout 1800 "$env/bin/python" -m pytest -q $VF_X -n 0 \
        -p no:cacheprovider $VF_TESTS) >> "$log" 2>&1; then
    echo "$name: FAIL (tests, $((SECONDS - t0)) s)" | tee -a "$log"; return 1
  fi
  if ! (cd "$REPO" && JAX_PLATFORMS=cpu timeout 1800 "$env/bin/python" -m pytest -q $VF_X -n 0 \
        -p no:cacheprovider tests/test_nnx.py -k "$VF_NNX_K") >> "$log" 2>&1; then
    echo "$name: FAIL (nnx tests, $((SECONDS - t0)) s)" | tee -a "$log"; return 1
  fi
  echo "== tests passed in $((SECONDS - t0)) s" >> "$log"
  t0=$SECONDS
  if ! (cd "$VF_WORK" && PYTHONPATH="$REPO" JAX_PLATFORMS=cpu timeout 900 "$env/bin/python" -m bayesbinn_jax \
        two-moons --epochs 20 --quiet --out "$VF_WORK/$name-run") >> "$log" 2>&1; then
    echo "$name: FAIL (main job, $((SECONDS - t0)) s)" | tee -a "$log"; return 1
  fi
  echo "== main job ran in $((SECONDS - t0)) s" >> "$log"
  echo "$name: PASS" | tee -a "$log"
}

what=${1:-both}
status=0
case $what in
  floor) check floor "$PY_OLD" floor || status=1 ;;
  newest) check newest "$PY_NEW" newest || status=1 ;;
  both) check floor "$PY_OLD" floor || status=1; check newest "$PY_NEW" newest || status=1 ;;
  *) echo "usage: $0 [floor|newest|both]" >&2; exit 2 ;;
esac
exit $status
