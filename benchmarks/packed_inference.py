"""Size, load time and inference latency of a 1-bit packed MNIST MLP against its float32 form.

Usage:
  python benchmarks/packed_inference.py [--out benchmarks/results/packed_inference.json] [--calls 30]

The MNIST MLP (784-2048x3-10, ``MnistMLP``) with random +-1 weights (what
``posterior_mode(lam)`` gives) and BatchNorm statistics is saved twice: as a
float32 ``.npz`` (the weights as trained, 4 bytes each) and with
``bb.save_packed`` (1 bit each). For each file the script measures the load
time (file to arrays on the device), then the latency of one jitted mode-network
forward pass (``train=False``) at batch 1 and batch 100, alternating the two
networks call by call so that machine noise hits both alike (median over
``--calls`` calls, compile excluded), and checks the two give identical
predictions. ``load_packed`` unpacks the bits to the weights' dtype once, at
load: inference then runs the same XLA program on the same values, so the
latencies should agree; the packed file is the gain (storage, transfer).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from _output import write_json  # benchmarks/_output.py, which puts the checkout on sys.path

DEFAULT_OUT = os.path.join("benchmarks", "results", "packed_inference.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
  parser.add_argument("--calls", type=int, default=30, help="timed calls per network and batch size")
  args = parser.parse_args(argv)
  if args.calls < 1:
    parser.error("--calls must be >= 1")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from flax.traverse_util import flatten_dict, unflatten_dict  # pylint: disable=import-outside-toplevel

  import bayesbinn_jax as bb  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP  # pylint: disable=import-outside-toplevel

  model = MnistMLP()
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(jnp.zeros((1, 28, 28)))
  lam = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), variables["params"])
  params = jax.tree.map(np.asarray, bb.posterior_mode(lam))
  rng = np.random.default_rng(0)
  batch_stats = jax.tree.map(lambda s: (rng.random(s.shape) + 0.5).astype(np.float32),
                             variables["batch_stats"])

  @jax.jit
  def predict(params, batch_stats, x):
    return jax.nn.softmax(model.apply({"params": params, "batch_stats": batch_stats}, x, train=False))

  result = {"network": "MnistMLP 784-2048x3-10", "num_weights": int(sum(np.size(p) for p in jax.tree.leaves(params)))}
  with tempfile.TemporaryDirectory() as tmp:
    float_path, packed_path = os.path.join(tmp, "float32.npz"), os.path.join(tmp, "packed.npz")
    np.savez(float_path, **flatten_dict({"params": params, "batch_stats": batch_stats}, sep="/"))
    bb.save_packed(packed_path, params, batch_stats, metadata={"network": "MnistMLP"})
    result["float32_bytes"] = os.path.getsize(float_path)
    result["packed_bytes"] = os.path.getsize(packed_path)
    result["size_ratio"] = result["float32_bytes"] / result["packed_bytes"]

    def load_float():
      with np.load(float_path) as archive:
        tree = unflatten_dict({name: archive[name] for name in archive.files}, sep="/")
      return jax.device_put(tree["params"]), jax.device_put(tree["batch_stats"])

    def load_packed():
      p, s, _ = bb.load_packed(packed_path)
      return jax.device_put(p), jax.device_put(s)

    loads = {"float32": [], "packed": []}
    loaded = {}
    for _ in range(5):
      for name, load in (("float32", load_float), ("packed", load_packed)):
        start = time.perf_counter()
        loaded[name] = jax.block_until_ready(load())
        loads[name].append(1e3 * (time.perf_counter() - start))
    result["load_ms"] = {name: float(np.median(times)) for name, times in loads.items()}

  latency = {}
  for batch in (1, 100):
    x = jnp.asarray(rng.standard_normal((batch, 28, 28)).astype(np.float32))
    outputs = {name: np.asarray(predict(*loaded[name], x)) for name in loaded}  # compiles
    assert np.array_equal(outputs["float32"], outputs["packed"]), "packed predictions differ"
    times = {name: [] for name in loaded}
    for _ in range(args.calls):
      for name in loaded:
        start = time.perf_counter()
        jax.block_until_ready(predict(*loaded[name], x))
        times[name].append(1e3 * (time.perf_counter() - start))
    latency[str(batch)] = {name: float(np.median(t)) for name, t in times.items()}
  result["latency_ms"] = latency
  result["predictions_identical"] = True
  result["machine"] = {"jax": jax.__version__, "backend": jax.devices()[0].platform,
                       "cpu_count": os.cpu_count()}

  print(f"{result['network']}: float32 {result['float32_bytes'] / 2**20:.1f} MiB, packed "
        f"{result['packed_bytes'] / 2**20:.2f} MiB ({result['size_ratio']:.1f}x smaller)")
  print(f"load: float32 {result['load_ms']['float32']:.1f} ms, packed {result['load_ms']['packed']:.1f} ms")
  for batch, row in latency.items():
    print(f"batch {batch:>3}: float32 {row['float32']:.2f} ms, packed {row['packed']:.2f} ms per forward pass")
  write_json(args.out, result)


if __name__ == "__main__":
  main()
