# Sourced by benchmarks/temperature_sweep.sh and benchmarks/temperature_small.sh: one resumable
# training run and one --evaluate of it, each writing command.txt. Needs RESULTS (the folder of
# the runs); PREFIX, when set, is a command each one runs under (e.g. "nice -n 5").

resumable_run() {  # resumable_run NAME ARGS...: one training run into $RESULTS/NAME, resumed if interrupted
  local name="$1"; shift
  local out="$RESULTS/$name"
  local cmd="python -m bayesbinn_jax $* --out $out --quiet"
  if [ -f "$out/summary.json" ]; then echo "skip $name (done)"; return; fi
  local resume=""
  [ -f "$out/config.json" ] && resume="--resume"
  mkdir -p "$RESULTS"
  echo "== $name: $cmd"
  # shellcheck disable=SC2086  # PREFIX and the command are words
  /usr/bin/time -f "%e s wall %U s user" ${PREFIX:-} $cmd $resume 2>&1 | tail -n 3
  echo "$cmd" > "$out/command.txt"
}

resumable_evaluate() {  # resumable_evaluate NAME TAG ARGS...: --evaluate of NAME into NAME/evaluation-TAG/
  local name="$1" tag="$2"; shift 2
  local out="$RESULTS/$name"
  if [ -f "$out/evaluation-$tag/summary.json" ]; then echo "skip evaluation $tag of $name (done)"; return; fi
  local cmd="python -m bayesbinn_jax --evaluate --out $out $* --quiet"
  echo "== evaluate $name ($tag): $cmd"
  # shellcheck disable=SC2086
  ${PREFIX:-} $cmd | tail -n 1
  rm -rf "$out/evaluation-$tag"
  mv "$out/evaluation" "$out/evaluation-$tag"
  echo "$cmd" > "$out/evaluation-$tag/command.txt"
}
