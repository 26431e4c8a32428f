"""What a call costs right after the float32 MLP call, and what the second core gives (issue 25).

1. ``after_float32``: the fully binary MLP of ``packed_after_float.py`` at batch 1. After each
   float32 call, one call of each case, then the same call again at once (medians over
   ``ROUNDS`` rounds, ms): a trivial jitted call, a ctypes call of libc's ``getpid`` (no JAX),
   NumPy's ``bitwise_count`` over 1.25 MB (the packed weights' size), the packed network.
2. ``gap_batch100``: the same MLP at batch 100, the packed call after the float32 call with a
   sleep of 0, 0.5, 2, 5, 20 ms between them (not timed), 25 rounds (median and best ms).
3. ``two_threads``: the native popcount product of VGG's second convolution at batch 1
   (1024 rows, 36 uint32 words, 128 units), 400 calls back to back on the default two threads:
   percentiles (ms) beside the one-core floor at the measured popcount throughput.

Run on an idle machine from the repository root:
``python benchmarks/results/packed_cold_call/run.py > benchmarks/results/packed_cold_call/result.json``.
"""

import ctypes
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", ".."), os.path.join(HERE, "..", "..", "..")]
import jax  # noqa: E402

import packed_after_float as paf  # noqa: E402
from bayesbinn_jax.nn import xnor_kernel  # noqa: E402

ROUNDS = 60


def timed(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return 1e3 * (time.perf_counter() - start)


def after_float32():
  _, float_fn, packed, inputs, rng = paf._networks()
  x = inputs[1]
  trivial = jax.jit(lambda x: x[:, :10] + 1)
  libc = ctypes.CDLL(None)
  words = rng.integers(0, 2 ** 63, size=1305676 // 8, dtype=np.uint64)
  cases = {"trivial_jit": lambda: trivial(x), "ctypes_getpid": libc.getpid,
           "numpy_bitwise_count_1.25MB": lambda: np.bitwise_count(words).sum(),
           "packed_mlp": lambda: packed(x)}
  for fn in cases.values():
    for _ in range(5):
      timed(fn), timed(lambda: float_fn(x))
  times = {name: ([], []) for name in cases}
  for _ in range(ROUNDS):
    for name, fn in cases.items():
      timed(lambda: float_fn(x))
      times[name][0].append(timed(fn))
      times[name][1].append(timed(fn))
  return {name: {"after_float32_ms": round(float(np.median(a)), 4),
                 "again_at_once_ms": round(float(np.median(b)), 4)}
          for name, (a, b) in times.items()}


def gap_batch100():
  _, float_fn, packed, inputs, _ = paf._networks()
  x = inputs[100]
  for _ in range(10):
    timed(lambda: float_fn(x)), timed(lambda: packed(x))
  times: dict = {}
  for _ in range(25):
    for gap in (0, 0.5, 2, 5, 20):
      timed(lambda: float_fn(x))
      if gap:
        time.sleep(gap / 1e3)
      times.setdefault(gap, []).append(timed(lambda: packed(x)))
  return {f"{gap} ms": [round(float(np.median(v)), 3), round(min(v), 3)]
          for gap, v in times.items()}


def two_threads():
  rng = np.random.default_rng(0)
  m, k, n = 1024, 36, 128
  a = jax.device_put(rng.integers(0, 2 ** 32, (1, m, k), dtype=np.uint32))
  w = jax.device_put(xnor_kernel.weight_layout(
      rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32), "native"))
  count = jax.jit(lambda a, w: xnor_kernel.xnor_count(a, w, "native", n))
  for _ in range(50):
    jax.block_until_ready(count(a, w))
  times = np.array([timed(lambda: count(a, w)) for _ in range(400)])
  with open(os.path.join(HERE, "..", "packed_inference.json"), encoding="utf-8") as file:
    result = json.load(file)
  words_s = result["fully_binary"]["machine"]["popcount_words_s"]
  return {"shape": "1024 rows x 36 uint32 words x 128 units", "calls": 400,
          "percentiles_ms": dict(zip(["5", "25", "50", "75", "95"],
                                     np.percentile(times, [5, 25, 50, 75, 95]).round(3).tolist())),
          "best_ms": round(float(times.min()), 3),
          "one_core_floor_ms": round(m * n * (k / 2) / words_s * 1e3, 3),
          "two_core_floor_ms": round(m * n * (k / 2) / words_s * 1e3 / 2, 3)}


if __name__ == "__main__":
  print(json.dumps({"command": "python benchmarks/results/packed_cold_call/run.py",
                    "load_average_1min": os.getloadavg()[0], "after_float32": after_float32(),
                    "gap_batch100": gap_batch100(),
                    "two_threads": two_threads()}, indent=1))
