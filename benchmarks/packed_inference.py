"""Size, load time and inference latency of a 1-bit packed MNIST MLP against its float32 form.

Usage:
  python benchmarks/packed_inference.py [--out benchmarks/results/packed_inference.json] [--calls 30]
      [--skip-vgg] [--skip-ensemble]

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

Section ``fully_binary``: the fully binary MLP (``MnistMLP(activations="binary")``,
784-2048x3-10, random +-1 weights and BatchNorm statistics) fed uint8 images, run
as its jitted float32 simulation and as the packed network of
``bayesbinn_jax.nn.pack_network(..., input_dtype=uint8)`` (first layer on 8
bit-planes, every layer one popcount product), on the native kernel (``packed``)
and on pure XLA (``packed_xla``), alternating call by call, at batch 1, 8 and 100
(``back_to_back``: each called alone, repeatedly);
unless ``--skip-vgg``, the same for the fully binary VGG at batch 1 and 8 (also ``--calls``
calls: with a fifth of them, 10 at ``--calls 50``, the VGG's batch-1 median moved between
0.8 and 1.3 ms from run to run while its back-to-back median stayed at 0.68-0.72 ms).
``predictions_identical`` checks the argmax of every timed batch. ``machine``
holds the measured memory bandwidth (a NumPy copy), popcount throughput (the
native kernel on an L2-resident product, one thread and all cores) and table-lookup
throughput (the uint8 kernel); ``layers[batch]`` gives each product of one call
(the uint8 first layer's table lookup, then one popcount product per binary layer:
bit-planes, rows, uint32 words, units) timed alone beside its floors: its bytes over
the bandwidth, its uint64 word operations over the popcount throughput, and for the
uint8 layer its products over the lookup throughput and its time as 8 popcounted
bit-planes (``alternative_bit_planes_ms``). ``alternatives_ms[batch]`` times the
whole packed network under each variant of the popcount kernel (word width, one
row per pass, a reduction per word; ``$BAYESBINN_JAX_XNOR_VARIANT``) and on one
thread (``$BAYESBINN_JAX_XNOR_THREADS=1``).
Unless ``--skip-ensemble``, a small fully binary MLP
(64-256-256-10) is trained with BayesBiNN on a synthetic 10-class task and K = 8
posterior samples are packed (``pack_ensemble``, 8 bits per weight): the
file sizes and the Monte Carlo accuracy and NLL of the packed and float
predictives on held-out data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _output import write_json  # benchmarks/_output.py, which puts the checkout on sys.path

DEFAULT_OUT = os.path.join("benchmarks", "results", "packed_inference.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
  parser.add_argument("--calls", type=int, default=30, help="timed calls per network and batch size")
  parser.add_argument("--skip-vgg", action="store_true", help="do not time the fully binary VGG")
  parser.add_argument("--skip-ensemble", action="store_true",
                      help="do not train and evaluate the K = 8 packed ensemble")
  args = parser.parse_args(argv)
  if args.calls < 1:
    parser.error("--calls must be >= 1")
  return args


def _cpu() -> dict:
  """The host's CPU model, cores and vector extensions (from /proc/cpuinfo where present)."""
  model, flags = "unknown", set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as file:
      for line in file:
        if line.startswith("model name") and model == "unknown":
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return {"model": model, "cores": os.cpu_count(),
          "vector": [f for f in ("avx2", "avx512f", "avx512_vpopcntdq", "avx512vbmi", "avx512_vnni")
                     if f in flags]}


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  from bayesbinn_jax.train.host_cpu import retain_freed_memory  # pylint: disable=import-outside-toplevel
  retain_freed_memory()  # before JAX starts: outputs reuse freed blocks, no fresh page faults
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
                       "cpu_count": os.cpu_count(), "cpu": _cpu()}
  result["fully_binary"] = fully_binary(args, rng)
  result["machine"]["load_average_1min"] = {
      "start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
  result["command"] = " ".join(["python", "benchmarks/packed_inference.py",
                                *(argv if argv is not None else sys.argv[1:])])

  print(f"{result['network']}: float32 {result['float32_bytes'] / 2**20:.1f} MiB, packed "
        f"{result['packed_bytes'] / 2**20:.2f} MiB ({result['size_ratio']:.1f}x smaller)")
  print(f"load: float32 {result['load_ms']['float32']:.1f} ms, packed {result['load_ms']['packed']:.1f} ms")
  for batch, row in latency.items():
    print(f"batch {batch:>3}: float32 {row['float32']:.2f} ms, packed {row['packed']:.2f} ms per forward pass")
  write_json(args.out, result)


def _alternate(fns: dict, args: tuple, calls: int, ratio: bool = True) -> dict:
  """Median (and best) milliseconds of each jitted fn in ``fns`` on ``args``, alternating call
  by call; ``speedup`` is float32's median over packed's."""
  import jax  # pylint: disable=import-outside-toplevel

  for fn in fns.values():
    jax.block_until_ready(fn(*args))  # compile
  times = {name: [] for name in fns}
  for _ in range(calls):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(1e3 * (time.perf_counter() - start))
  row = {name: float(np.median(t)) for name, t in times.items()}
  row["best"] = {name: float(np.min(t)) for name, t in times.items()}
  if ratio:
    row["speedup"] = row["float32"] / row["packed"]
  return row


def _random_binary_network(model, x, rng):
  """+-1 kernels and BatchNorm statistics (mean near 0 on the pre-activation's scale, var > 0)."""
  import jax  # pylint: disable=import-outside-toplevel

  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  params = jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32), shapes["params"])
  stats = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes["batch_stats"])
  for bn in stats.values():
    n = bn["mean"].shape[0]
    bn["mean"] = rng.normal(0.0, 2.0, n).astype(np.float32)
    bn["var"] = (bn["var"] * 1000).astype(np.float32)
  return jax.device_put({"params": params, "batch_stats": stats})


def _images(rng, shape):
  """uint8 images: the integer input of the bit-plane first layer (MNIST, CIFAR)."""
  return rng.integers(0, 256, shape).astype(np.uint8)


def _time_network(model, variables, batches, shape, calls, rng, machine):
  """Latency rows {batch: {float32, packed, packed_xla, speedup}}, per-layer rows with floors,
  and whether every argmax agreed. The input is uint8 images for both networks (the float
  network casts them); the packed network runs on the native kernel and on pure XLA."""
  import jax  # pylint: disable=import-outside-toplevel

  from bayesbinn_jax.nn import pack_network  # pylint: disable=import-outside-toplevel

  float_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  nets = {"packed": pack_network(model, variables, input_shape=(1,) + shape, input_dtype=np.uint8)}
  if nets["packed"].kernel == "native":
    nets["packed_xla"] = pack_network(model, variables, input_shape=(1,) + shape,
                                      input_dtype=np.uint8, kernel="xla")
  latency, layers, identical, alternatives = {}, {}, True, {}
  for batch in batches:
    x = jax.device_put(_images(rng, (batch,) + shape))
    reference = np.asarray(float_fn(variables, x))
    for net in nets.values():
      identical &= bool(np.array_equal(reference.argmax(-1), np.asarray(net(x)).argmax(-1)))
    fns = {"float32": lambda x: float_fn(variables, x), **nets}
    latency[str(batch)] = _alternate(fns, (x,), calls)
    # Each network called back to back, not after the other: what a deployment sees (the
    # float call's 40 MB of weights and its spinning worker threads slow the next call).
    latency[str(batch)]["back_to_back"] = {
        name: _alternate({name: fn}, (x,), calls, ratio=False)[name] for name, fn in fns.items()}
    layers[str(batch)] = _layer_rows(nets["packed"], x, machine, calls)
    if nets["packed"].kernel == "native":
      alternatives[str(batch)] = _alternatives(nets["packed"], x, calls)
  return latency, layers, identical, alternatives


def _median_ms(fn, args, calls):
  """(median, best) milliseconds of ``fn(*args)`` over ``calls`` calls (compiled first)."""
  import jax  # pylint: disable=import-outside-toplevel

  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1e3 * (time.perf_counter() - start))
  return float(np.median(times)), float(np.min(times))


def _product_fn(product, kernel, rng, op=None):
  """A jitted call of one product of a network on random data of its shape, and its args."""
  import jax  # pylint: disable=import-outside-toplevel

  from bayesbinn_jax.nn import xnor_kernel  # pylint: disable=import-outside-toplevel

  planes, m, k, n = product["planes"], product["rows"], product["words"], product["units"]
  if (op or product.get("op")) == "dot_u8":
    inputs = product["inputs"]
    u = jax.device_put(rng.integers(0, 256, (m, inputs), dtype=np.uint8))
    bits = rng.integers(0, 256, (n, -(-inputs // 8)), dtype=np.uint8)
    w8 = jax.device_put(xnor_kernel.u8_weight_layout(bits))
    return jax.jit(lambda u, w: xnor_kernel.dot_u8(u, w, n)), (u, w8)
  k += k % 2 if kernel == "native" else 0
  a = jax.device_put(rng.integers(0, 2 ** 32, (planes, m, k), dtype=np.uint32))
  w = jax.device_put(xnor_kernel.weight_layout(
      rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32), kernel))
  return jax.jit(lambda a, w: xnor_kernel.xnor_count(a, w, kernel, n)), (a, w)


def _layer_rows(net, x, machine, calls):
  """Each product of one call (a popcount product, or the uint8 first layer's table lookup),
  timed alone (median of ``calls``, native kernel, inside one jitted call: ``call_overhead_ms``
  of it is the call itself) beside its floors: its bytes over the memory bandwidth, its
  uint64 word operations (for the uint8 layer: those of the 8-bit-plane product) over the
  measured popcount throughput of one core and of all, and for the uint8 layer its products
  over the measured table-lookup throughput."""
  rng = np.random.default_rng(0)
  rows = []
  for product in net.products(x):
    planes, m, k, n = product["planes"], product["rows"], product["words"], product["units"]
    fn, args = _product_fn(product, net.kernel, rng)
    median, best = _median_ms(fn, args, calls)
    word_ops = planes * m * n * (k + k % 2) / 2  # uint64 XOR + popcount + add
    row = {**product, "ms": median, "best_ms": best, "uint64_word_ops": word_ops,
           "floor_popcount_ms": 1e3 * word_ops / machine["popcount_words_s"],
           "floor_popcount_all_cores_ms": 1e3 * word_ops / machine["popcount_words_s_all_cores"]}
    if product.get("op") == "dot_u8":
      products = m * n * product["inputs"]
      row["packed_bytes"] = m * product["inputs"] + n * -(-product["inputs"] // 8) + 4 * m * n
      row["uint8_products"] = products
      row["floor_lookup_ms"] = 1e3 * products / machine["lookup_products_s"]
      row["floor_lookup_all_cores_ms"] = 1e3 * products / machine["lookup_products_s_all_cores"]
      if net.kernel == "native":  # the alternative: the same layer as 8 bit-planes, popcounted
        plane_fn, plane_args = _product_fn(product, net.kernel, rng, op="xnor_count")
        row["alternative_bit_planes_ms"] = _median_ms(plane_fn, plane_args, calls)[0]
    else:
      row["packed_bytes"] = 4 * (planes * m * k + n * k) + 4 * m * n  # inputs, weights, sums
    row["floor_memory_ms"] = 1e3 * row["packed_bytes"] / machine["memory_bandwidth_bytes_s"]
    rows.append(row)
  return rows


def _machine(calls):
  """Measured memory bandwidth (NumPy copy of 256 MiB, best of ``calls``), popcount throughput
  (the native xnor kernel on an L2-resident product, uint64 words per second, best call, on
  one core and on all) and table-lookup throughput (the uint8 kernel, products per second)."""
  import jax  # pylint: disable=import-outside-toplevel

  from bayesbinn_jax.nn import xnor_kernel  # pylint: disable=import-outside-toplevel

  source = np.ones(2 ** 25, np.float64)
  target = np.empty_like(source)
  copies = []
  for _ in range(max(calls // 3, 3)):
    start = time.perf_counter()
    np.copyto(target, source)
    copies.append(time.perf_counter() - start)
  bandwidth = 2 * source.nbytes / min(copies)  # read + write
  kernel = xnor_kernel.backend()
  rng = np.random.default_rng(0)
  cores = os.cpu_count() or 1
  m, k, n = 256, 64, 256   # 1M uint64 words: 4 threads' worth; a 128 KiB weight block in L2
  a = jax.device_put(rng.integers(0, 2 ** 32, (m, k), dtype=np.uint32))
  w = jax.device_put(xnor_kernel.weight_layout(rng.integers(0, 2 ** 32, (n, k), dtype=np.uint32),
                                               kernel))
  fn = jax.jit(lambda a, w: xnor_kernel.xnor_count(a, w, kernel, n))
  result = {"memory_bandwidth_bytes_s": bandwidth, "kernel": kernel,
            "native_status": xnor_kernel.native_status()[1]}
  lookup = None
  if kernel == "native":
    lm, lk, ln = 16, 784, 2048   # lookups dominate (64 blocks of 32 units per table build)
    u = jax.device_put(rng.integers(0, 256, (lm, lk), dtype=np.uint8))
    w8 = jax.device_put(xnor_kernel.u8_weight_layout(
        rng.integers(0, 256, (ln, lk // 8), dtype=np.uint8)))
    lookup = jax.jit(lambda u, w: xnor_kernel.dot_u8(u, w, ln))
  for threads, suffix in (("1", ""), (str(cores), "_all_cores")):
    os.environ["BAYESBINN_JAX_XNOR_THREADS"] = threads
    try:
      best = _median_ms(fn, (a, w), max(calls, 10))[1] / 1e3
      result["popcount_words_s" + suffix] = m * n * k / 2 / best
      if lookup is not None:
        best = _median_ms(lookup, (u, w8), max(calls, 10))[1] / 1e3
        result["lookup_products_s" + suffix] = lm * lk * ln / best
    finally:
      del os.environ["BAYESBINN_JAX_XNOR_THREADS"]
  result["popcount_problem"] = (f"{kernel} kernel, M={m} N={n} K={k // 2} uint64 words, best "
                                f"call, 1 and {cores} threads")
  if lookup is None:
    result["lookup_products_s"] = result["lookup_products_s_all_cores"] = float("nan")
  else:
    result["lookup_problem"] = (f"native uint8 kernel, M={lm} N={ln} K={lk}, best call, 1 and "
                                f"{cores} threads")
  return result


VARIANTS = ("", "u8_avx2", "avx512_permute", "avx512_vpop256", "avx2", "avx2_lookup", "avx2_hs",
            "avx2_rows1", "avx2_reduce1", "avx2_unblocked", "scalar64", "scalar32")
"""The native popcount kernel's alternatives ($BAYESBINN_JAX_XNOR_VARIANT; "" the default: the
fastest count the build has, AVX-512's vector popcount on 512-bit vectors where the host has
AVX-512 VPOPCNTDQ (rows spread once, 8 rows per pass), else the AVX2 count (2 rows per pass);
uint64 words, 4 units per 256-bit group in an interleaved weight layout, weights in blocks of
128 KiB each run against all rows; the uint8 first layer by AVX-512 VBMI + VNNI table lookups
where the host has them, else AVX2 lookups). Each applies to every popcount product of the
network (counts, thresholded bits, convolutions); "avx2" and "u8_avx2" also put the uint8 first
layer on the AVX2 lookups; on a host without AVX-512 the avx512 variants are the AVX2 count."""


VARIANT_DOCS = {
    "": "the fastest count of the build: with AVX-512 VPOPCNTDQ, one VPOPCNTQ per 8 words "
        "(words t and t+1 of a group of 4 units against the row's two words, each row spread "
        "once into those vectors), 8 rows per pass (one bit-plane; several planes: as "
        "avx512_permute), else the AVX2 count with 2 rows (or bit-planes) per pass; uint64 "
        "words, 4 units per group (weights interleaved), blocks of 128 KiB of weights each "
        "against all rows; the uint8 first layer by AVX-512 VBMI + VNNI lookups (one "
        "VPERMB per 16 units x 16 inputs, summed by VPDPBUSD, 4 rows per pass), else AVX2",
    "u8_avx2": "as default, the uint8 first layer on AVX2 lookups (one byte shuffle per 32 "
               "units x 4 inputs, byte sums widened)",
    "avx512_permute": "as default, the rows not spread beforehand: each pair of a row's "
                      "words permuted into the vector's halves at every use, 2 rows per pass",
    "avx512_vpop256": "as default, AVX-512 VPOPCNTQ on 256-bit vectors (one word of 4 units "
                      "per instruction, no permute)",
    "avx2": "AVX2: Harley-Seal carry-save popcount from 24 words per row on, else nibble "
            "lookups with one widening per 31 words; the uint8 first layer on AVX2 lookups",
    "avx2_lookup": "AVX2, nibble-lookup popcount of every word (no Harley-Seal)",
    "avx2_hs": "AVX2, Harley-Seal at every width (also below 24 words)",
    "avx2_rows1": "AVX2, one row per pass over the weights (no batching of images)",
    "avx2_reduce1": "AVX2, nibble lookups with a widening reduction after every word "
                    "(no fused reduction)",
    "avx2_unblocked": "AVX2, all weights against each row pair in turn (no cache blocks)",
    "scalar64": "scalar popcount of uint64 words, one (row, unit) at a time",
    "scalar32": "scalar popcount of uint32 words, one (row, unit) at a time",
}


def _alternatives(net, x, calls):
  """The whole packed network's median ms under each kernel variant and thread limit."""
  import jax  # pylint: disable=import-outside-toplevel

  row = {}
  settings = [("BAYESBINN_JAX_XNOR_VARIANT", v, v or "default") for v in VARIANTS]
  settings += [("BAYESBINN_JAX_XNOR_THREADS", "1", "threads_1")]
  for name, value, label in settings:
    os.environ[name] = value
    try:
      jax.block_until_ready(net(x))
      row[label] = _median_ms(net, (x,), calls)[0]
    finally:
      del os.environ[name]
  return row


def _ensemble(rng, num_samples: int = 8) -> dict:
  """Train a small fully binary MLP with BayesBiNN; K-sample packed vs float MC predictive."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  import bayesbinn_jax as bb  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.export import save_xnor, size_report  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP, pack_ensemble, pack_network  # pylint: disable=import-outside-toplevel

  classes, dim = 10, 64
  prototypes = rng.standard_normal((classes, dim)).astype(np.float32)

  def draw(n):
    y = rng.integers(0, classes, n)
    return (prototypes[y] + 2.5 * rng.standard_normal((n, dim))).astype(np.float32), y

  (x_train, y_train), (x_test, y_test) = draw(4000), draw(2000)
  model = MnistMLP(num_classes=classes, hidden=256, depth=2, dropout=0.0, activations="binary")
  variables = model.init(jax.random.PRNGKey(0), x_train[:2], train=False)
  tx = bb.bayesbinn(3e-4, train_set_size=len(x_train), temperature=1e-8)
  opt_state = tx.init(variables["params"])
  params = bb.sample_relaxed(optax.tree_utils.tree_get(opt_state, "lam"), jax.random.PRNGKey(1), 1e-8)
  batch_stats = variables["batch_stats"]

  @jax.jit
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, new = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]
    (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  epochs = 5
  for _ in range(epochs):
    order = rng.permutation(len(x_train))
    for start in range(0, len(x_train), 100):
      idx = order[start:start + 100]
      params, batch_stats, opt_state = step(params, batch_stats, opt_state, x_train[idx], y_train[idx])
  lam = optax.tree_utils.tree_get(opt_state, "lam")
  samples = bb.sample_binary(lam, jax.random.PRNGKey(2), num_samples)

  float_probs = np.mean([np.asarray(jax.nn.softmax(model.apply(
      {"params": jax.tree.map(lambda w, k=k: w[k], samples), "batch_stats": batch_stats},
      x_test, train=False))) for k in range(num_samples)], axis=0)
  ensemble = {"params": samples, "batch_stats": batch_stats}
  packed_probs = np.asarray(pack_ensemble(model, ensemble).predict_proba(x_test))
  mode = {"params": bb.posterior_mode(lam), "batch_stats": batch_stats}
  mode_probs = np.asarray(pack_network(model, mode).predict_proba(x_test))

  def metrics(probs):
    nll = -np.log(probs[np.arange(len(y_test)), y_test] + 1e-12).mean()
    return {"accuracy": float((probs.argmax(-1) == y_test).mean()), "nll": float(nll)}

  with tempfile.TemporaryDirectory() as tmp:
    paths = {name: os.path.join(tmp, f"{name}.npz") for name in ("mode", "ensemble")}
    save_xnor(paths["mode"], model, mode)
    save_xnor(paths["ensemble"], model, ensemble, ensemble=True)
    sizes = {f"packed_{name}_file_bytes": os.path.getsize(path) for name, path in paths.items()}
  report = size_report(mode["params"], batch_stats)
  return {
      "task": f"synthetic {classes}-class Gaussian prototypes in {dim}-D (noise 2.5), "
              f"{len(x_train)} train / {len(x_test)} test",
      "network": "MnistMLP(hidden=256, depth=2, activations='binary'), 64-256-256-10",
      "training": f"BayesBiNN lr 3e-4, tau 1e-8, {epochs} epochs, batch 100",
      "num_samples": num_samples,
      "float32_bytes": report.float32_bytes,
      **sizes,
      "mode_packed": metrics(mode_probs),
      "mc_float32": metrics(float_probs),
      "mc_packed": metrics(packed_probs),
      "mc_max_abs_prob_difference": float(np.abs(float_probs - packed_probs).max()),
      "mc_predictions_identical": bool(np.array_equal(float_probs.argmax(-1), packed_probs.argmax(-1))),
  }


def fully_binary(args: argparse.Namespace, rng: np.random.Generator) -> dict:
  """The ``fully_binary`` section: float32 simulation against packed xnor/popcount inference."""
  from bayesbinn_jax.nn import MnistMLP, VGGBinaryConnect  # pylint: disable=import-outside-toplevel

  machine = _machine(args.calls)
  model = MnistMLP(activations="binary")
  variables = _random_binary_network(model, np.zeros((1, 784), np.float32), rng)
  latency, layers, identical, alternatives = _time_network(
      model, variables, (1, 8, 100), (784,), args.calls, rng, machine)
  section = {
      "network": "MnistMLP 784-2048x3-10, activations='binary', uint8 inputs (first layer on "
                 "8 bit-planes: no float matrix product)",
      "machine": machine,
      "latency_ms": latency,
      "layers": layers,
      "alternatives_ms": {"variants": {v or "default": VARIANT_DOCS[v] for v in VARIANTS},
                          **alternatives},
      "predictions_identical": identical,
  }
  for batch, row in latency.items():
    apart = row["back_to_back"]
    print(f"fully binary MLP batch {batch:>3}: float32 {row['float32']:.3f} ms, packed "
          f"{row['packed']:.3f} ms ({row['speedup']:.1f}x)"
          + (f", pure XLA {row['packed_xla']:.3f} ms" if "packed_xla" in row else "")
          + f"; back to back {apart['float32']:.3f} / {apart['packed']:.3f} ms "
            f"({apart['float32'] / apart['packed']:.1f}x)")
  if not args.skip_vgg:
    vgg = VGGBinaryConnect(activations="binary")
    vgg_variables = _random_binary_network(vgg, np.zeros((1, 32, 32, 3), np.float32), rng)
    vgg_latency, vgg_layers, vgg_identical, vgg_alternatives = _time_network(
        vgg, vgg_variables, (1, 8), (32, 32, 3), args.calls, rng, machine)
    section["vgg"] = {"network": "VGGBinaryConnect, activations='binary', uint8 inputs (first "
                                 "conv on 8 bit-planes)",
                      "latency_ms": vgg_latency, "layers": vgg_layers,
                      "alternatives_ms": vgg_alternatives,
                      "predictions_identical": vgg_identical}
    for batch, row in vgg_latency.items():
      apart = row["back_to_back"]
      print(f"fully binary VGG batch {batch:>3}: float32 {row['float32']:.1f} ms, packed "
            f"{row['packed']:.1f} ms ({row['speedup']:.1f}x)"
            + (f", pure XLA {row['packed_xla']:.1f} ms" if "packed_xla" in row else "")
            + f"; back to back {apart['float32']:.1f} / {apart['packed']:.1f} ms "
              f"({apart['float32'] / apart['packed']:.1f}x)")
  if not args.skip_ensemble:
    section["ensemble"] = _ensemble(rng)
    e = section["ensemble"]
    print(f"K={e['num_samples']} packed ensemble: {e['packed_ensemble_file_bytes']} bytes (float32 "
          f"network {e['float32_bytes']}); MC accuracy float {e['mc_float32']['accuracy']:.4f} packed "
          f"{e['mc_packed']['accuracy']:.4f}; NLL float {e['mc_float32']['nll']:.4f} packed "
          f"{e['mc_packed']['nll']:.4f}")
  return section


if __name__ == "__main__":
  main()
