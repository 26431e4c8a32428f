#!/usr/bin/env bash
# One prepared accelerator check (issue 27), at most 8 minutes on one H100/H200.
#
# Usage (from anywhere; it runs from the checkout with PYTHONPATH=., no install needed):
#   benchmarks/device_check.sh           # on a GPU machine: JAX with CUDA, flax, optax, orbax, chex
#   benchmarks/device_check.sh --smoke   # the same steps at toy sizes on CPU (JAX_PLATFORMS=cpu)
#
# Writes JSON under $OUT (default benchmarks/results/device/; benchmarks/results/device-smoke/
# with --smoke), one file per stage plus device_check.json, the summary:
#   device.json              the accelerator (jax.devices(), nvidia-smi's name/driver/memory)
#   step_time_{mnist,vgg}.json  benchmarks/step_time.py: ms per step of BayesBiNN K=1 and K=5,
#                            STE-Adam and optax.adam, on the MNIST MLP (batch 100) and the CIFAR VGG
#                            (batch 50), with the device's name (machine.device_kind)
#   cifar10-jpeg/            a BayesBiNN run of the paper's CIFAR-10 settings on the JPEG copy
#                            ($CIFAR_JPEG, default ../shared/data/cifar10-jpeg.tar.gz, read by
#                            --data-dir: decoded once into a cache, which the run then reads):
#                            config.json, metrics.jsonl (seconds per epoch), summary.json, plan.json
#                            (decode time, epochs planned); as many epochs (the cosine spanning
#                            them) as the VGG step time measured above says fit in $CIFAR_BUDGET_S
#                            (210 s, decoding included)
#   packed_inference.json    benchmarks/packed_inference.py: packed (1-bit) and float32 inference
#                            latency of the MNIST MLP, the fully binary MLP and VGG (xnor vs float)
#   logs/<stage>.log         each stage's output
# Every stage runs under `timeout` (limits 30 + 50 + 120 + 210 + 60 s = 470 s), so the whole
# check ends within 8 minutes even when one stage hangs; a failed or timed-out stage is recorded
# in device_check.json and the next stage runs. With --smoke every limit is 300 s (a hang guard).
# Nothing imports tensorflow_datasets. Exit status: 0 when every stage succeeded, 1 otherwise,
# 2 for a bad argument or (without --smoke) no accelerator.
set -uo pipefail

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "device_check.sh: unknown argument ${1} (use --smoke or nothing)" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=".${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
if [[ $smoke == 1 ]]; then
  export JAX_PLATFORMS=cpu
  out="${OUT:-benchmarks/results/device-smoke}"
  limit() { echo 300; }
else
  out="${OUT:-benchmarks/results/device}"
  limit() { echo "$1"; }
fi
cifar_jpeg="${CIFAR_JPEG:-../shared/data/cifar10-jpeg.tar.gz}"
cifar_budget="${CIFAR_BUDGET_S:-210}"
mkdir -p "$out/logs" || exit 2
work="$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")" || exit 2
trap 'rm -rf "$work"' EXIT
stages="$out/logs/stages.jsonl"
: > "$stages"
started=$SECONDS

# stage NAME LIMIT_S COMMAND...: runs COMMAND under timeout, its output in logs/NAME.log.
stage() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  tail -n 4 "$out/logs/$name.log" | sed 's/^/   /'
  printf '{"stage": "%s", "rc": %d, "timed_out": %s, "wall_s": %d, "limit_s": %d}\n' \
    "$name" "$rc" "$([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)" \
    "$((SECONDS - t0))" "$limit" >> "$stages"
  return $rc
}

# 1. The device. Without --smoke, a machine whose JAX sees no accelerator stops here.
stage device "$(limit 30)" python - "$out/device.json" "$smoke" <<'EOF'
import json, os, platform, subprocess, sys
import jax, jaxlib
devices = jax.devices()
info = {"backend": devices[0].platform, "device_kind": devices[0].device_kind,
        "device_count": len(devices), "devices": [str(d) for d in devices],
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "smoke": sys.argv[2] == "1"}
try:
  query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
  info["nvidia_smi"] = query.stdout.strip().splitlines() if query.returncode == 0 else None
except (OSError, subprocess.SubprocessError):
  info["nvidia_smi"] = None
with open(sys.argv[1], "w") as handle:
  json.dump(info, handle, indent=2)
print(f"{info['device_kind']} ({info['backend']}) x{info['device_count']}, jax {info['jax']}")
if not info["smoke"] and info["backend"] == "cpu":
  sys.exit("no accelerator: JAX runs on the CPU (use --smoke for the CPU check)")
EOF
rc=$?
if [[ $rc != 0 && $smoke == 0 ]]; then exit 2; fi

# 2. Step times (GPU: 3 rounds x 4 steps after 5 warm-up steps; smoke: one step at batch 8 / 2
# of BayesBiNN K=1 only, as compiling each full-size network's step takes ~10-20 s of a CPU).
if [[ $smoke == 1 ]]; then
  sizes=(--mnist-batch 8 --vgg-batch 2 --rounds 1 --steps 1 --warmup 0
         --optimizers bayesbinn_k1)
else
  sizes=(--mnist-batch 100 --vgg-batch 50 --rounds 3 --steps 4 --warmup 5
         --optimizers bayesbinn_k1,bayesbinn_k5,ste,optax_adam)
fi
# One run per network, so that a network whose steps overrun their limit costs only its own table.
stage step_time_mnist "$(limit 50)" python benchmarks/step_time.py --models mnist "${sizes[@]}" \
  --out "$out/step_time_mnist.json"
stage step_time_vgg "$(limit 120)" python benchmarks/step_time.py --models vgg "${sizes[@]}" \
  --out "$out/step_time_vgg.json"

# 3. CIFAR-10 (JPEG copy) with BayesBiNN: decode, plan the epochs, train.
if [[ $smoke == 1 ]]; then  # 10 classes x (6 train + 1 test) random 32x32 JPEGs, as a .tar.gz
  cifar_jpeg="$work/tiny-cifar.tar.gz"
  python - "$cifar_jpeg" <<'EOF'
import io, sys, tarfile
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
with tarfile.open(sys.argv[1], "w:gz") as archive:
  for split, count in (("train", 6), ("test", 1)):
    for label in range(10):
      for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
        info = tarfile.TarInfo(f"{split}/class{label}/{index:04d}.jpg")
        info.size = buffer.tell()
        buffer.seek(0)
        archive.addfile(info, buffer)
EOF
fi
mkdir -p "$out/cifar10-jpeg"
if [[ -f $cifar_jpeg ]]; then
  t0=$SECONDS
  export BAYESBINN_JAX_CACHE_DIR="$work/cache"  # the decoded arrays, for the run to read
  stage cifar10_decode "$(limit 60)" python -c '
import sys, time
from bayesbinn_jax.data import load_image_folder
start = time.perf_counter()
loaded = load_image_folder(sys.argv[1])
data = loaded.dataset
print(f"{loaded.source}: {data.num_train} train, {data.num_test} test, {data.input_shape}, "
      f"{len(loaded.classes)} classes, decoded in {time.perf_counter() - start:.1f} s, "
      f"cached in {loaded.cache_file}")
' "$cifar_jpeg"
  decode_s=$((SECONDS - t0))
  left=$((cifar_budget - decode_s))
  epochs=$(python - "$out/step_time_vgg.json" "$left" "$smoke" <<'EOF'
import json, math, sys
left, smoke = float(sys.argv[2]), sys.argv[3] == "1"
try:
  with open(sys.argv[1]) as handle:
    vgg = json.load(handle)["results"]["vgg"]["optimizers"]["bayesbinn_k1"]
  step_s, compile_s = vgg["median_ms"] / 1e3, vgg["compile_s"]
except (OSError, KeyError, ValueError):
  step_s, compile_s = 0.05, 60.0  # no measurement: a guess on the safe side
# 900 steps an epoch (45,000 images, batch 50); the host's batching and augmentation, the
# evaluation of 5,000 + 10,000 images and the checkpoint counted as 80% on top (on the safe side:
# a run cut by the stage's limit keeps its finished epochs but writes no summary); start-up and
# compiling the train and predict steps once.
epoch_s = 1.8 * 900 * step_s
fit = math.floor(0.9 * (left - 20 - 2 * compile_s) / epoch_s)
print(1 if smoke else max(1, min(fit, 100)))
EOF
)
  if [[ $smoke == 1 ]]; then
    run_sizes=(--set batch_size=10 --set eval_batch_size=20)
  else
    run_sizes=()
  fi
  echo "   $epochs epoch(s) planned in the ${left} s left of ${cifar_budget} s"
  echo "$epochs" > "$work/epochs"
  stage cifar10_train "$(limit $((left > 30 ? left : 30)))" python -m bayesbinn_jax cifar10 \
    --optimizer bayesbinn --data-dir "$cifar_jpeg" --epochs "$epochs" \
    --out "$work/cifar10-run" --quiet --no-figures "${run_sizes[@]}"
  for file in config.json metrics.jsonl summary.json; do
    [[ -f $work/cifar10-run/$file ]] && cp "$work/cifar10-run/$file" "$out/cifar10-jpeg/"
  done
  printf '{"source": "%s", "decode_s": %d, "planned_epochs": %d, "budget_s": %d}\n' \
    "$cifar_jpeg" "$decode_s" "$epochs" "$cifar_budget" > "$out/cifar10-jpeg/plan.json"
else
  echo "== cifar10: skipped, no $cifar_jpeg (set CIFAR_JPEG)"
  printf '{"stage": "cifar10_train", "rc": -1, "skipped": "no %s"}\n' "$cifar_jpeg" >> "$stages"
fi

# 4. Packed (1-bit) and float inference latencies.
if [[ $smoke == 1 ]]; then
  packed=(--calls 2 --skip-vgg --skip-ensemble)
else
  packed=(--calls 10 --skip-ensemble)
fi
stage packed_inference "$(limit 60)" python benchmarks/packed_inference.py "${packed[@]}" \
  --out "$out/packed_inference.json"

# 5. The summary: device_check.json.
python - "$out" "$((SECONDS - started))" <<'EOF'
import json, os, sys
out, wall = sys.argv[1], int(sys.argv[2])

def read(name):
  try:
    with open(os.path.join(out, name)) as handle:
      return json.load(handle)
  except (OSError, ValueError):
    return None

with open(os.path.join(out, "logs", "stages.jsonl")) as handle:
  stages = [json.loads(line) for line in handle if line.strip()]
device = read("device.json") or {}
summary = {"device": device.get("device_kind"), "backend": device.get("backend"),
           "smoke": device.get("smoke"), "total_wall_s": wall, "stages": stages}
for model in ("mnist", "vgg"):
  steps = read(f"step_time_{model}.json")
  if steps and model in steps["results"]:
    r = steps["results"][model]
    summary.setdefault("step_time_ms", {})[model] = {
        "batch": r["batch"], **{k: round(v["median_ms"], 3) for k, v in r["optimizers"].items()}}
    summary.setdefault("step_compile_s", {})[model] = {
        k: round(v["compile_s"], 1) for k, v in r["optimizers"].items()}
run = {"plan": read("cifar10-jpeg/plan.json"), "summary": read("cifar10-jpeg/summary.json")}
try:
  with open(os.path.join(out, "cifar10-jpeg", "metrics.jsonl")) as handle:
    records = [json.loads(line) for line in handle if line.strip()]
except OSError:
  records = []
run["epochs_done"] = len(records)
run["seconds_per_epoch"] = [round(r["seconds"], 2) for r in records]
run["test_accuracy_per_epoch"] = [r.get("test_accuracy") for r in records]
summary["cifar10_jpeg_bayesbinn"] = run
packed = read("packed_inference.json")
if packed:
  summary["packed_inference"] = packed
path = os.path.join(out, "device_check.json")
with open(path + ".tmp", "w") as handle:
  json.dump(summary, handle, indent=2)
os.replace(path + ".tmp", path)
print(f"wrote {path}: {summary['device']} ({summary['backend']}), {wall} s")
for model, times in summary.get("step_time_ms", {}).items():
  print(f"  {model} ms/step: " + ", ".join(f"{k} {v}" for k, v in times.items()))
if records:
  print(f"  cifar10-jpeg: {len(records)} epoch(s), s/epoch {run['seconds_per_epoch']}, "
        f"test accuracy {run['test_accuracy_per_epoch'][-1]}")
if packed:
  print(f"  packed inference, MnistMLP latency ms by batch: {packed.get('latency_ms')}")
sys.exit(0 if all(s["rc"] == 0 for s in stages) else 1)
EOF
