#!/usr/bin/env bash
# The temperature sweep of issue 30 (part 3): the paper's MNIST MLP, 30 epochs (cosine over the 30)
# at each temperature with the recipe of bayesbinn_jax/optim/temperature.py (lambda_init and lr for
# that temperature, passed explicitly so the commands say what ran), then each final network
# evaluated again (--evaluate) for the mode and the Monte Carlo predictive over C = 10 and C = 100
# sampled networks, against two out-of-distribution sets: the test digits rotated by 90 degrees
# (near, benchmarks/ood_mnist.py) and CIFAR-10 test images as grayscale 28x28 (far,
# benchmarks/ood_cifar_gray.py). Each evaluation lands in <run>/evaluation-c<C>-<ood>/.
#
# Usage: bash benchmarks/temperature_sweep.sh [DATA_DIR]   (DATA_DIR holds mnist.npz and
#        cifar10-jpeg.tar.gz; default ../shared/data)
#   TEMPERATURES="1e-2 1e-1" bash benchmarks/temperature_sweep.sh   runs a subset;
#   EPOCHS=2 RESULTS=/tmp/sweep bash benchmarks/temperature_sweep.sh   a short trial elsewhere.
# Resumable like reproduce.sh: a run with summary.json is skipped, one with config.json is resumed
# (--resume), an evaluation whose summary.json exists is skipped. Each run writes command.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
RESULTS="${RESULTS:-benchmarks/results/temperature-sweep}"
EPOCHS="${EPOCHS:-30}"
TEMPERATURES="${TEMPERATURES:-1e-10 1e-4 1e-2 1e-1}"
OOD_ROT=/tmp/bayesbinn-ood-mnist-rot90.npz
OOD_CIFAR=/tmp/bayesbinn-ood-cifar10-gray28.npz
[ -f "$OOD_ROT" ] || python benchmarks/ood_mnist.py "$DATA/mnist.npz" "$OOD_ROT"
[ -f "$OOD_CIFAR" ] || python benchmarks/ood_cifar_gray.py "$DATA/cifar10-jpeg.tar.gz" "$OOD_CIFAR"

recipe_args() {  # recipe_args T: the recipe's --set flags for temperature T
  python -c "
from bayesbinn_jax.optim.temperature import recipe
r = recipe(float('$1'))
print(f'--set temperature=$1 --set lambda_init={r[\"lambda_init\"]:.4g} --set lr={r[\"lr\"]:.4g}')"
}

# shellcheck source=benchmarks/_resumable.sh
source benchmarks/_resumable.sh

for T in $TEMPERATURES; do
  name="mnist-bayesbinn-tau$T"
  # shellcheck disable=SC2046  # the recipe's flags are words
  resumable_run "$name" mnist --optimizer bayesbinn --data-file "$DATA/mnist.npz" --epochs "$EPOCHS" $(recipe_args "$T")
  for C in 10 100; do
    resumable_evaluate "$name" "c$C-rot90" --ood-data-file "$OOD_ROT" --set test_samples=$C
    resumable_evaluate "$name" "c$C-cifar-gray" --ood-data-file "$OOD_CIFAR" --set test_samples=$C
  done
done
