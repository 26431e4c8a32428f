"""Why a packed call right after the float32 call is slower than back to back (issue 25).

Four measurements on the fully binary MNIST MLP of ``packed_inference.py`` (random +-1
weights, uint8 inputs, native kernel), each median milliseconds over ``--calls``:

- ``warm``: a trivial jitted call, the packed network and each of its products alone, all
  back to back (what the network costs with warm caches and awake cores);
- ``curve``: after each float32 call, 12 packed calls in a row: the k-th call's median
  (how many calls the packed network needs to reach its back-to-back time);
- ``gap``: the packed call after the float32 call with a sleep of 0, 1, 5, 20 ms between
  them (not timed), and the packed call after it at once;
- ``alternate``: float32 and packed alternated call by call under each named setting of
  ``SETTINGS`` that ``--settings`` lists (environment variables; each in a fresh subprocess,
  since the kernel reads its settings once), as ``packed_inference.py`` times them.

Run it on an idle machine (pause other work first):
``python benchmarks/packed_after_float.py --out benchmarks/results/packed_after_float.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SETTINGS = {
    "default": {},
    "sync_dispatch": {"JAX_CPU_ENABLE_ASYNC_DISPATCH": "false"},
    "units_split_b1": {"BAYESBINN_JAX_XNOR_THREAD_WORK": "-5"},
    "helper_spins_50ms": {"BAYESBINN_JAX_XNOR_SPIN_US": "50000"},
    "threads_1": {"BAYESBINN_JAX_XNOR_THREADS": "1"},
}


def _networks():
  import jax  # pylint: disable=import-outside-toplevel

  import packed_inference as pi  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP, pack_network  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  model = MnistMLP(activations="binary")
  variables = pi._random_binary_network(model, np.zeros((1, 784), np.float32), rng)
  float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  packed = pack_network(model, variables, input_shape=(1, 784), input_dtype=np.uint8)
  inputs = {b: jax.device_put(pi._images(rng, (b, 784))) for b in (1, 100)}
  return pi, (lambda x: float_fn(variables, x)), packed, inputs, rng


def _timed(fn, x) -> float:
  import jax  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  jax.block_until_ready(fn(x))
  return 1e3 * (time.perf_counter() - start)


def measure(calls: int) -> dict:
  """The ``warm``, ``curve`` and ``gap`` sections, in this process."""
  import jax  # pylint: disable=import-outside-toplevel

  pi, float_fn, packed, inputs, rng = _networks()
  trivial = jax.jit(lambda x: x[:, :10] + 1)
  result: dict = {"warm": {}, "curve": {}, "gap": {}}
  for batch, x in inputs.items():
    products = []
    for product in packed.products(x):
      fn, args = pi._product_fn(product, packed.kernel, rng)
      products.append({"path": product["path"], "op": product.get("op"),
                       "ms": pi._median_ms(fn, args, calls)[0]})
    result["warm"][str(batch)] = {"trivial_call_ms": pi._median_ms(trivial, (x,), calls)[0],
                                  "packed_ms": pi._median_ms(packed, (x,), calls)[0],
                                  "products": products}
    jax.block_until_ready(float_fn(x))
    runs = []
    for _ in range(max(3, calls // 10)):
      _timed(float_fn, x)
      runs.append([_timed(packed, x) for _ in range(12)])
    result["curve"][str(batch)] = [float(t) for t in np.median(runs, axis=0)]
    for gap in (0.0, 0.001, 0.005, 0.02):
      first, again = [], []
      for _ in range(max(3, calls // 5)):
        _timed(float_fn, x)
        if gap:
          time.sleep(gap)
        first.append(_timed(packed, x))
        again.append(_timed(packed, x))
      result["gap"].setdefault(str(batch), {})[f"{gap * 1e3:g}_ms"] = {
          "after_float32": float(np.median(first)), "again_at_once": float(np.median(again))}
  return result


def alternate(calls: int) -> dict:
  """float32 and packed alternated call by call, in this process (its environment)."""
  pi, float_fn, packed, inputs, _ = _networks()
  keys = sorted({k for env in SETTINGS.values() for k in env})
  rows: dict = {"environment_seen": {k: os.environ[k] for k in keys if k in os.environ}}
  for batch, x in inputs.items():
    row = pi._alternate({"float32": float_fn, "packed": packed}, (x,), calls)
    rows[str(batch)] = {"float32_ms": row["float32"], "packed_ms": row["packed"],
                        "packed_best_ms": row["best"]["packed"], "speedup": row["speedup"]}
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--out", default=os.path.join("benchmarks", "results", "packed_after_float.json"))
  parser.add_argument("--calls", type=int, default=100)
  parser.add_argument("--settings", default=",".join(SETTINGS),
                      help=f"comma-separated settings to alternate under (of {', '.join(SETTINGS)})")
  parser.add_argument("--alternate-only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  names = args.settings.split(",")
  unknown = sorted(set(names) - set(SETTINGS))
  if unknown:
    parser.error(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
  if args.alternate_only:  # the child of one setting
    print(json.dumps(alternate(args.calls)))
    return
  started = time.time()
  load = os.getloadavg()[0]
  result = {"command": "python benchmarks/packed_after_float.py " + " ".join(argv or sys.argv[1:]),
            "load_average_1min_start": load, **measure(args.calls), "alternate": {}}
  for name in names:
    env = SETTINGS[name]
    child = subprocess.run([sys.executable, __file__, "--alternate-only", "--calls", str(args.calls)],
                           env={**os.environ, **env}, capture_output=True, text=True, check=True)
    result["alternate"][name] = {"environment": env, **json.loads(child.stdout.strip().splitlines()[-1])}
    print(name, result["alternate"][name], flush=True)
  result["load_average_1min_end"] = os.getloadavg()[0]
  result["wall_s"] = time.time() - started
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(json.dumps({k: result[k] for k in ("warm", "curve", "gap")}, indent=1))


if __name__ == "__main__":
  main()
