#!/usr/bin/env bash
# Issue 30, part 4: does the Monte Carlo predictive beat the mode anywhere between the honest
# posterior and the point mass? The Bayes regime of docs/temperature.md (tau 1e-2, lr 1e-2,
# lambda_init 1.693, where E[s] ~ 1 and lambda* = -N' dL/dmu) with the posterior sharpened by
# train_set_scale S (N' = S N: S = 1 is the honest posterior, S -> the recipe's 139,330 the point
# mass); the MNIST MLP, 2 epochs, the predictive over 10 samples, OOD = the test digits rotated by
# 90 degrees. Resumable: a run with summary.json is skipped, one with config.json resumed.
# Usage: bash benchmarks/temperature_posterior.sh [DATA_DIR]   (SCALES="10 100" to choose S)
# (the S = 1 row of docs/temperature.md: the run temperature-recipe/bayes-regime-tau1e-2 evaluated)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
RESULTS="${RESULTS:-benchmarks/results/temperature-posterior}"
SCALES="${SCALES:-1 10 100 1000}"
EPOCHS="${EPOCHS:-2}"   # EPOCHS=30 SCALES=1: the long run at S = 1 (folder suffix -30ep, evaluated every 5 epochs)
OOD=/tmp/bayesbinn-ood-mnist-rot90.npz
[ -f "$OOD" ] || python benchmarks/ood_mnist.py "$DATA/mnist.npz" "$OOD"
for S in $SCALES; do
  out="$RESULTS/bayes-tau1e-2-scale$S"; extra=""
  if [ "$EPOCHS" != 2 ]; then out="$out-${EPOCHS}ep"; extra="--set eval_every=5"; fi
  if [ -f "$out/summary.json" ]; then echo "skip $out (done)"; continue; fi
  resume=""; [ -f "$out/config.json" ] && resume="--resume"
  cmd="python -m bayesbinn_jax mnist --optimizer bayesbinn --data-file $DATA/mnist.npz --epochs $EPOCHS --set temperature=1e-2 --set lr=0.01 --set lambda_init=1.693 --set train_set_scale=$S --set test_samples=10 $extra --ood-data-file $OOD --no-figures --quiet --out $out"
  echo "== $cmd"
  $cmd $resume
  echo "$cmd" > "$out/command.txt"
done
