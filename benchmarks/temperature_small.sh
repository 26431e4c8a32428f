#!/usr/bin/env bash
# Issue 30, part 3, the small tasks: two moons, Snelson and continual learning (5 permuted MNIST
# tasks) with BayesBiNN at the temperatures of the MNIST sweep (benchmarks/temperature_sweep.sh),
# T in {1e-10, 1e-4, 1e-2, 1e-1}, plus T = 1, the two-moons and Snelson presets' own temperature.
# Each final network is evaluated again (--evaluate) for the mode and the Monte Carlo predictive
# over C = 10 and C = 100 sampled networks: <run>/evaluation-c<C>/summary.json (two moons and
# permuted MNIST: test accuracy, NLL, ECE; Snelson: the training split's RMSE of the mode and
# RMSE and NLL of the predictive, the only targets the data set has).
#
# The recipe is MNIST-specific. bayesbinn_jax/optim/temperature.py's recipe() is derived from
# the MNIST MLP (its gradient quantile GRADIENT = 2.1e-7 at initialisation, N = 54,000, lr 1e-4)
# and the presets apply it on `mnist` only (experiments/config.py build_config). Here
# `--set temperature=T` alone changes the temperature and nothing else: each task keeps its
# preset's lambda_init, lr and train_set_scale 1, which is what `--set temperature=T` gives a
# user of these presets (two moons: lambda_init 15, lr 1e-3, momentum 0.99, K = 5;
# Snelson: lambda_init 10, lr 1e-4; permuted MNIST: lambda_init 10, lr 1e-3, preset T = 1e-2).
#
# Continual learning is SHORTER than the paper: 10 epochs per task (the paper's preset has 100,
# benchmarks/results/permuted-mnist-bayesbinn 20), evaluated at each task's end only
# (eval_every=10), to fit a ~60-minute CPU budget on the loaded 2-core host (measured, 2-core
# AVX2 EPYC beside other runs: 38 minutes wall for the whole script; the 14 training runs 29 minutes
# wall, 17 minutes of user CPU; a permuted-MNIST run 253 s wall, 168 s user).
# Its --evaluate rows are the LAST task's test set; the average over the 5 tasks (MC, C = 100) is
# avg_test_accuracy_after_task[-1] of the run's own summary.json.
#
# Usage: bash benchmarks/temperature_small.sh [DATA_DIR]   (DATA_DIR holds mnist.npz; default
#        ../shared/data)
#   TEMPERATURES="1e-2" TASKS="two-moons" bash benchmarks/temperature_small.sh   a subset;
#   CL_EPOCHS=20 RESULTS=/tmp/small bash benchmarks/temperature_small.sh   longer tasks elsewhere.
# Resumable like temperature_sweep.sh: a run with summary.json is skipped, one with config.json is
# resumed (--resume), an evaluation whose summary.json exists is skipped. Each run and each
# evaluation writes command.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
RESULTS="${RESULTS:-benchmarks/results/temperature-small}"
CL_EPOCHS="${CL_EPOCHS:-10}"
TEMPERATURES="${TEMPERATURES:-1e-10 1e-4 1e-2 1e-1 1}"
TASKS="${TASKS:-two-moons snelson permuted-mnist}"
NICE="${NICE:-nice -n 5}"

PREFIX="$NICE"
# shellcheck source=benchmarks/_resumable.sh
source benchmarks/_resumable.sh

run() {  # run NAME ARGS...: a training run without figures
  resumable_run "$@" --no-figures
}

for task in $TASKS; do
  for T in $TEMPERATURES; do
    name="$task-tau$T"
    case "$task" in
      two-moons|snelson) run "$name" "$task" --optimizer bayesbinn --set temperature="$T" ;;
      permuted-mnist)
        [ "$T" = 1 ] && continue  # T = 1 is the small presets' temperature, not this one's
        run "$name" permuted-mnist --optimizer bayesbinn --data-file "$DATA/mnist.npz" --cl-prior posterior \
          --epochs "$CL_EPOCHS" --set eval_every="$CL_EPOCHS" --set temperature="$T" ;;
      *) echo "unknown task $task" >&2; exit 2 ;;
    esac
    for C in 10 100; do
      resumable_evaluate "$name" "c$C" --set test_samples="$C" --no-figures
    done
  done
done
