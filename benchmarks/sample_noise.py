"""Milliseconds to draw one relaxed BayesBiNN sample of 10 million weights, per noise generator.

Usage:
  python benchmarks/sample_noise.py [--out benchmarks/results/sample_noise.json] [--weights 10014720]

The loop every BayesBiNN step runs once per Monte Carlo sample
(``bayesbinn_jax.sample_relaxed``),

    w = tanh((lambda + 0.5 log(u / (1 - u))) / tau),   u ~ U(0, 1),

jitted with lambda donated (the step writes the sample in place), for each way
of drawing u: the library's counter hash (``generator="counter"``, the default),
``jax.random`` with threefry (``generator="threefry"``) and with the "rbg" and
"unsafe_rbg" key implementations (XLA's RngBitGenerator; a typed key of that
implementation given to ``generator="threefry"``, which draws through ``jax.random``). Each is compiled with XLA's default options and with the
engine's (``bayesbinn_jax.train.host_cpu.compiler_options``), and timed in
alternating rounds (median over ``--rounds`` x ``--calls`` calls). The "memory
floor" row scales lambda in place: the cost of reading and writing the
weights once, which no generator can go below. Host memory is retained as in
``bayesbinn-train`` (``host_cpu.retain_freed_memory``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _output import write_json  # benchmarks/_output.py, which puts the checkout on sys.path

DEFAULT_OUT = os.path.join("benchmarks", "results", "sample_noise.json")
MNIST_MLP_WEIGHTS = 10_014_720
GENERATORS = ("memory floor", "counter", "threefry", "rbg", "unsafe_rbg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
  parser.add_argument("--weights", type=int, default=MNIST_MLP_WEIGHTS,
                      help="number of weights (default: the MNIST MLP's)")
  parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
  parser.add_argument("--calls", type=int, default=4, help="timed calls per case and round")
  args = parser.parse_args(argv)
  if min(args.weights, args.rounds, args.calls) < 1:
    parser.error("--weights, --rounds and --calls must be >= 1")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  from bayesbinn_jax.train import host_cpu  # pylint: disable=import-outside-toplevel
  host_cpu.retain_freed_memory()
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from bayesbinn_jax.optim.posterior import sample_relaxed  # pylint: disable=import-outside-toplevel

  tau = 1e-10
  shape = (args.weights,)

  def sampler(generator: str):
    """The library's ``sample_relaxed``; rbg keys go through its jax.random path (generator="threefry")."""
    def sample(lam: jax.Array) -> jax.Array:
      if generator == "memory floor":
        return lam * 0.5
      impl = generator if generator.endswith("rbg") else "threefry2x32"
      path = "counter" if generator == "counter" else "threefry"
      return sample_relaxed(lam, jax.random.key(0, impl=impl), tau, generator=path)
    return sample

  options = {"xla_default": {}, "engine": host_cpu.compiler_options()}
  cases = {}
  for generator in GENERATORS:
    for option_name, compiler_options in options.items():
      lam = jnp.asarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
      compiled = jax.jit(sampler(generator), donate_argnums=0,
                         compiler_options=compiler_options).lower(lam).compile()
      lam = jax.block_until_ready(compiled(lam))
      cases[(generator, option_name)] = {"compiled": compiled, "lam": lam, "times": []}
  for r in range(args.rounds):
    keys = list(cases)
    for key in keys[r % len(keys):] + keys[:r % len(keys)]:
      case = cases[key]
      for _ in range(args.calls):
        start = time.perf_counter()
        case["lam"] = jax.block_until_ready(case["compiled"](case["lam"]))
        case["times"].append(1e3 * (time.perf_counter() - start))

  rows = {}
  print(f"one relaxed sample of {args.weights:,} weights, in place (ms, median of "
        f"{args.rounds * args.calls} calls)")
  print(f"{'generator':<14} {'XLA defaults':>13} {'engine options':>15} {'ns/weight':>10}")
  for generator in GENERATORS:
    row = {name: float(np.median(cases[(generator, name)]["times"])) for name in options}
    rows[generator] = row
    print(f"{generator:<14} {row['xla_default']:13.2f} {row['engine']:15.2f} "
          f"{1e6 * row['engine'] / args.weights:10.2f}")
  result = {"weights": args.weights, "temperature": tau, "median_ms": rows,
            "engine_compiler_options": options["engine"],
            "machine": {"jax": jax.__version__, "backend": jax.devices()[0].platform,
                        "cpu_count": os.cpu_count()},
            "settings": {"rounds": args.rounds, "calls": args.calls}}
  write_json(args.out, result)


if __name__ == "__main__":
  main()
